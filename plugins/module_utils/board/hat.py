# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hat's node power, USB-boot and reset logic on top of the RP2040 console.

The firmware cannot report its pins. Whether a node is on is read back from its eFuse current
(IMON on the RP2040's ADC); the USB-boot pin cannot be read at all, so the controller remembers
what it last set, in a small JSON file written under the same lock as the exchange that set it.
Nodes are 1..4 here and everywhere a person sees them; the firmware's channel is node - 1.

An "off" node still draws current (EN drops only the CM4's GLOBAL_EN; the card's converters and an
NVMe drive stay powered), so a node counts as on when it draws on_threshold_ma above its own off
baseline: the reading last seen right after this controller switched it off, else the calibrated
one (board/calibration.py), else zero.
"""

from __future__ import annotations

import json
import os
import time

from ansible_collections.minicluster.cm4.plugins.module_utils.board import calibration
from ansible_collections.minicluster.cm4.plugins.module_utils.common.files import atomic_write_json
from ansible_collections.minicluster.cm4.plugins.module_utils.transports import rp2040
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.lock import DEFAULT_HAT, DEFAULT_LOCK_DIR, check_hat_name

NODES = (1, 2, 3, 4)
STATES = ('on', 'off', 'restarted', 'reset')
BOOT_MODES = ('normal', 'usb')
DEFAULT_STATE_DIR = '/var/lib/minicluster-cm4'
DEFAULT_ON_THRESHOLD_MA = 50.0


class HatError(Exception):
    """A request the hat cannot carry out, with a message for the operator."""


def channel_of(node):
    return node - 1


def check_nodes(nodes, port):
    """Validate node numbers before anything is sent to the hat."""
    bad = [n for n in nodes if n not in NODES]
    if bad:
        raise HatError('node %s is not on the hat at %s: nodes are numbered 1 to 4'
                       % (', '.join(str(n) for n in bad), port))
    if not nodes:
        raise HatError('no node given for the hat at %s: set node or nodes (1 to 4)' % port)
    return sorted(set(nodes))


class PinMemory(object):
    """What the controller remembers of pins it cannot read, per hat (whichever path reached it).

    {"generation": N, "last_power_on": t,
     "nodes": {"1": {"boot_mode": "usb", "en": true, "off_units": 11.5}}}
    """

    def __init__(self, state_dir, hat=DEFAULT_HAT):
        self.path = os.path.join(state_dir, 'minicluster-cm4.%s.json' % check_hat_name(hat))
        self.data = {'generation': 0, 'last_power_on': 0.0, 'nodes': {}}

    def load(self):
        try:
            with open(self.path) as f:
                data = json.load(f)
            if isinstance(data, dict) and isinstance(data.get('nodes'), dict):
                self.data = data
        except (IOError, OSError, ValueError):
            pass
        return self

    def node(self, node):
        return self.data['nodes'].setdefault(str(node), {})

    def save(self):
        self.data['generation'] = self.data.get('generation', 0) + 1
        atomic_write_json(self.path, self.data, sync=False)


class Hat(object):

    def __init__(self, port, lock_timeout=30.0, lock_dir=DEFAULT_LOCK_DIR, state_dir=DEFAULT_STATE_DIR,
                 on_threshold_ma=DEFAULT_ON_THRESHOLD_MA, ma_per_unit=None, command_timeout=rp2040.DEFAULT_TIMEOUT,
                 restart_delay=2.0, sleep=time.sleep, uart_port=None, hat=DEFAULT_HAT):
        self.port = port
        self.uart_port = uart_port
        self.hat = check_hat_name(hat)
        self.lock_timeout = lock_timeout
        self.lock_dir = lock_dir
        self.state_dir = state_dir
        self.on_threshold_ma = on_threshold_ma
        self.ma_per_unit = ma_per_unit
        self.command_timeout = command_timeout
        self.restart_delay = restart_delay
        self.sleep = sleep
        # Which port answered the last session, and over which path ('usb' or 'uart').
        self.used_port = None
        self.path_name = None
        self._calibration = None
        # A caller that holds the hat lock across several sessions lends its lock here.
        self.held_lock = None

    def console(self):
        return _TrackedConsole(self)

    @property
    def calibration(self):
        """The hat's stored calibration, {node: entry} (read once per Hat)."""
        if self._calibration is None:
            try:
                self._calibration = calibration.load(self.state_dir, self.hat)
            except calibration.CalibrationError as exc:
                raise HatError(str(exc))
        return self._calibration

    def gain(self, node):
        """mA per reported unit: the option when given, else the calibration, else 1."""
        if self.ma_per_unit is not None:
            return self.ma_per_unit
        return self.calibration.get(node, {}).get('ma_per_unit', 1.0)

    def baseline_units(self, node, memory):
        learned = memory.node(node).get('off_units')
        if isinstance(learned, (int, float)) and not isinstance(learned, bool) and learned >= 0:
            return float(learned)
        return self.calibration.get(node, {}).get('baseline_units', 0.0)

    def memory(self):
        return PinMemory(self.state_dir, self.hat).load()

    def _units(self, console):
        return dict(zip(NODES, console.averages()))

    def view(self, node, units, memory):
        remembered = memory.node(node)
        gain = self.gain(node)
        baseline = self.baseline_units(node, memory)
        power = 'on' if (units - baseline) * gain >= self.on_threshold_ma else 'off'
        if power == 'off' and remembered.get('en'):
            # Off although we switched it on: someone else (or an RP2040 reset, which releases
            # every pin) changed it, so what we remember of its USB-boot pin is stale too.
            remembered.pop('boot_mode', None)
            remembered['en'] = False
        return {'power': power, 'boot_mode': remembered.get('boot_mode'), 'current_ma': round(units * gain, 3),
                'baseline_ma': round(baseline * gain, 3), 'units': units}

    def status(self, nodes=NODES):
        """{node: {'power', 'boot_mode' (None when unknown), 'current_ma', 'baseline_ma'}} without changing anything."""
        with self.console() as console:
            memory = self.memory()
            units = self._units(console)
            return dict((n, self.view(n, units[n], memory)) for n in nodes)

    @staticmethod
    def plan(before, state, boot_mode):
        """Pin actions, in order, that take a node from before to the wanted state.

        Actions: 'usb', 'normal' (the USB-boot pin), 'on', 'off', 'wait' (restart delay), 'reset'.
        """
        actions = []
        mode_changes = boot_mode is not None and before['boot_mode'] != boot_mode
        if mode_changes:
            actions.append(boot_mode)
        if state == 'on':
            if before['power'] == 'on' and mode_changes:
                # The SoC samples nRPIBOOT only as it boots: a new boot mode needs a power cycle.
                actions += ['off', 'wait', 'on']
            elif before['power'] == 'off':
                actions.append('on')
        elif state == 'off':
            if before['power'] == 'on':
                actions.append('off')
        elif state == 'restarted':
            if before['power'] == 'on':
                actions += ['off', 'wait']
            actions.append('on')
        elif state == 'reset':
            actions.append('reset')
        return actions

    @staticmethod
    def predict(before, actions, boot_mode):
        after = dict(before)
        for action in actions:
            if action in BOOT_MODES:
                after['boot_mode'] = action
            elif action in ('on', 'off'):
                after['power'] = action
        if boot_mode is not None:
            after['boot_mode'] = boot_mode
        return after

    def ensure(self, nodes, state, boot_mode=None, stagger=1.0, check_mode=False):
        """Bring nodes to state (and boot_mode). {node: {'before', 'after', 'changed', 'actions'}}."""
        nodes = check_nodes(nodes, self.port)
        if state not in STATES:
            raise HatError('state %r is not one of %s' % (state, ', '.join(STATES)))
        if boot_mode is not None and boot_mode not in BOOT_MODES:
            raise HatError('boot_mode %r is not one of %s' % (boot_mode, ', '.join(BOOT_MODES)))
        results = {}
        with self.console() as console:
            memory = self.memory()
            units = self._units(console)
            for node in nodes:
                before = self.view(node, units[node], memory)
                if state == 'reset' and before['power'] != 'on':
                    raise HatError('node %d is off (%.1f mA on %s): a reset needs a powered node; use state=on or restarted'
                                   % (node, before['current_ma'], self.used_port))
                actions = self.plan(before, state, boot_mode)
                results[node] = {'before': before, 'actions': actions, 'changed': bool(actions),
                                 'after': self.predict(before, actions, boot_mode)}
            if check_mode or not any(r['changed'] for r in results.values()):
                return results
            try:
                for node in nodes:
                    self._apply(console, memory, node, results[node]['actions'], stagger)
            finally:
                memory.save()
        generation = memory.data['generation']
        # Let the eFuse soft-start (or the rail's decay) finish before reading back, without the lock.
        self.sleep(0.2)
        with self.console() as console:
            measured = self._units(console)
            switched_off = [n for n in nodes if results[n]['actions'] and results[n]['actions'][-1] == 'off']
            if switched_off:
                # EN is low now (the firmware acknowledged 'd'), so what the node draws is its own off
                # baseline (its converters, its NVMe drive), unless another process has switched it
                # on again meanwhile, which it would have recorded.
                memory = self.memory()
                for n in switched_off:
                    if memory.node(n).get('en') is False:
                        memory.node(n)['off_units'] = round(measured[n], 3)
                memory.save()
        for node in nodes:
            results[node]['after']['current_ma'] = round(measured[node] * self.gain(node), 3)
            results[node]['generation'] = generation
        return results

    def _apply(self, console, memory, node, actions, stagger):
        channel = channel_of(node)
        remembered = memory.node(node)
        for action in actions:
            if action == 'usb':
                console.pin(channel, rp2040.USB_BOOT_ASSERT)
                remembered['boot_mode'] = 'usb'
            elif action == 'normal':
                console.pin(channel, rp2040.USB_BOOT_DEASSERT)
                remembered['boot_mode'] = 'normal'
            elif action == 'off':
                console.pin(channel, rp2040.DISABLE)
                remembered['en'] = False
            elif action == 'wait':
                self.sleep(self.restart_delay)
            elif action == 'on':
                # Spread inrush across every caller on this controller, not only this call.
                wait = memory.data.get('last_power_on', 0.0) + stagger - time.time()
                if 0 < wait <= stagger:
                    self.sleep(wait)
                console.pin(channel, rp2040.ENABLE)
                remembered['en'] = True
                memory.data['last_power_on'] = time.time()
            elif action == 'reset':
                console.pin(channel, rp2040.RESET)


class _TrackedConsole(rp2040.RP2040Console):
    """A console session of a Hat that tells the Hat which path answered."""

    def __init__(self, hat):
        super(_TrackedConsole, self).__init__(hat.port, lock_timeout=hat.lock_timeout, lock_dir=hat.lock_dir,
                                              timeout=hat.command_timeout, fallback_port=hat.uart_port, hat=hat.hat)
        if hat.held_lock is not None:
            self.lock = hat.held_lock
        self._hat = hat

    def open(self):
        super(_TrackedConsole, self).open()
        self._hat.used_port, self._hat.path_name = self.used_port, self.path_name
        return self
