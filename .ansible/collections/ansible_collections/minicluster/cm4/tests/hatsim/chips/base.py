# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What all I2C targets share."""

from __future__ import annotations


class I2CTarget(object):
    """A device on a bus. Subclasses override what their datasheet defines."""

    name = 'device'

    def acks(self, now):  # pylint: disable=unused-argument
        return True

    def write(self, data, now):
        raise NotImplementedError

    def read(self, count, now):
        raise NotImplementedError

    def repeated_start(self):
        pass

    def stop(self, now):
        pass


class PointerRegisters16(I2CTarget):
    """Chips with an 8-bit register pointer and 16-bit big-endian registers (TI INA226, TMP117).

    A write of one byte sets the pointer; three bytes set the pointer and write the register; a
    write of two bytes leaves the pointer set and changes nothing (an incomplete word). A read
    returns the pointed register most significant byte first; the pointer does not advance, so a
    longer read repeats the register.
    """

    def __init__(self):
        self.pointer = 0

    def read_register(self, reg, now):
        raise NotImplementedError

    def write_register(self, reg, value, now):
        raise NotImplementedError

    def write(self, data, now):
        if not data:
            return
        self.pointer = data[0]
        if len(data) >= 3:
            self.write_register(data[0], (data[1] << 8) | data[2], now)

    def read(self, count, now):
        out = []
        word = None
        for i in range(count):
            if i % 2 == 0:
                word = self.read_register(self.pointer, now) & 0xFFFF
                out.append(word >> 8)
            else:
                out.append(word & 0xFF)
        return out
