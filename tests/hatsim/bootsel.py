# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's recovery lines to the RP2040 and the RP2040 boot ROM's UF2 drive.

GPIO (`DIR/gpio.sock`, JSON lines, the simulator side of plugins/module_utils/transports/gpio.py):

  {"op": "output", "lines": {"21": 0, "25": 1}}  drive lines (the kernel keeps a line as last set)
  {"op": "input", "lines": [21, 25]}             release lines to inputs (their pull-ups win)
  {"op": "get", "lines": [21, 25]}               -> {"values": {"21": 0, "25": 1}} (levels)

Pi GPIO25 drives the RP2040's RUN (low holds it in reset, which drops EN on every node), GPIO21
pulls its QSPI_SS low through 1 kOhm: held low as RUN rises, the boot ROM starts instead of the
flash and shows the UF2 drive (USB 2e8a:0003, SCSI "RPI" "RP2", an MBR whose FAT16 partition is
labelled RPI-RP2), behind the hub's port 1. Both lines have pull-ups: released, they read high.

The drive is a sparse file. As the boot ROM does, it takes UF2 blocks written to any sector: once
every block of a flash image for the RP2040 family has arrived, it reboots 300 ms later, sampling
QSPI_SS again (still held low: the boot ROM again). The simulator runs only the stock console
firmware, so any complete RP2040 image brings the console back; state.json records its SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import struct

RUN_LINE = 25
BOOTSEL_LINE = 21
SWCLK_LINE = 19
SWDIO_LINE = 26
LINES = (SWCLK_LINE, BOOTSEL_LINE, RUN_LINE, SWDIO_LINE)

UF2_MAGIC_START0 = 0x0A324655
UF2_MAGIC_START1 = 0x9E5D5157
UF2_MAGIC_END = 0x0AB16F30
UF2_FLAG_NOT_MAIN_FLASH = 0x00000001
UF2_FLAG_FAMILY_ID = 0x00002000
RP2040_FAMILY = 0xE48BFF56
FLASH_START = 0x10000000
FLASH_END = 0x11000000

SECTOR = 512
DRIVE_SECTORS = 128 * 1024 * 1024 // SECTOR + 1
REBOOT_DELAY_S = 0.3


class Gpio(object):
    """Line levels of the Pi's header as far as the hat uses them."""

    def __init__(self, on_change):
        self.driven = {}  # line -> 0/1 while an output
        self.on_change = on_change

    def level(self, line):
        return self.driven.get(line, 1)

    def levels(self):
        return dict((str(line), self.level(line)) for line in LINES)

    @staticmethod
    def _line(value):
        line = int(value)
        if line not in LINES:
            raise ValueError('GPIO%s is not wired to the hat\'s RP2040 (lines %s)' % (value, ', '.join(map(str, LINES))))
        return line

    def handle(self, request):
        op = request.get('op')
        if op == 'output':
            lines = request.get('lines')
            if not isinstance(lines, dict) or not lines:
                raise ValueError('"output" needs "lines": {"21": 0, ...}')
            values = {}
            for key, value in lines.items():
                if value not in (0, 1) or isinstance(value, bool):
                    raise ValueError('GPIO%s: value must be 0 or 1' % key)
                values[self._line(key)] = value
            self.on_change(lambda: self.driven.update(values))
            return {'ok': True}
        if op in ('input', 'get'):
            lines = request.get('lines')
            if not isinstance(lines, list) or not lines:
                raise ValueError('"%s" needs "lines": [21, ...]' % op)
            numbers = [self._line(v) for v in lines]
            if op == 'input':
                self.on_change(lambda: [self.driven.pop(n, None) for n in numbers])
                return {'ok': True}
            return {'ok': True, 'values': dict((str(n), self.level(n)) for n in numbers)}
        raise ValueError('unknown op %r; known: output, input, get' % (op,))


def make_drive(path):
    """A fresh RPI-RP2 drive image: the MBR and FAT16 boot sector the RP2040 boot ROM presents."""
    cluster_sectors = 8
    volume = DRIVE_SECTORS - 1
    sectors_per_fat = 2 * ((volume // cluster_sectors) + SECTOR - 1) // SECTOR
    mbr = bytearray(SECTOR)
    mbr[446 + 4] = 0x0E  # FAT16 LBA
    struct.pack_into('<II', mbr, 446 + 8, 1, volume)
    mbr[510:512] = b'\x55\xaa'
    boot = bytearray(SECTOR)
    boot[0:3] = b'\xeb\x3c\x90'
    boot[3:11] = b'MSWIN4.1'
    struct.pack_into('<HBHBHHBHHHII', boot, 11, SECTOR, cluster_sectors, 1, 2, 512, 0, 0xF8, sectors_per_fat,
                     1, 1, 1, volume)
    boot[0x24:0x27] = b'\x00\x00\x29'
    boot[0x2B:0x36] = b'RPI-RP2    '
    boot[0x36:0x3E] = b'FAT16   '
    boot[510:512] = b'\x55\xaa'
    with open(path, 'wb') as f:
        f.write(bytes(mbr) + bytes(boot))
        f.truncate(DRIVE_SECTORS * SECTOR)


def parse_block(sector):
    """(block_no, num_blocks, target, payload) of a UF2 block the RP2040 boot ROM takes, else None."""
    if len(sector) != SECTOR:
        return None
    start0, start1, flags, target, size, block_no, num_blocks, family = struct.unpack_from('<8I', sector)
    end, = struct.unpack_from('<I', sector, SECTOR - 4)
    if (start0, start1, end) != (UF2_MAGIC_START0, UF2_MAGIC_START1, UF2_MAGIC_END):
        return None
    if flags & UF2_FLAG_NOT_MAIN_FLASH or (flags & UF2_FLAG_FAMILY_ID and family != RP2040_FAMILY):
        return None
    if size != 256 or target % 256 or not FLASH_START <= target < FLASH_END or block_no >= num_blocks:
        return None
    return block_no, num_blocks, target, bytes(sector[32:32 + size])


def complete_image(path):
    """SHA-256 of the flash image once every block of one UF2 has been written to the drive, else None."""
    blocks = {}
    total = None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        offset = 0
        while offset < end:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            start -= start % SECTOR
            os.lseek(fd, start, os.SEEK_SET)
            data = os.read(fd, stop - start)
            for i in range(0, len(data) - SECTOR + 1, SECTOR):
                block = parse_block(data[i:i + SECTOR])
                if block is None:
                    continue
                if total is not None and block[1] != total:
                    # A block of another image: the boot ROM starts over with the newest.
                    blocks = {}
                total = block[1]
                blocks[block[0]] = (block[2], block[3])
            offset = stop
    finally:
        os.close(fd)
    if total is None or len(blocks) != total:
        return None
    digest = hashlib.sha256()
    for dummy, (dummy2, payload) in sorted(blocks.items(), key=lambda item: item[1][0]):
        digest.update(payload)
    return digest.hexdigest()
