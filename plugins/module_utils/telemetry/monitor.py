# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sampling one hat and driving its fan from its temperatures.

Two loops per hat. The console loop asks the RP2040 for the four node currents; it tries the hat's
console lock for a moment only (node_power and node_flash hold it for whole exchanges), and when
the console is busy it keeps the last sample, whose age keeps growing. The I2C loop reads the
INA226, the TMP117s and the EMC2301 and runs the fan curve. Every reading carries the time it was
taken; a reading older than stale_after is no longer reported as a value, only its age.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from ansible_collections.minicluster.cm4.plugins.module_utils.board.hat import Hat, HatError
from ansible_collections.minicluster.cm4.plugins.module_utils.chips import emc2301 as emc
from ansible_collections.minicluster.cm4.plugins.module_utils.chips.ina226 import INA226
from ansible_collections.minicluster.cm4.plugins.module_utils.chips.tmp117 import TMP117
from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry import curve as curves
from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry.fanowner import FanOwned, FanOwner, owner_path
from ansible_collections.minicluster.cm4.plugins.module_utils.transports import i2c, rp2040
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.lock import LockTimeout

NODES = (1, 2, 3, 4)
# FAN_STATUS bits (datasheet table 6-8).
FAN_STALL = 0x01
FAN_SPIN = 0x02
DRIVE_FAIL = 0x04
FULL_DRIVE = 0xFF

log = logging.getLogger('minicluster.telemetry')


def tmp117_source(node):
    return 'tmp117-%d' % node


SOURCES = ('console', 'ina226', 'emc2301') + tuple(tmp117_source(n) for n in NODES)


class Source(object):
    """The last good reading of one device and how the latest attempt went."""

    __slots__ = ('data', 't_ok', 'wall_ok', 'error', 'errors', 'busy', 'attempts')

    def __init__(self):
        self.data = None
        self.t_ok = None
        self.wall_ok = None
        self.error = 'not read yet'
        self.errors = 0
        self.busy = 0
        self.attempts = 0


