# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""TI INA226 current/power monitor on the hat's 12 V input (datasheet SBOS547).

Registers are 16-bit big-endian behind a register pointer. Results change only when a conversion
completes; Current and Power are computed from the Shunt Voltage and Calibration registers at that
moment, with the datasheet's integer equations:

    Current = ShuntVoltage x CAL / 2048        Power = Current x BusVoltage / 20000
"""

from __future__ import annotations

import random

from hatsim.chips.base import PointerRegisters16

CONFIGURATION = 0x00
SHUNT_VOLTAGE = 0x01
BUS_VOLTAGE = 0x02
POWER = 0x03
CURRENT = 0x04
CALIBRATION = 0x05
MASK_ENABLE = 0x06
ALERT_LIMIT = 0x07
MANUFACTURER_ID = 0xFE
DIE_ID = 0xFF

CONFIGURATION_DEFAULT = 0x4127
CONFIG_RST = 0x8000
CONFIG_FIXED = 0x4000  # bits 14:12 always read 100b
CONFIG_WRITABLE = 0x0FFF
MASK_ENABLE_WRITABLE = 0xFC03
CVRF = 0x0008  # conversion ready flag

SHUNT_LSB_V = 2.5e-6
BUS_LSB_V = 1.25e-3
AVERAGES = (1, 4, 16, 64, 128, 256, 512, 1024)
CONVERSION_US = (140, 204, 332, 588, 1100, 2116, 4156, 8244)


def shunt_register(volts):
    """Signed Shunt Voltage register for a voltage across the shunt."""
    return max(-32768, min(32767, int(round(volts / SHUNT_LSB_V))))


def bus_register(volts):
    return max(0, min(0x7FFF, int(round(volts / BUS_LSB_V))))


def current_register(shunt, cal):
    """Datasheet equation 3, integer arithmetic truncating toward zero, two's complement result."""
    value = abs(shunt) * cal // 2048
    value = -value if shunt < 0 else value
    return max(-32768, min(32767, value))


def power_register(current, bus):
    """Datasheet equation 4 (the Power register is unsigned)."""
    return min(0xFFFF, abs(current) * bus // 20000)


def to_u16(value):
    return value & 0xFFFF


class INA226(PointerRegisters16):
    name = 'INA226'

    def __init__(self, measure, rng=None):
        """measure() -> (current in A through the shunt, bus voltage in V, shunt ohms)."""
        super(INA226, self).__init__()
        self.measure = measure
        self.rng = rng or random.Random(226)
        self.reset_registers(0.0)

    def reset_registers(self, now):
        self.config = CONFIGURATION_DEFAULT
        self.calibration = 0
        self.mask_enable = 0
        self.alert_limit = 0
        self.shunt = 0
        self.bus = 0
        self.current = 0
        self.power = 0
        self.pointer = 0
        self._conversion_start = now
        self._single_done = False

    # -- conversions ---------------------------------------------------------------------------
    def mode(self):
        return self.config & 0x7

    def conversion_time(self):
        """Seconds for one complete (averaged) set of conversions in the current configuration."""
        avg = AVERAGES[(self.config >> 9) & 0x7]
        vbus = CONVERSION_US[(self.config >> 6) & 0x7]
        vsh = CONVERSION_US[(self.config >> 3) & 0x7]
        mode = self.mode() & 0x3
        total = (vbus if mode & 2 else 0) + (vsh if mode & 1 else 0)
        return avg * total / 1e6

    def _convert(self, now):
        mode = self.mode()
        if mode in (0, 4):
            return  # power-down: registers keep their last values
        period = self.conversion_time()
        if now < self._conversion_start + period:
            return
        if mode < 4:
            if self._single_done:
                return
            self._single_done = True
        else:
            # Continuous: the next conversion began when this one ended.
            elapsed = now - self._conversion_start
            self._conversion_start += period * int(elapsed / period) if period > 0 else elapsed
        amps, volts, ohms = self.measure()
        noise = 1.0 / max(1.0, AVERAGES[(self.config >> 9) & 0x7] ** 0.5)
        if mode & 1:
            self.shunt = shunt_register(amps * ohms + self.rng.gauss(0, 2 * SHUNT_LSB_V * noise))
        if mode & 2:
            self.bus = bus_register(volts + self.rng.gauss(0, 1.5 * BUS_LSB_V * noise))
        self.current = current_register(self.shunt, self.calibration)
        self.power = power_register(self.current, self.bus)
        self.mask_enable |= CVRF

    # -- registers -----------------------------------------------------------------------------
    def read_register(self, reg, now):
        self._convert(now)
        if reg == CONFIGURATION:
            return self.config
        if reg == SHUNT_VOLTAGE:
            return to_u16(self.shunt)
        if reg == BUS_VOLTAGE:
            return self.bus
        if reg == POWER:
            return self.power
        if reg == CURRENT:
            return to_u16(self.current)
        if reg == CALIBRATION:
            return self.calibration
        if reg == MASK_ENABLE:
            value = self.mask_enable
            self.mask_enable &= ~CVRF  # reading Mask/Enable clears the conversion ready flag
            return value
        if reg == ALERT_LIMIT:
            return self.alert_limit
        if reg == MANUFACTURER_ID:
            return 0x5449
        if reg == DIE_ID:
            return 0x2260
        return 0

    def write_register(self, reg, value, now):
        self._convert(now)
        if reg == CONFIGURATION:
            if value & CONFIG_RST:
                self.reset_registers(now)
                return
            self.config = CONFIG_FIXED | (value & CONFIG_WRITABLE)
            # A configuration write restarts conversions (and triggers a single-shot one).
            self._conversion_start = now
            self._single_done = False
            self.mask_enable &= ~CVRF
        elif reg == CALIBRATION:
            self.calibration = value & 0x7FFF  # bit 15 is reserved and reads 0
        elif reg == MASK_ENABLE:
            self.mask_enable = (self.mask_enable & ~MASK_ENABLE_WRITABLE) | (value & MASK_ENABLE_WRITABLE)
        elif reg == ALERT_LIMIT:
            self.alert_limit = value
        # Result and ID registers are read-only: writes are ignored.

    def snapshot(self):
        return {
            'configuration': self.config, 'shunt_voltage': to_u16(self.shunt), 'bus_voltage': self.bus,
            'power': self.power, 'current': to_u16(self.current), 'calibration': self.calibration,
            'mask_enable': self.mask_enable, 'alert_limit': self.alert_limit,
        }
