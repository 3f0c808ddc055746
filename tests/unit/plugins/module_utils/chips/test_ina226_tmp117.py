# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.chips import ina226, tmp117

from .fake_i2c import FakeBus


class Registers16(object):
    """A chip with a register pointer and 16-bit big-endian registers (INA226, TMP117)."""

    def __init__(self, regs):
        self.regs = dict(regs)
        self.pointer = 0

    def acks(self, addr):
        return True

    def write(self, addr, data):
        self.pointer = data[0]
        if len(data) == 3:
            self.regs[self.pointer] = data[1] << 8 | data[2]

    def read(self, addr, count):
        value = self.regs.get(self.pointer, 0)
        return bytes([value >> 8, value & 0xFF])[:count]

    def repeated_start(self):
        pass

    def stop(self):
        pass


def ina(shunt_raw, bus_raw=9600, shunt_ohm=ina226.DEFAULT_SHUNT_OHM):
    chip = Registers16({0x01: shunt_raw & 0xFFFF, 0x02: bus_raw, 0xFE: 0x5449, 0xFF: 0x2260})
    return ina226.INA226(FakeBus({0x40: chip}), 0x40, shunt_ohm)


def test_default_shunt_is_the_schematics_0r1():
    assert ina226.DEFAULT_SHUNT_OHM == 0.1
    assert ina226.saturation_current(0.1) == pytest.approx(0.8192)


def test_reading_below_full_scale():
    # 20000 x 2.5 uV = 50 mV over 0.1 ohm = 0.5 A; 9600 x 1.25 mV = 12 V.
    got = ina(20000).read()
    assert got == {'voltage_v': 12.0, 'shunt_v': 0.05, 'current_a': 0.5, 'power_w': 6.0, 'saturated': False}
    assert ina(-400).read()['current_a'] == -0.01
    assert ina(32766).read()['saturated'] is False


@pytest.mark.parametrize('raw', [0x7FFF, -0x8000])
def test_a_shunt_register_at_its_limit_is_saturated_never_a_clipped_number(raw):
    got = ina(raw).read()
    assert got['saturated'] is True
    assert got['current_a'] is None and got['power_w'] is None
    assert got['voltage_v'] == 12.0


def test_the_same_register_is_a_true_reading_with_a_smaller_shunt():
    assert ina(20000, shunt_ohm=0.002).read()['current_a'] == 25.0


@pytest.mark.parametrize('bad', [0, -0.1, float('nan'), float('inf'), True, '0.1'])
def test_shunt_must_be_positive_and_finite(bad):
    with pytest.raises(ValueError, match='shunt'):
        ina(0, shunt_ohm=bad)


def test_tmp117_addresses_follow_the_slot_straps():
    assert tmp117.DEFAULT_ADDRESSES == {1: 0x49, 2: 0x48, 3: 0x4B, 4: 0x4A}


def test_tmp117_conversion():
    assert tmp117.celsius(0x8000) is None
    assert tmp117.celsius(0x0C80) == 25.0       # datasheet: 0x0C80 = 25 degC
    assert tmp117.celsius(0xFF80) == -1.0
