# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""TI INA226 current/power monitor: the hat's 12 V input.

Registers are 16 bits, big-endian, behind a pointer byte. Read-only use: the current follows from
the shunt voltage and the shunt resistance, so nothing (not even calibration) has to be written.
"""

from __future__ import annotations

from ansible_collections.minicluster.cm4.plugins.module_utils.transports.i2c import Device

INA226_CONFIG = 0x00
INA226_SHUNT_VOLTAGE = 0x01
INA226_BUS_VOLTAGE = 0x02
INA226_POWER = 0x03
INA226_CURRENT = 0x04
INA226_CALIBRATION = 0x05
INA226_MASK_ENABLE = 0x06
INA226_ALERT_LIMIT = 0x07
INA226_MANUFACTURER_ID = 0xFE
INA226_DIE_ID = 0xFF

MANUFACTURER_ID = 0x5449  # 'TI'
DIE_ID = 0x2260
CONFIG_DEFAULT = 0x4127
DEFAULT_ADDRESS = 0x40

SHUNT_LSB_V = 2.5e-6
BUS_LSB_V = 1.25e-3
CALIBRATION_CONSTANT = 0.00512
# The shunt ADC's full scale is +-81.92 mV; beyond it the register holds its extreme codes.
SHUNT_MAX_RAW = 0x7FFF
SHUNT_MIN_RAW = -0x8000
SHUNT_FULL_SCALE_V = 0.08192
# R173 on the schematic: 0R1, so the input saturates at 0.82 A.
DEFAULT_SHUNT_OHM = 0.1


def signed16(raw):
    return raw - 0x10000 if raw & 0x8000 else raw


def shunt_volts(raw):
    return signed16(raw) * SHUNT_LSB_V


def shunt_saturated(raw):
    """True when the Shunt Voltage register sits at a limit of its range: the true value is beyond it."""
    value = signed16(raw)
    return value >= SHUNT_MAX_RAW or value <= SHUNT_MIN_RAW


def saturation_current(shunt_ohm):
    """Largest current the shunt lets the INA226 measure, in amperes."""
    return SHUNT_FULL_SCALE_V / shunt_ohm


def bus_volts(raw):
    return (raw & 0x7FFF) * BUS_LSB_V


def calibration(current_lsb_a, shunt_ohm):
    """CAL = 0.00512 / (Current_LSB x R_shunt), the datasheet's equation 1."""
    return int(CALIBRATION_CONSTANT / (current_lsb_a * shunt_ohm))


class INA226(Device):

    def __init__(self, bus, addr=DEFAULT_ADDRESS, shunt_ohm=DEFAULT_SHUNT_OHM):
        super(INA226, self).__init__(bus, addr)
        if not isinstance(shunt_ohm, (int, float)) or isinstance(shunt_ohm, bool) or not 0 < shunt_ohm < 1000:
            raise ValueError('the INA226 shunt must be a positive, finite resistance, not %r ohm' % (shunt_ohm,))
        self.shunt_ohm = shunt_ohm

    def identify(self):
        """True when the chip at the address reports TI's INA226 IDs."""
        return self.read_u16_be(INA226_MANUFACTURER_ID) == MANUFACTURER_ID and self.read_u16_be(INA226_DIE_ID) == DIE_ID

    def saturation_current(self):
        return saturation_current(self.shunt_ohm)

    def read(self):
        """{'voltage_v', 'shunt_v', 'current_a', 'power_w', 'saturated'} from one shunt and one bus reading.

        With the shunt register at a limit the current is somewhere beyond full scale: current_a
        and power_w are then None (never the clipped value) and saturated is True.
        """
        volts = bus_volts(self.read_u16_be(INA226_BUS_VOLTAGE))
        raw = self.read_u16_be(INA226_SHUNT_VOLTAGE)
        shunt = shunt_volts(raw)
        out = {'voltage_v': round(volts, 4), 'shunt_v': round(shunt, 7), 'current_a': None, 'power_w': None,
               'saturated': shunt_saturated(raw)}
        if not out['saturated']:
            amps = shunt / self.shunt_ohm
            out.update(current_a=round(amps, 4), power_w=round(volts * amps, 3))
        return out
