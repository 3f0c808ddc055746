# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""TI TMP117 temperature sensor: one under each node's SoC."""

from __future__ import annotations

from ansible_collections.minicluster.cm4.plugins.module_utils.transports.i2c import Device

TMP117_TEMP_RESULT = 0x00
TMP117_CONFIGURATION = 0x01
TMP117_THIGH_LIMIT = 0x02
TMP117_TLOW_LIMIT = 0x03
TMP117_DEVICE_ID = 0x0F

DEVICE_ID = 0x117
DEVICE_ID_MASK = 0x0FFF
TEMP_LSB_C = 0.0078125
# The result register holds this until the first conversion after power-up completes.
RESET_VALUE = 0x8000
# Node (slot) -> address: each card pulls ADD0 up, the hat leaves it open on slot 1 and ties it to
# GND, SCL and SDA on slots 2, 3 and 4 (ADD0 to V+/GND/SDA/SCL selects 0x49/0x48/0x4A/0x4B).
DEFAULT_ADDRESSES = {1: 0x49, 2: 0x48, 3: 0x4B, 4: 0x4A}


def celsius(raw):
    """Two's complement result register -> degrees Celsius; None for the power-up value."""
    if raw == RESET_VALUE:
        return None
    if raw & 0x8000:
        raw -= 0x10000
    return raw * TEMP_LSB_C


class TMP117(Device):

    def identify(self):
        return self.read_u16_be(TMP117_DEVICE_ID) & DEVICE_ID_MASK == DEVICE_ID

    def temperature(self):
        """Degrees Celsius, or None before the first conversion."""
        value = celsius(self.read_u16_be(TMP117_TEMP_RESULT))
        return None if value is None else round(value, 3)
