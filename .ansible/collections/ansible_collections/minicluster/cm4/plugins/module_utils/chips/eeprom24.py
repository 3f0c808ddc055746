# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Microchip 24xx I2C EEPROMs with one address byte (24LC01..24LC16), over the I2C transport.

The 24LC08 holds 1 KiB as four 256-byte blocks that answer at 0x50..0x53 (the block is in the
device address, the offset in the one address byte). Writes go in 16-byte pages: a write that runs
past the end of its page wraps to the page's start, so every write here is split on page
boundaries. After a page write the chip runs its write cycle (up to 5 ms) without acknowledging
its address: the driver polls until it answers again (ACK polling), with a timeout.

update() writes only the pages that differ, reads each back, retries a failed page once, and
verifies the whole range at the end. Errors name the page.
"""

from __future__ import annotations

import time

from ansible_collections.minicluster.cm4.plugins.module_utils.transports import i2c

PAGE_SIZE = 16
BLOCK_SIZE = 256
SIZE_24LC08 = 1024
BASE_ADDRESS = 0x50
# The datasheet's maximum write cycle is 5 ms; the margin covers a loaded controller.
WRITE_CYCLE_TIMEOUT = 0.25
POLL_INTERVAL = 0.0005
MIN_POLLS = 3


class EepromError(Exception):
    """A read or write that failed. page is the page's offset when a page failed."""

    def __init__(self, msg, page=None, addr=None):
        super(EepromError, self).__init__(msg)
        self.page = page
        self.addr = addr


class EepromNotResponding(EepromError):
    """The EEPROM's address is not acknowledged at all (absent, or not connected to this bus)."""


def split_pages(offset, data, page_size=PAGE_SIZE):
    """[(offset, chunk)] covering data written at offset, no chunk crossing a page boundary."""
    chunks = []
    pos = 0
    while pos < len(data):
        start = offset + pos
        room = page_size - (start % page_size)
        chunk = bytes(data[pos:pos + room])
        chunks.append((start, chunk))
        pos += len(chunk)
    return chunks


def differing_pages(offset, current, desired, page_size=PAGE_SIZE):
    """[(offset, chunk of desired)] for the page-aligned pieces of desired that differ from current."""
    if len(current) != len(desired):
        raise ValueError('current and desired contents differ in length')
    out = []
    for start, chunk in split_pages(offset, desired, page_size):
        pos = start - offset
        if bytes(current[pos:pos + len(chunk)]) != chunk:
            out.append((start, chunk))
    return out


class Eeprom24(object):
    """One 24xx chip; its blocks answer at base_addr, base_addr + 1, ..."""

    def __init__(self, bus, base_addr=BASE_ADDRESS, size=SIZE_24LC08, page_size=PAGE_SIZE,
                 block_size=BLOCK_SIZE, write_timeout=WRITE_CYCLE_TIMEOUT, poll_interval=POLL_INTERVAL,
                 clock=time.monotonic, sleep=time.sleep):
        self.bus = bus
        self.base_addr = base_addr
        self.size = size
        self.page_size = page_size
        self.block_size = block_size
        self.write_timeout = write_timeout
        self.poll_interval = poll_interval
        self._clock = clock
        self._sleep = sleep

    def locate(self, offset):
        """(I2C address, address byte) of a byte offset in the chip."""
        return self.base_addr + offset // self.block_size, offset % self.block_size

    def where(self, offset):
        addr, word = self.locate(offset)
        return 'offset 0x%03x (I2C address 0x%02x, byte 0x%02x)' % (offset, addr, word)

    def _check_range(self, offset, length):
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError('0x%x bytes at offset 0x%x do not fit in a %d-byte EEPROM' % (length, offset, self.size))

    def _read_raw(self, offset, length):
        """One random read per block crossed. NACKs propagate as OSError."""
        out = bytearray()
        while length > 0:
            addr, word = self.locate(offset)
            n = min(length, self.block_size - word)
            out += self.bus.transfer([i2c.write(addr, [word]), i2c.read(addr, n)])[0]
            offset += n
            length -= n
        return bytes(out)

    def read(self, offset=0, length=None):
        """length bytes from offset (the whole chip by default)."""
        if length is None:
            length = self.size - offset
        self._check_range(offset, length)
        try:
            return self._read_raw(offset, length)
        except OSError as exc:
            if i2c.is_nack(exc):
                addr = self.locate(offset)[0]
                raise EepromNotResponding('no acknowledge from the EEPROM at I2C address 0x%02x' % addr, addr=addr)
            raise

    def _poll_read(self, offset, length):
        """Read once the chip acknowledges again after a write cycle (ACK polling), or time out."""
        deadline = self._clock() + self.write_timeout
        polls = 0
        while True:
            polls += 1
            try:
                return self._read_raw(offset, length)
            except OSError as exc:
                if not i2c.is_nack(exc):
                    raise
                if polls >= MIN_POLLS and self._clock() >= deadline:
                    raise EepromError('the EEPROM did not acknowledge within %g s after writing the page at %s'
                                      % (self.write_timeout, self.where(offset)),
                                      page=offset - offset % self.page_size, addr=self.locate(offset)[0])
                self._sleep(self.poll_interval)

    def write_page(self, offset, chunk):
        """Write a chunk that lies within one page, wait for the write cycle and return what reads back."""
        if not chunk:
            return b''
        page = offset - offset % self.page_size
        if offset + len(chunk) > page + self.page_size:
            raise ValueError('%d bytes at offset 0x%x cross a %d-byte page boundary' % (len(chunk), offset, self.page_size))
        self._check_range(offset, len(chunk))
        addr, word = self.locate(offset)
        self.bus.transfer([i2c.write(addr, bytes([word]) + bytes(chunk))])
        return self._poll_read(offset, len(chunk))

    def _write_verified(self, offset, chunk, retries):
        page = offset - offset % self.page_size
        problem = None
        for _attempt in range(1 + retries):
            try:
                if self.write_page(offset, chunk) == bytes(chunk):
                    return
                problem = 'it read back different bytes'
            except EepromError as exc:
                problem = str(exc)
            except OSError as exc:
                if not i2c.is_nack(exc):
                    raise
                problem = 'the EEPROM did not acknowledge the write'
        raise EepromError('writing the EEPROM page at %s failed twice: %s' % (self.where(page), problem),
                          page=page, addr=self.locate(page)[0])

    def update(self, offset, data, retries=1, current=None):
        """Make the bytes at offset equal data, writing only the pages that differ.

        current is what the range holds now when the caller has just read it. Returns the list of
        page offsets written. Raises EepromError naming the page when a page cannot be written or
        the final read-back differs.
        """
        data = bytes(data)
        self._check_range(offset, len(data))
        if current is None:
            current = self.read(offset, len(data))
        written = []
        for start, chunk in differing_pages(offset, current, data, self.page_size):
            self._write_verified(start, chunk, retries)
            written.append(start - start % self.page_size)
        if written:
            after = self.read(offset, len(data))
            bad = differing_pages(offset, after, data, self.page_size)
            if bad:
                page = bad[0][0] - bad[0][0] % self.page_size
                raise EepromError('the EEPROM page at %s reads back different bytes after writing'
                                  % self.where(page), page=page, addr=self.locate(page)[0])
        return written
