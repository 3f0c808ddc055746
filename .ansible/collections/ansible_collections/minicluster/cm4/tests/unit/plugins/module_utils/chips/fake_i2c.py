# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""In-memory I2C doubles: a bus running combined transactions, a 24LC08 and an EMC2301."""

from __future__ import annotations

import errno

from ansible_collections.minicluster.cm4.plugins.module_utils.transports import i2c


class FakeBus(object):
    """transfer(msgs) like the transport's buses: a NACK raises OSError(ENXIO) after the earlier messages ran."""

    name = 'fake'

    def __init__(self, devices=None):
        self.devices = {}
        for addr, dev in (devices or {}).items():
            self.attach(addr, dev)
        self.log = []
        self.closed = False

    def attach(self, addr, dev):
        self.devices[addr] = dev

    def transfer(self, msgs):
        self.log.append(list(msgs))
        touched = []
        out = []
        try:
            for index, m in enumerate(msgs):
                if index:
                    for dev in touched:
                        dev.repeated_start()
                dev = self.devices.get(m.addr)
                if dev is None or not dev.acks(m.addr):
                    raise OSError(errno.ENXIO, 'no acknowledge from I2C address 0x%02x' % m.addr)
                if dev not in touched:
                    touched.append(dev)
                if m.length is None:
                    dev.write(m.addr, bytes(m.data))
                else:
                    out.append(bytes(dev.read(m.addr, m.length)))
        finally:
            for dev in touched:
                dev.stop()
        return out

    def writes(self, addr=None):
        """Write messages carrying data (more than the address byte), to addr or any address."""
        return [m for t in self.log for m in t
                if m.length is None and len(m.data) > 1 and (addr is None or m.addr == addr)]

    def close(self):
        self.closed = True


class Fake24LC08(object):
    """1 KiB in four blocks at 0x50..0x53; 16-byte pages that wrap; busy for a number of addressings after a write.

    busy_polls: how many times the chip refuses its address after each page write (the write cycle).
    stuck_pages: page offsets whose writes never take (a worn cell), for the failure path.
    """

    BASE = 0x50

    def __init__(self, data=None, busy_polls=2, stuck_pages=(), flaky_pages=()):
        self.data = bytearray(data if data is not None else b'\xff' * 1024)
        self.busy_polls = busy_polls
        self.busy = 0
        self.counter = 0
        self.pending = None
        self.page_writes = []
        self.stuck_pages = set(stuck_pages)
        self.flaky_pages = dict((p, 1) for p in flaky_pages)  # fail this many times, then work
        self.nacks = 0

    def acks(self, addr):
        if self.busy:
            self.busy -= 1
            self.nacks += 1
            return False
        return True

    def write(self, addr, data):
        if not data:
            return
        self.counter = (addr - self.BASE) * 256 + data[0]
        if len(data) > 1:
            base = self.counter & ~0x0F
            offset = self.counter & 0x0F
            self.pending = (base, {})
            for value in data[1:]:
                self.pending[1][offset] = value
                offset = (offset + 1) % 16

    def read(self, addr, count):
        out = []
        for _index in range(count):
            out.append(self.data[self.counter])
            self.counter = (self.counter + 1) % 1024
        return out

    def repeated_start(self):
        self.pending = None

    def stop(self):
        if self.pending is None:
            return
        base, buffered = self.pending
        self.pending = None
        self.page_writes.append(base)
        if base in self.stuck_pages:
            pass
        elif self.flaky_pages.get(base):
            self.flaky_pages[base] -= 1
        else:
            for offset, value in buffered.items():
                self.data[base + offset] = value
        self.busy = self.busy_polls


class FakeEMC2301(object):
    """A register file with the EMC2301's identity, defaults, read-only registers and latched tach reading."""

    DEFAULTS = {0x20: 0x40, 0x2D: 0x00, 0x30: 0x00, 0x31: 0x01, 0x32: 0x2B, 0x33: 0x28, 0x35: 0x2A, 0x36: 0x19,
                0x37: 0x10, 0x38: 0x66, 0x39: 0xF5, 0x3C: 0xF8, 0x3D: 0xFF, 0x3E: 0xFF, 0x3F: 0xF8,
                0xEF: 0x00, 0xFD: 0x37, 0xFE: 0x5D, 0xFF: 0x80}
    READ_ONLY = frozenset((0x24, 0x25, 0x26, 0x27, 0x3E, 0x3F, 0xFC, 0xFD, 0xFE, 0xFF))

    def __init__(self, product=0x37, tach_count=0x1FFF):
        self.regs = bytearray(256)
        for reg, value in self.DEFAULTS.items():
            self.regs[reg] = value
        self.regs[0xFD] = product
        self.pointer = 0
        self.tach_count = tach_count
        self.latched = None
        self.written = []

    def acks(self, addr):
        return True

    def write(self, addr, data):
        if not data:
            return
        self.pointer = data[0]
        for value in data[1:]:
            self.written.append((self.pointer, value))
            if self.pointer not in self.READ_ONLY:
                if self.pointer == 0x30 and self.regs[0x32] & 0x80:
                    pass  # read-only while RPM control runs
                else:
                    self.regs[self.pointer] = value & (0xF8 if self.pointer == 0x3C else 0xFF)
            self.pointer = (self.pointer + 1) & 0xFF

    def read(self, addr, count):
        out = []
        for _index in range(count):
            reg = self.pointer
            word = self.tach_count << 3
            if reg == 0x3E:
                self.latched = word & 0xFF
                out.append(word >> 8)
            elif reg == 0x3F:
                out.append(self.latched if self.latched is not None else 0x00)
                self.latched = None
            else:
                out.append(self.regs[reg])
            self.pointer = (self.pointer + 1) & 0xFF
        return out

    def repeated_start(self):
        pass

    def stop(self):
        pass


def nack_is_enxio():
    """The transport's own test of a NACK, so the doubles stay in step with it."""
    return i2c.is_nack(OSError(errno.ENXIO, 'x'))
