# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.chips import emc2301
from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.chips.fake_i2c import FakeBus, FakeEMC2301


# The datasheet's TACH count for a 2-pole fan over 5 edges: RPM = 3 932 160 x m / COUNT.
@pytest.mark.parametrize('rpm, range_bits, count', [
    (500, 0, 7864),      # each range's minimum speed sits just under the 13-bit limit
    (1000, 1, 7864),
    (2000, 2, 7864),
    (4000, 3, 7864),
    (1000, 0, 3932),
    (3000, 2, 5243),
    (16000, 3, 1966),
    (480, 0, 8192 - 0),  # just out of range: raises below
])
def test_count_from_rpm(rpm, range_bits, count):
    if count >= emc2301.TACH_COUNT_MAX:
        with pytest.raises(emc2301.EMC2301Error):
            emc2301.count_from_rpm(rpm, range_bits)
    else:
        assert emc2301.count_from_rpm(rpm, range_bits) == count


@pytest.mark.parametrize('count, range_bits, rpm', [
    (7864, 0, 500), (7864, 3, 4000), (3932, 0, 1000), (5243, 2, 3000),
    (1966, 3, 16001),  # 31 457 280 / 1966 = 16000.8
    (0x1FFF, 1, 0),   # saturated reading: the fan stands still
    (0, 1, 0),
])
def test_rpm_from_count(count, range_bits, rpm):
    assert emc2301.rpm_from_count(count, range_bits) == rpm


@pytest.mark.parametrize('poles', [1, 2, 3, 4])
def test_edges_keep_one_revolution(poles):
    # 3/5/7/9 edges span one revolution of a 1..4-pole fan: the count does not depend on poles.
    assert emc2301.edges_for_poles(poles) == 2 * poles + 1
    assert emc2301.count_from_rpm(2500, 2, poles) == emc2301.count_from_rpm(2500, 2, 2)
    assert emc2301.rpm_from_count(emc2301.count_from_rpm(2500, 2, poles), 2, poles) == 2500


@pytest.mark.parametrize('rpm, bits', [(500, 0), (999, 0), (1000, 1), (1999, 1), (2000, 2), (3999, 2),
                                       (4000, 3), (16000, 3)])
def test_range_for_rpm(rpm, bits):
    assert emc2301.range_for_rpm(rpm) == bits
    # The chosen range measures the target within a 13-bit count.
    assert 1 <= emc2301.count_from_rpm(rpm, bits) < emc2301.TACH_COUNT_MAX


@pytest.mark.parametrize('rpm', [0, 499, 16001, 30000])
def test_unreachable_targets(rpm):
    with pytest.raises(emc2301.EMC2301Error, match='unreachable'):
        emc2301.range_for_rpm(rpm)


def test_target_registers():
    # COUNT bits 4:0 in bits 7:3 of the low byte, bits 12:5 in the high byte.
    assert emc2301.target_registers(0x1FFF) == (0xF8, 0xFF)
    assert emc2301.target_registers(5243) == ((5243 & 0x1F) << 3, 5243 >> 5)
    assert emc2301.count_from_registers(*reversed(emc2301.target_registers(5243))) == 5243
    assert emc2301.count_from_registers(0xFF, 0xF8) == 0x1FFF


@pytest.mark.parametrize('percent, value', [(0, 0), (100, 255), (40, 0x66), (50, 128), (20, 51)])
def test_duty(percent, value):
    assert emc2301.setting_from_percent(percent) == value


def test_duty_back():
    assert emc2301.percent_from_setting(0x66) == 40.0
    assert emc2301.percent_from_setting(255) == 100.0
    with pytest.raises(emc2301.EMC2301Error):
        emc2301.setting_from_percent(101)


def test_register_defaults_decode():
    # FAN_CONFIGURATION_1 default 0x2B: RPM control off, range 1000 RPM, 5 edges, 400 ms.
    assert emc2301.parse_config1(0x2B) == {'rpm_control': False, 'range': 1, 'poles': 2, 'update_time_ms': 400}
    assert emc2301.config1(False, 1, 2, 400) == 0x2B
    assert emc2301.config1(True, 2, 2, 400) == 0xCB
    # FAN_SPIN_UP_CONFIGURATION default 0x19: 60 %, 500 ms.
    assert emc2301.spin_up_level_percent((0x19 >> 2) & 7) == 60
    assert emc2301.spin_up_time_ms(0x19) == 500
    assert emc2301.spin_up(0x19, 30, 250) == 0x00
    assert emc2301.spin_up(0xF9, 30) == 0xE1   # DRIVE_FAIL_CNT and NOKICK bits kept
    assert emc2301.spin_up(0xD9, 65) == 0xDD


@pytest.mark.parametrize('fn, good, bad', [
    (emc2301.update_time_bits, [(100, 0), (400, 3), (1600, 7)], 150),
    (emc2301.spin_up_level_bits, [(30, 0), (65, 7)], 70),
    (emc2301.spin_up_time_bits, [(250, 0), (2000, 3)], 300),
    (emc2301.pwm_base_bits, [(26000, 0), (2441, 3)], 25000),
])
def test_encodings(fn, good, bad):
    for value, bits in good:
        assert fn(value) == bits
    with pytest.raises(emc2301.EMC2301Error, match='not one the EMC2301 offers'):
        fn(bad)


def test_write_order_covers_every_writable_register():
    assert set(emc2301.WRITE_ORDER) == set(emc2301.WRITABLE)
    assert emc2301.SOFTWARE_LOCK not in emc2301.WRITABLE
    order = emc2301.WRITE_ORDER
    assert order.index(emc2301.TACH_TARGET_LOW) < order.index(emc2301.TACH_TARGET_HIGH) < order.index(emc2301.FAN_CONFIGURATION_1)
    assert order.index(emc2301.FAN_CONFIGURATION_1) < order.index(emc2301.FAN_SETTING)


def test_chip_reads_rpm_high_byte_first():
    dev = FakeEMC2301(tach_count=5243)
    bus = FakeBus({0x2F: dev})
    chip = emc2301.EMC2301(bus)
    assert chip.identify()
    assert chip.tach_count() == 5243      # the fake returns 0 for a low byte read before the high byte
    assert chip.rpm(0xCB) == 3000
    assert chip.status() == {'rpm': 1500, 'duty_percent': 0.0, 'mode': 'pwm'}  # default range: m = 2


def test_chip_refuses_the_software_lock():
    dev = FakeEMC2301()
    chip = emc2301.EMC2301(FakeBus({0x2F: dev}))
    with pytest.raises(emc2301.EMC2301Error, match='0xef'):
        chip.write_registers({emc2301.SOFTWARE_LOCK: 1})
    with pytest.raises(emc2301.EMC2301Error, match='0x3e'):
        chip.write_registers({emc2301.TACH_READING_HIGH: 1})
    assert dev.written == []


def test_identity_mismatch():
    chip = emc2301.EMC2301(FakeBus({0x2F: FakeEMC2301(product=0x36)}))
    assert not chip.identify()
