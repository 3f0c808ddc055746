# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options every module that talks to the RP2040 shares (documented in the minicluster.cm4.hat doc fragment)."""

from __future__ import annotations

import math

from ansible_collections.minicluster.cm4.plugins.module_utils.board.hat import DEFAULT_ON_THRESHOLD_MA, DEFAULT_STATE_DIR, Hat, HatError
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.lock import DEFAULT_HAT, DEFAULT_LOCK_DIR, check_hat_name
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.rp2040 import DEFAULT_PORT, DEFAULT_TIMEOUT, DEFAULT_UART_PORT


def hat_argument_spec():
    return dict(
        port=dict(type='str', default=DEFAULT_PORT),
        uart_port=dict(type='str', default=DEFAULT_UART_PORT),
        hat=dict(type='str', default=DEFAULT_HAT),
        lock_timeout=dict(type='float', default=60.0),
        lock_dir=dict(type='path', default=DEFAULT_LOCK_DIR),
        state_dir=dict(type='path', default=DEFAULT_STATE_DIR),
        command_timeout=dict(type='float', default=DEFAULT_TIMEOUT),
        on_threshold_ma=dict(type='float', default=DEFAULT_ON_THRESHOLD_MA),
        ma_per_unit=dict(type='float'),
    )


def check_hat_options(params):
    """Validate the shared options before anything is opened; raises HatError with a one-line message."""
    try:
        check_hat_name(params['hat'])
    except ValueError as exc:
        raise HatError(str(exc))
    for name in ('port', 'uart_port'):
        value = params.get(name)
        if value and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise HatError('%s contains control characters: give a device path or pyserial URL' % name)
    if not params['port']:
        raise HatError('port is empty: give the RP2040 console, e.g. /dev/ttyACM0')
    for name in ('lock_timeout', 'command_timeout', 'on_threshold_ma', 'ma_per_unit'):
        value = params.get(name)
        if value is None:
            continue
        if not math.isfinite(value) or value < 0 or (name in ('command_timeout', 'ma_per_unit') and value == 0):
            raise HatError('%s must be a finite %s number, not %s' % (
                name, 'positive' if name in ('command_timeout', 'ma_per_unit') else 'non-negative', value))


def hat_from_module(module, **kwargs):
    p = module.params
    check_hat_options(p)
    return Hat(p['port'], lock_timeout=p['lock_timeout'], lock_dir=p['lock_dir'], state_dir=p['state_dir'],
               on_threshold_ma=p['on_threshold_ma'], ma_per_unit=p['ma_per_unit'],
               command_timeout=p['command_timeout'], uart_port=p['uart_port'] or None, hat=p['hat'], **kwargs)
