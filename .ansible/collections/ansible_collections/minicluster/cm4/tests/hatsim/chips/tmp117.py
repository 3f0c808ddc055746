# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""TI TMP117 temperature sensor, one per node card (datasheet SNOSD82).

The Temperature Result register reads 0x8000 (-256 degC) from power-up until the first conversion
completes. With the power-up defaults (CONV=100b, AVG=01b: eight averaged conversions every
second) that is the power-on reset time plus 8 x 15.5 ms, about 126 ms; later results arrive once
per conversion cycle.
"""

from __future__ import annotations

from hatsim.chips.base import PointerRegisters16

TEMP_RESULT = 0x00
CONFIGURATION = 0x01
THIGH_LIMIT = 0x02
TLOW_LIMIT = 0x03
EEPROM_UL = 0x04
EEPROM1 = 0x05
EEPROM2 = 0x06
TEMP_OFFSET = 0x07
EEPROM3 = 0x08
DEVICE_ID = 0x0F

DEVICE_ID_VALUE = 0x0117
CONFIGURATION_DEFAULT = 0x0220
THIGH_DEFAULT = 0x6000
TLOW_DEFAULT = 0x8000
RESULT_RESET = 0x8000
LSB_C = 0.0078125

HIGH_ALERT = 0x8000
LOW_ALERT = 0x4000
DATA_READY = 0x2000
EEPROM_BUSY = 0x1000
SOFT_RESET = 0x0002
CONFIG_WRITABLE = 0x0FFC & ~SOFT_RESET
EUN = 0x8000

POWER_ON_RESET_S = 0.0015
SINGLE_CONVERSION_S = 0.0155
AVERAGES = (1, 8, 32, 64)
# Conversion cycle time in seconds by CONV (row) and AVG (column), datasheet table 7-7.
CYCLE_S = (
    (0.0155, 0.125, 0.5, 1.0),
    (0.125, 0.125, 0.5, 1.0),
    (0.25, 0.25, 0.5, 1.0),
    (0.5, 0.5, 0.5, 1.0),
    (1.0, 1.0, 1.0, 1.0),
    (4.0, 4.0, 4.0, 4.0),
    (8.0, 8.0, 8.0, 8.0),
    (16.0, 16.0, 16.0, 16.0),
)
MOD_CONTINUOUS = (0, 2)
MOD_SHUTDOWN = 1
MOD_ONE_SHOT = 3


def temperature_register(celsius):
    value = int(round(celsius / LSB_C))
    return max(-32768, min(32767, value)) & 0xFFFF


def celsius(register):
    value = register - 0x10000 if register & 0x8000 else register
    return value * LSB_C


class TMP117(PointerRegisters16):
    name = 'TMP117'

    def __init__(self, temperature, now):
        """temperature() -> the die temperature in degC right now."""
        super(TMP117, self).__init__()
        self.temperature = temperature
        self.eeprom1 = 0
        self.eeprom2 = 0
        self.eeprom3 = 0
        self.power_up(now)

    def power_up(self, now):
        self.pointer = 0
        self.config = CONFIGURATION_DEFAULT
        self.thigh = THIGH_DEFAULT
        self.tlow = TLOW_DEFAULT
        self.offset = 0
        self.eeprom_ul = 0
        self.result = RESULT_RESET
        self.conversions = 0
        self._cycle_start = now + POWER_ON_RESET_S

    # -- conversions ---------------------------------------------------------------------------
    def mod(self):
        return (self.config >> 10) & 0x3

    def _timing(self):
        conv = (self.config >> 7) & 0x7
        avg = (self.config >> 5) & 0x3
        return AVERAGES[avg] * SINGLE_CONVERSION_S, max(CYCLE_S[conv][avg], AVERAGES[avg] * SINGLE_CONVERSION_S)

    def _convert(self, now):
        mod = self.mod()
        if mod == MOD_SHUTDOWN:
            return
        active, cycle = self._timing()
        if mod == MOD_ONE_SHOT:
            if now >= self._cycle_start + active:
                self._complete()
                self.config = (self.config & ~0x0C00) | (MOD_SHUTDOWN << 10)
            return
        first = self._cycle_start + active
        if now < first:
            return
        done = int((now - first) / cycle) + 1
        if done > self.conversions:
            self.conversions = done
            self._complete()

    def _complete(self):
        value = self.temperature() + celsius(self.offset)
        self.result = temperature_register(value)
        flags = DATA_READY
        if not self.config & 0x0010:  # T/nA = 0: alert mode
            if value > celsius(self.thigh):
                flags |= HIGH_ALERT
            if value < celsius(self.tlow):
                flags |= LOW_ALERT
        self.config |= flags

    # -- registers -----------------------------------------------------------------------------
    def read_register(self, reg, now):
        self._convert(now)
        if reg == TEMP_RESULT:
            self.config &= ~DATA_READY
            return self.result
        if reg == CONFIGURATION:
            value = self.config
            self.config &= ~(DATA_READY | HIGH_ALERT | LOW_ALERT)  # flags clear when read
            return value
        if reg == THIGH_LIMIT:
            return self.thigh
        if reg == TLOW_LIMIT:
            return self.tlow
        if reg == EEPROM_UL:
            return self.eeprom_ul
        if reg == EEPROM1:
            return self.eeprom1
        if reg == EEPROM2:
            return self.eeprom2
        if reg == TEMP_OFFSET:
            return self.offset
        if reg == EEPROM3:
            return self.eeprom3
        if reg == DEVICE_ID:
            return DEVICE_ID_VALUE
        return 0

    def write_register(self, reg, value, now):
        self._convert(now)
        if reg == CONFIGURATION:
            if value & SOFT_RESET:
                self.power_up(now)
                return
            self.config = (self.config & 0xF000) | (value & CONFIG_WRITABLE)
            # A new mode or timing starts a fresh conversion cycle.
            self._cycle_start = now
            self.conversions = 0
        elif reg == THIGH_LIMIT:
            self.thigh = value
        elif reg == TLOW_LIMIT:
            self.tlow = value
        elif reg == TEMP_OFFSET:
            self.offset = value
        elif reg == EEPROM_UL:
            self.eeprom_ul = value & EUN
        elif reg in (EEPROM1, EEPROM2, EEPROM3) and self.eeprom_ul & EUN:
            setattr(self, {EEPROM1: 'eeprom1', EEPROM2: 'eeprom2', EEPROM3: 'eeprom3'}[reg], value)

    def snapshot(self):
        return {'configuration': self.config, 'result': self.result, 'conversions': self.conversions}
