# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options every module that talks to the RP2040 shares (documented in the minicluster.cm4.hat doc fragment)."""

from __future__ import annotations

from ansible_collections.minicluster.cm4.plugins.module_utils.board.hat import DEFAULT_ON_THRESHOLD_MA, DEFAULT_STATE_DIR, Hat, HatError
from ansible_collections.minicluster.cm4.plugins.module_utils.common import validate
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


# Upper bounds: the console lock is held through a restart delay, so a huge value would hold the hat
# for every other caller.
MAX_LOCK_TIMEOUT = 3600.0
MAX_COMMAND_TIMEOUT = 60.0
MAX_DELAY = 60.0


def check_hat_options(params):
    """Validate the shared options before anything is opened; raises HatError with a one-line message."""
    try:
        check_hat_name(params['hat'])
    except ValueError as exc:
        raise HatError(str(exc))
    try:
        validate.text('port', params['port'], empty=False)
        validate.text('uart_port', params.get('uart_port'))
        validate.number('lock_timeout', params['lock_timeout'], 0, MAX_LOCK_TIMEOUT, unit='seconds')
        validate.directory('lock_dir', params['lock_dir'])
        validate.directory('state_dir', params['state_dir'])
        validate.number('command_timeout', params['command_timeout'], 0, MAX_COMMAND_TIMEOUT, low_open=True,
                        unit='seconds')
        validate.number('on_threshold_ma', params['on_threshold_ma'], 0, 10000, unit='mA')
        validate.number('ma_per_unit', params.get('ma_per_unit'), 0, 1000, low_open=True)
        for name in ('stagger', 'restart_delay'):
            if name in params:
                validate.number(name, params[name], 0, MAX_DELAY, unit='seconds')
    except validate.InvalidOption as exc:
        raise HatError(str(exc))


def hat_from_module(module, **kwargs):
    p = module.params
    check_hat_options(p)
    return Hat(p['port'], lock_timeout=p['lock_timeout'], lock_dir=p['lock_dir'], state_dir=p['state_dir'],
               on_threshold_ma=p['on_threshold_ma'], ma_per_unit=p['ma_per_unit'],
               command_timeout=p['command_timeout'], uart_port=p['uart_port'] or None, hat=p['hat'], **kwargs)
