# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Microchip 24LC08B serial EEPROM: 1 KiB in four 256-byte blocks at 0x50..0x53 (datasheet DS21710).

* A write message is [word address, data...]. Data goes to the 16-byte page buffer; the address
  wraps within the page, so a write crossing a page boundary continues at the start of the same
  page, and past 16 bytes later bytes overwrite earlier ones (the last 16 win).
* The write cycle starts at the STOP that ends the transaction. A repeated START instead of a
  STOP abandons the buffered data (only the address pointer is kept): that is how a random read
  ([word address] then a read message) works.
* During the write cycle the chip acknowledges none of its four addresses.
* A read continues from the internal address counter and rolls over from 0x3FF to 0x000.
"""

from __future__ import annotations

SIZE = 1024
BLOCK = 256
PAGE = 16
BASE_ADDRESS = 0x50


class M24LC08(object):
    name = '24LC08'

    def __init__(self, data=None, write_cycle_s=0.005, on_commit=None):
        self.data = bytearray(data if data is not None else b'\xff' * SIZE)
        if len(self.data) != SIZE:
            raise ValueError('a 24LC08 image is %d bytes, not %d' % (SIZE, len(self.data)))
        self.write_cycle_s = write_cycle_s
        self.on_commit = on_commit
        self.counter = 0
        self.busy_until = 0.0
        self.page_writes = 0
        self.writes = []
        self._pending = None  # (page base, {offset: byte}, first address)

    def block(self, number):
        return EEPROMBlock(self, number)

    def busy(self, now):
        return now < self.busy_until

    # -- events from the block views ----------------------------------------------------------
    def write(self, block, data, now):  # pylint: disable=unused-argument
        if not data:
            return
        address = block * BLOCK + data[0]
        self.counter = address
        payload = data[1:]
        if not payload:
            return
        base = address & ~(PAGE - 1)
        offset = address & (PAGE - 1)
        if self._pending is None or self._pending[0] != base:
            self._pending = (base, {}, address)
        buffered = self._pending[1]
        for value in payload:
            buffered[offset] = value
            offset = (offset + 1) % PAGE
        self.counter = base + offset

    def read(self, count):
        out = []
        for dummy in range(count):
            out.append(self.data[self.counter])
            self.counter = (self.counter + 1) % SIZE
        return out

    def repeated_start(self):
        self._pending = None

    def stop(self, now):
        if self._pending is None:
            return
        base, buffered, first = self._pending
        self._pending = None
        for offset, value in buffered.items():
            self.data[base + offset] = value
        self.busy_until = now + self.write_cycle_s
        self.page_writes += 1
        self.writes.append({'page': base // PAGE, 'address': first, 'bytes': len(buffered)})
        if self.on_commit is not None:
            self.on_commit(self)

    def snapshot(self, max_writes=1000):
        return {
            'hex': bytes(self.data).hex(), 'page_writes': self.page_writes,
            'writes': self.writes[-max_writes:], 'address_counter': self.counter,
        }


class EEPROMBlock(object):
    """One of the four I2C addresses of the chip: the block number is the address's low bits."""

    name = '24LC08'

    def __init__(self, chip, number):
        self.chip = chip
        self.number = number

    def acks(self, now):
        return not self.chip.busy(now)

    def write(self, data, now):
        self.chip.write(self.number, data, now)

    def read(self, count, now):  # pylint: disable=unused-argument
        return self.chip.read(count)

    def repeated_start(self):
        self.chip.repeated_start()

    def stop(self, now):
        self.chip.stop(now)
