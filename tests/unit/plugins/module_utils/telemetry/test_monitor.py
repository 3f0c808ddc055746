# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fan-curve step against in-memory chips: curve, failsafe, recovery, ownership."""

from __future__ import annotations

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.chips import emc2301
from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry import config
from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry.fanowner import FanOwner
from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry.monitor import HatMonitor
from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.chips.fake_i2c import FakeBus, FakeEMC2301


class FakeTMP117(object):
    """Pointer byte, then 16-bit big-endian registers: temperature result and device ID."""

    def __init__(self, celsius):
        self.celsius = celsius
        self.pointer = 0

    def acks(self, addr):
        return True

    def write(self, addr, data):
        self.pointer = data[0]

    def read(self, addr, count):
        if self.pointer == 0x0F:
            word = 0x0117
        else:
            word = int(round(self.celsius / 0.0078125)) & 0xFFFF
        return [word >> 8, word & 0xFF][:count]

    def repeated_start(self):
        pass

    def stop(self):
        pass


ADDRESSES = {1: 0x49, 2: 0x48, 3: 0x4B, 4: 0x4A}


@pytest.fixture
def rig(tmp_path):
    cfg = config.check({'lock_dir': str(tmp_path), 'hats': [{
        'name': 'alpha', 'i2c_bus': 'unix:%s' % (tmp_path / 'absent.sock'),
        'fan': {'curve': [[30, 1000], [50, 3000]], 'recover_after': 2, 'owner_file': str(tmp_path / 'fan.owner')}}]})
    sensors = dict((n, FakeTMP117(35.0)) for n in ADDRESSES)
    fan = FakeEMC2301(tach_count=3000)
    bus = FakeBus(dict([(emc2301.ADDRESS, fan)] + [(ADDRESSES[n], s) for n, s in sensors.items()]))
    mon = HatMonitor(cfg['hats'][0], str(tmp_path), str(tmp_path), 3600)
    mon._bus = bus

    def step():
        if mon._bus is None:
            mon._bus = bus
        mon.control_fan(mon.sample_i2c())
        return mon.regime
    yield mon, sensors, fan, bus, step
    mon.owner.release()


def full_drive(fan):
    return not fan.regs[emc2301.FAN_CONFIGURATION_1] & 0x80 and fan.regs[emc2301.FAN_SETTING] == 0xFF


def target_rpm(fan):
    c1 = emc2301.parse_config1(fan.regs[emc2301.FAN_CONFIGURATION_1])
    assert c1['rpm_control']
    return emc2301.rpm_from_count(emc2301.count_from_registers(fan.regs[0x3D], fan.regs[0x3C]), c1['range'], c1['poles'])


def test_hottest_sensor_through_the_curve_in_rpm_mode(rig):
    mon, sensors, fan, bus, step = rig
    sensors[3].celsius = 45.0
    assert step() == 'curve'
    assert target_rpm(fan) == pytest.approx(2500, abs=5)
    writes = len(bus.writes(emc2301.ADDRESS))
    step()
    assert len(bus.writes(emc2301.ADDRESS)) == writes   # nothing changed, nothing written


@pytest.mark.parametrize('fault, reason', [
    ('implausible', 'node 2 TMP117 reads 130.00 degC, outside the plausible -20..110 degC'),
    ('silent', 'node 2 TMP117: no answer at I2C bus'),
    ('stall', 'fan stalled (EMC2301 status stall)'),
])
def test_failsafe_then_back_after_healthy_steps(rig, fault, reason):
    mon, sensors, fan, bus, step = rig
    assert step() == 'curve'
    if fault == 'implausible':
        sensors[2].celsius = 130.0
    elif fault == 'silent':
        del bus.devices[ADDRESSES[2]]
    else:
        fan.regs[emc2301.FAN_STATUS] = 0x01
    assert step() == 'failsafe'
    assert reason in mon.regime_reason
    assert full_drive(fan)
    sensors[2].celsius = 35.0
    bus.devices[ADDRESSES[2]] = sensors[2]
    fan.regs[emc2301.FAN_STATUS] = 0x00
    assert step() == 'failsafe' and full_drive(fan)     # one healthy step is not enough
    assert step() == 'curve'
    assert target_rpm(fan) == pytest.approx(1500, abs=5)
    assert mon.regime_changes == 3                      # starting -> curve -> failsafe -> curve


def test_another_owner_keeps_the_service_off_the_fan(rig, tmp_path):
    mon, sensors, fan, bus, step = rig
    other = FanOwner(str(tmp_path / 'fan.owner'), 'someone else')
    other.acquire()
    try:
        assert step() == 'not-owner'
        assert 'someone else (pid' in mon.regime_reason
        assert bus.writes(emc2301.ADDRESS) == []
    finally:
        other.release()
    assert step() == 'failsafe'   # the fan is ours again: full drive until healthy for a while
    assert full_drive(fan)
    assert step() == 'curve'


def test_release_leaves_full_drive(rig):
    mon, sensors, fan, bus, step = rig
    step()
    mon.release_fan()
    assert full_drive(fan) and not mon.owner.held


def test_history_stays_bounded_over_a_day_of_samples(rig):
    mon, sensors, fan, bus, step = rig
    step()
    for dummy in range(86400 // 5):             # a day at the default 5 s
        mon.record()
    assert len(mon.history_rows()) == mon.history.maxlen == 3600 // 5 + 1