class HatMonitor(object):

    def __init__(self, cfg, lock_dir, state_dir, history_seconds, clock=time.monotonic, wall=time.time,
                 sleep=None, on_sample=None):
        self.cfg = cfg
        self.name = cfg['name']
        self.lock_dir = lock_dir
        self.state_dir = state_dir
        self.clock = clock
        self.wall = wall
        self.on_sample = on_sample
        self.lock = threading.Lock()
        self.sources = dict((s, Source()) for s in SOURCES)
        self.history = collections.deque(maxlen=int(history_seconds / cfg['sample_interval']) + 1)
        self.stop_event = threading.Event()
        self._sleep = sleep or self.stop_event.wait
        self._bus = None
        fan = cfg['fan']
        self.fan_cfg = fan
        self.curve = curves.Curve(fan['curve'], fan['hysteresis_c'])
        self.owner = FanOwner(fan['owner_file'] or owner_path(cfg['i2c_bus'], lock_dir),
                              'minicluster-cm4-telemetry hat %s' % self.name)
        self.regime = 'disabled' if not fan['enabled'] else 'starting'
        self.regime_reason = ''
        self.regime_since = wall()
        self.regime_changes = 0
        self.healthy_cycles = 0
        self.fan_output = None
        self.fan_aggregate_c = None

    # -- readings ---------------------------------------------------------------------------
    def _ok(self, name, data):
        with self.lock:
            src = self.sources[name]
            src.attempts += 1
            src.data = data
            src.t_ok = self.clock()
            src.wall_ok = self.wall()
            src.error = None

    def _fail(self, name, error, busy=False):
        with self.lock:
            src = self.sources[name]
            src.attempts += 1
            if busy:
                src.busy += 1
            else:
                src.errors += 1
            src.error = error

    def view(self, name):
        """(data or None when stale or never read, age in seconds or None, error or None)."""
        with self.lock:
            src = self.sources[name]
            if src.t_ok is None:
                return None, None, src.error
            age = max(0.0, self.clock() - src.t_ok)
            return (src.data if age <= self.cfg['stale_after'] else None), age, src.error

    def counters(self, name):
        with self.lock:
            src = self.sources[name]
            return {'errors': src.errors, 'busy': src.busy, 'attempts': src.attempts}

    # -- console ----------------------------------------------------------------------------
    def sample_console(self):
        """The nodes through the same Hat logic node_power uses (baselines, calibration, pin memory)."""
        cfg = self.cfg
        hat = Hat(cfg['port'], lock_timeout=cfg['console_lock_timeout'], lock_dir=self.lock_dir,
                  state_dir=self.state_dir, on_threshold_ma=cfg['on_threshold_ma'], ma_per_unit=cfg['ma_per_unit'],
                  command_timeout=cfg['command_timeout'], uart_port=cfg['uart_port'], hat=cfg['hat_id'])
        try:
            calibrated = set() if cfg['ma_per_unit'] is not None else set(hat.calibration)
            status = hat.status()
        except LockTimeout:
            self._fail('console', 'console busy (another program holds the hat lock); serving the last sample',
                       busy=True)
            return
        except (rp2040.ConsoleError, HatError, OSError, ValueError) as exc:
            self._fail('console', str(exc))
            return
        nodes = {}
        for node in NODES:
            item = status[node]
            nodes[node] = {'current_a': round(item['current_ma'] / 1000.0, 6), 'on': item['power'] == 'on',
                           'usb_boot': None if item['boot_mode'] is None else item['boot_mode'] == 'usb',
                           'calibrated': node in calibrated}
        self._ok('console', nodes)

    # -- I2C --------------------------------------------------------------------------------
    def _open_bus(self):
        if self._bus is None:
            self._bus = i2c.open_bus(self.cfg['i2c_bus'], timeout=2.0)
        return self._bus

    def _drop_bus(self):
        if self._bus is not None:
            try:
                self._bus.close()
            except (OSError, IOError):
                pass
            self._bus = None

    def _where(self, addr):
        return 'I2C bus %s address 0x%02x' % (self.cfg['i2c_bus'], addr)

    def _read(self, name, addr, func):
        """func() -> data; records the outcome. A bus that breaks (not a NACK) is re-opened next time."""
        try:
            data = func()
        except OSError as exc:
            if i2c.is_nack(exc):
                self._fail(name, 'no answer at %s' % self._where(addr))
            else:
                self._fail(name, 'I2C error at %s: %s' % (self._where(addr), exc))
                self._drop_bus()
            return None
        except i2c.I2CError as exc:
            self._fail(name, str(exc))
            self._drop_bus()
            return None
        self._ok(name, data)
        return data

    def sample_i2c(self):
        """Read every I2C chip once; returns {'temps': {node: C or None}, 'fan': regs or None, 'bus': error}."""
        cfg = self.cfg
        try:
            bus = self._open_bus()
        except (i2c.I2CError, ValueError, OSError) as exc:
            error = str(exc)
            for name in ('ina226', 'emc2301') + tuple(tmp117_source(n) for n in NODES):
                self._fail(name, error)
            return {'temps': dict.fromkeys(NODES), 'fan': None, 'bus': error}
        ina = INA226(bus, cfg['ina226_address'], shunt_ohm=cfg['shunt_ohm'])
        self._read('ina226', cfg['ina226_address'], lambda: self._input(ina))
        temps = {}
        for node in NODES:
            if self._bus is None:
                self._fail(tmp117_source(node), 'the I2C bus %s went away' % cfg['i2c_bus'])
                temps[node] = None
                continue
            addr = cfg['tmp117_addresses'][node]
            chip = TMP117(self._bus, addr)
            value = self._read(tmp117_source(node), addr, lambda c=chip: {'celsius': c.temperature()})
            temps[node] = None if value is None else value['celsius']
        fan = None
        if self._bus is not None:
            chip = emc.EMC2301(self._bus)
            fan = self._read('emc2301', emc.ADDRESS, lambda: self._fan(chip))
        else:
            self._fail('emc2301', 'the I2C bus %s went away' % cfg['i2c_bus'])
        return {'temps': temps, 'fan': fan, 'bus': None if self._bus is not None else 'I2C bus %s went away' % cfg['i2c_bus']}

    @staticmethod
    def _input(ina):
        data = dict(ina.read())
        saturated = bool(data.get('saturated', False))
        data['saturated'] = saturated
        if saturated:
            data['current_a'] = None
            data['power_w'] = None
        return data

    def _fan(self, chip):
        regs = chip.read_registers((emc.FAN_CONFIGURATION_1, emc.FAN_SETTING, emc.TACH_TARGET_LOW,
                                    emc.TACH_TARGET_HIGH, emc.FAN_STATUS))
        c1 = emc.parse_config1(regs[emc.FAN_CONFIGURATION_1])
        target = emc.rpm_from_count(emc.count_from_registers(regs[emc.TACH_TARGET_HIGH], regs[emc.TACH_TARGET_LOW]),
                                    c1['range'], c1['poles'])
        status = regs[emc.FAN_STATUS]
        return {
            'rpm': chip.rpm(regs[emc.FAN_CONFIGURATION_1]),
            'drive_ratio': round(regs[emc.FAN_SETTING] / 255.0, 4),
            'mode': 'rpm' if c1['rpm_control'] else 'pwm',
            'target_rpm': target if c1['rpm_control'] else None,
            'stalled': bool(status & FAN_STALL),
            'spin_up_failed': bool(status & FAN_SPIN),
            'drive_fail': bool(status & DRIVE_FAIL),
            'registers': regs,
        }

    # -- fan curve --------------------------------------------------------------------------
    def _set_regime(self, regime, reason):
        if regime != self.regime:
            level = logging.WARNING if regime in ('failsafe', 'not-owner') else logging.INFO
            log.log(level, 'hat %s fan: %s -> %s (%s)', self.name, self.regime, regime, reason)
            self.regime_since = self.wall()
            self.regime_changes += 1
        elif regime == 'failsafe' and reason != self.regime_reason:
            log.warning('hat %s fan: still at full drive (%s)', self.name, reason)
        self.regime = regime
        self.regime_reason = reason

    def faults(self, reading):
        fan = self.fan_cfg
        out = []
        if reading['bus']:
            return [reading['bus']]
        for node in fan['sensors']:
            value = reading['temps'].get(node)
            src = self.sources[tmp117_source(node)]
            if value is None:
                out.append('node %d TMP117: %s' % (node, src.error or 'no conversion yet'))
            elif not fan['plausible_min_c'] <= value <= fan['plausible_max_c']:
                out.append('node %d TMP117 reads %.2f degC, outside the plausible %g..%g degC'
                           % (node, value, fan['plausible_min_c'], fan['plausible_max_c']))
        if reading['fan'] is None:
            out.append('EMC2301: %s' % (self.sources['emc2301'].error,))
        elif reading['fan']['stalled'] or reading['fan']['spin_up_failed']:
            out.append('fan stalled (EMC2301 status %s)' % ('stall' if reading['fan']['stalled'] else 'spin-up failed'))
        return out

    def _want(self, regs, output):
        """Registers that make the chip run output (None: full drive) from what it holds now."""
        c1 = emc.parse_config1(regs[emc.FAN_CONFIGURATION_1])
        if output is None:
            return {emc.FAN_CONFIGURATION_1: emc.config1(False, c1['range'], self.fan_cfg['poles'], c1['update_time_ms']),
                    emc.FAN_SETTING: FULL_DRIVE}
        if self.fan_cfg['mode'] == 'pwm':
            return {emc.FAN_CONFIGURATION_1: emc.config1(False, c1['range'], self.fan_cfg['poles'], c1['update_time_ms']),
                    emc.FAN_SETTING: emc.setting_from_percent(output)}
        rng = emc.range_for_rpm(output)
        low, high = emc.target_registers(emc.count_from_rpm(output, rng, self.fan_cfg['poles']))
        return {emc.TACH_TARGET_LOW: low, emc.TACH_TARGET_HIGH: high,
                emc.FAN_CONFIGURATION_1: emc.config1(True, rng, self.fan_cfg['poles'], c1['update_time_ms'])}

    def _write(self, regs, want):
        todo = dict((r, v) for r, v in want.items() if regs.get(r) != v)
        if emc.FAN_SETTING in want and emc.FAN_CONFIGURATION_1 in todo:
            todo[emc.FAN_SETTING] = want[emc.FAN_SETTING]  # read-only while RPM control ran
        if emc.TACH_TARGET_LOW in todo:
            todo[emc.TACH_TARGET_HIGH] = want[emc.TACH_TARGET_HIGH]  # the target latches on the high byte
        if todo:
            emc.EMC2301(self._bus).write_registers(todo)
        return todo

    def control_fan(self, reading):
        """One step of the curve (or the failsafe) from one I2C reading."""
        if not self.fan_cfg['enabled']:
            return
        try:
            self.owner.acquire()
        except (FanOwned, OSError) as exc:
            self.healthy_cycles = 0
            self._set_regime('not-owner', str(exc))
            return
        faults = self.faults(reading)
        temps = [reading['temps'][n] for n in self.fan_cfg['sensors'] if reading['temps'].get(n) is not None]
        self.fan_aggregate_c = curves.aggregate(temps, self.fan_cfg['aggregate']) if temps and not faults else None
        if faults:
            self.healthy_cycles = 0
            self.curve.reset()
            self._set_regime('failsafe', '; '.join(faults))
            output = None
        else:
            self.healthy_cycles += 1
            if self.regime in ('failsafe', 'not-owner') and self.healthy_cycles < self.fan_cfg['recover_after']:
                # Full drive until the fault has been gone (or the fan ours) for a few steps.
                if self.regime == 'not-owner':
                    self._set_regime('failsafe', 'took the fan over')
                output = None
            else:
                self._set_regime('curve', 'hottest %.2f degC' % self.fan_aggregate_c if self.fan_cfg['aggregate'] == 'max'
                                 else '%s %.2f degC' % (self.fan_cfg['aggregate'], self.fan_aggregate_c))
                output = self.curve.output(self.fan_aggregate_c)
        self.fan_output = output
        if reading['fan'] is None or self._bus is None:
            # Nothing can be written now; the next cycle re-opens the bus and writes full drive first.
            return
        try:
            self._write(reading['fan']['registers'], self._want(reading['fan']['registers'], output))
        except (OSError, i2c.I2CError, emc.EMC2301Error) as exc:
            self._fail('emc2301', 'cannot set the fan: %s' % exc)
            self._drop_bus()

    def release_fan(self):
        """On shutdown: leave the fan at full drive (never stopped) and give up ownership."""
        if not self.fan_cfg['enabled'] or not self.owner.held:
            return
        try:
            bus = self._open_bus()
            chip = emc.EMC2301(bus)
            regs = chip.read_registers((emc.FAN_CONFIGURATION_1, emc.FAN_SETTING))
            self._write(regs, self._want(regs, None))
            log.info('hat %s fan: left at full drive on exit', self.name)
        except (OSError, i2c.I2CError, ValueError) as exc:
            log.warning('hat %s fan: could not set full drive on exit: %s', self.name, exc)
        finally:
            self.owner.release()
            self._drop_bus()

    # -- snapshot and loops -----------------------------------------------------------------
    def snapshot(self):
        """What the page, the history and InfluxDB show: fresh values only (None when stale)."""
        console, console_age, console_error = self.view('console')
        ina, ina_age, ina_error = self.view('ina226')
        fan, fan_age, fan_error = self.view('emc2301')
        nodes = {}
        for node in NODES:
            temp, temp_age, temp_error = self.view(tmp117_source(node))
            item = dict((console or {}).get(node) or {'current_a': None, 'on': None, 'usb_boot': None, 'calibrated': None})
            item['temperature_c'] = None if temp is None else temp['celsius']
            item['temperature_age_s'] = temp_age
            item['temperature_error'] = temp_error
            nodes[str(node)] = item
        fan_view = None if fan is None else dict((k, v) for k, v in fan.items() if k != 'registers')
        return {
            'hat': self.name,
            'time': self.wall(),
            'nodes': nodes,
            'console': {'age_s': console_age, 'error': console_error},
            'input': {'voltage_v': None if ina is None else ina['voltage_v'],
                      'current_a': None if ina is None else ina['current_a'],
                      'power_w': None if ina is None else ina['power_w'],
                      'saturated': None if ina is None else ina['saturated'],
                      'age_s': ina_age, 'error': ina_error},
            'fan': {'reading': fan_view, 'age_s': fan_age, 'error': fan_error, 'regime': self.regime,
                    'reason': self.regime_reason, 'since': self.regime_since, 'output': self.fan_output,
                    'aggregate_c': self.fan_aggregate_c, 'mode': self.fan_cfg['mode']},
        }

    def record(self):
        snap = self.snapshot()
        nodes = snap['nodes']
        fan = snap['fan']['reading'] or {}
        row = (round(snap['time'], 1),
               [nodes[str(n)]['temperature_c'] for n in NODES],
               [nodes[str(n)]['current_a'] for n in NODES],
               snap['input']['power_w'], fan.get('rpm'), fan.get('drive_ratio'))
        with self.lock:
            self.history.append(row)
        if self.on_sample is not None:
            self.on_sample(snap)

    def history_rows(self):
        with self.lock:
            return list(self.history)

    def console_loop(self):
        while not self.stop_event.is_set():
            started = self.clock()
            try:
                self.sample_console()
                self.record()
            except Exception:  # pylint: disable=broad-except
                log.exception('hat %s: console sample failed', self.name)
            self._sleep(max(0.05, self.cfg['sample_interval'] - (self.clock() - started)))

    def i2c_loop(self):
        while not self.stop_event.is_set():
            started = self.clock()
            try:
                reading = self.sample_i2c()
                self.control_fan(reading)
            except Exception:  # pylint: disable=broad-except
                # A bug must not leave the fan where it was: the next cycle starts from a fresh bus.
                log.exception('hat %s: I2C cycle failed', self.name)
                self._drop_bus()
            self._sleep(max(0.05, self.fan_cfg['interval'] - (self.clock() - started)))
        self.release_fan()
