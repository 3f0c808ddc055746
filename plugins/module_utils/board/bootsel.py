# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Installing firmware on the hat's RP2040 through its boot ROM (BOOTSEL), from the controller.

The controller has two lines to the RP2040: Pi GPIO25 drives its RUN (low = reset; a reset drops
EN on every node) and Pi GPIO21 pulls its QSPI_SS low through 1 kOhm. Held low while RUN rises,
the boot ROM starts instead of the flash and enumerates as a USB drive (2e8a:0003, SCSI "RPI"
"RP2", an MBR with one FAT16 partition labelled RPI-RP2) behind the hub's port 1. It takes UF2
blocks written to any sector, so the image is written to the raw drive without mounting it. It
reboots about a second after the last block, sampling QSPI_SS again: BOOTSEL is released as soon
as the boot ROM has started, or it would come back to itself.

UF2 (Microsoft's USB flashing format): 512-byte blocks, magic numbers at both ends, a family ID
naming the chip, 256 payload bytes per block for a flash address.
"""

from __future__ import annotations

import hashlib
import os
import struct

from ansible_collections.minicluster.cm4.plugins.module_utils.board import usb
from ansible_collections.minicluster.cm4.plugins.module_utils.flash import disk

UF2_MAGIC_START0 = 0x0A324655
UF2_MAGIC_START1 = 0x9E5D5157
UF2_MAGIC_END = 0x0AB16F30
UF2_FLAG_NOT_MAIN_FLASH = 0x00000001
UF2_FLAG_FAMILY_ID = 0x00002000
RP2040_FAMILY_ID = 0xE48BFF56
UF2_BLOCK = 512
RP2040_PAYLOAD = 256
FLASH_START = 0x10000000
FLASH_END = 0x11000000  # 16 MiB of XIP flash address space
MAX_UF2_BYTES = (FLASH_END - FLASH_START) // RP2040_PAYLOAD * UF2_BLOCK

RUN_LINE = 25      # Pi GPIO25 -> RP2040 RUN
BOOTSEL_LINE = 21  # Pi GPIO21 -> RP2040 QSPI_SS through 1 kOhm
SWCLK_LINE = 19
SWDIO_LINE = 26

DRIVE_LABEL = b'RPI-RP2'
SECTOR = 512
DRIVE_IDENTITY = ('the RP2040 boot ROM drive (vendor RPI, model RP2)',
                  lambda vendor, model: vendor.strip() == 'RPI' and model.strip().startswith('RP2'))


class BootselError(Exception):
    """Something that stops a firmware install, with a message for the operator."""


def check_uf2(path):
    """Validate a UF2 image for the RP2040 before anything touches the hat.

    Every block must carry the three UF2 magic numbers and the RP2040 family ID, write 256 bytes to
    a page-aligned flash address, and the blocks must be one complete image. Returns (summary, bytes).
    """
    where = 'uf2 %s' % path
    try:
        with open(path, 'rb') as f:
            data = f.read(MAX_UF2_BYTES + 1)
    except (IOError, OSError) as exc:
        raise BootselError('cannot read %s: %s' % (where, exc.strerror or exc))
    if not data:
        raise BootselError('%s is empty: not a UF2 file' % where)
    if len(data) > MAX_UF2_BYTES:
        raise BootselError('%s is larger than any RP2040 image (%d bytes at most)' % (where, MAX_UF2_BYTES))
    if len(data) % UF2_BLOCK:
        raise BootselError('%s is %d bytes, not a whole number of 512-byte UF2 blocks: not a UF2 file' % (where, len(data)))
    total = None
    seen = set()
    targets = set()
    for index in range(len(data) // UF2_BLOCK):
        block = data[index * UF2_BLOCK:(index + 1) * UF2_BLOCK]
        start0, start1, flags, target, size, block_no, num_blocks, family = struct.unpack_from('<8I', block)
        end, = struct.unpack_from('<I', block, UF2_BLOCK - 4)
        at = 'block %d (offset %d)' % (index, index * UF2_BLOCK)
        if (start0, start1, end) != (UF2_MAGIC_START0, UF2_MAGIC_START1, UF2_MAGIC_END):
            raise BootselError('%s: %s lacks the UF2 magic numbers (0x%08X 0x%08X ... 0x%08X): not a UF2 file'
                               % (where, at, UF2_MAGIC_START0, UF2_MAGIC_START1, UF2_MAGIC_END))
        if not flags & UF2_FLAG_FAMILY_ID:
            raise BootselError('%s: %s names no chip family: refusing an image not marked for the RP2040 (0x%08X)'
                               % (where, at, RP2040_FAMILY_ID))
        if family != RP2040_FAMILY_ID:
            raise BootselError('%s: %s is for chip family 0x%08X, not the RP2040 (0x%08X): wrong firmware file'
                               % (where, at, family, RP2040_FAMILY_ID))
        if flags & UF2_FLAG_NOT_MAIN_FLASH:
            raise BootselError('%s: %s is marked "not main flash": not a plain RP2040 flash image' % (where, at))
        if size != RP2040_PAYLOAD or target % RP2040_PAYLOAD or not FLASH_START <= target < FLASH_END:
            raise BootselError('%s: %s writes %d bytes to 0x%08X: the RP2040 boot ROM takes 256-byte pages in flash '
                               '(0x%08X..0x%08X)' % (where, at, size, target, FLASH_START, FLASH_END))
        if total is None:
            total = num_blocks
        if num_blocks != total or block_no >= total or block_no in seen or target in targets:
            raise BootselError('%s: %s is block %d of %d, inconsistent with the blocks before it: a damaged or '
                               'concatenated UF2' % (where, at, block_no, num_blocks))
        seen.add(block_no)
        targets.add(target)
    if len(seen) != total:
        raise BootselError('%s holds %d of its %d blocks: an incomplete UF2' % (where, len(seen), total))
    return ({'path': path, 'blocks': total, 'size': len(data), 'sha256': hashlib.sha256(data).hexdigest(),
             'flash_start': '0x%08X' % min(targets), 'flash_end': '0x%08X' % (max(targets) + RP2040_PAYLOAD)}, data)


def find_hub(root, hub_path=None):
    """sysfs path of the hat's USB2517: proven by the RP2040 on its port 1 (board/usb.py), or, when
    no hub path is given, the only USB2517 whose port 1 is empty (an RP2040 with no firmware)."""
    try:
        return usb.find_hub(root, hub_path).path
    except usb.UsbError as exc:
        candidates = usb.hubs(root)
        if hub_path is None and len(candidates) == 1 and \
                usb.device(root, usb.port_path(candidates[0], usb.RP2040_PORT)) is None:
            return candidates[0]
        raise BootselError('%s; without the hub, program the RP2040 over SWD' % exc)


def drive_geometry(device):
    """Check the drive's MBR and FAT16 boot sector say RPI-RP2; return the first sector of its data area."""
    try:
        with open(device, 'rb') as f:
            mbr = f.read(SECTOR)
            if len(mbr) != SECTOR or mbr[510:512] != b'\x55\xaa':
                raise BootselError('%s has no partition table where the RP2040 boot ROM drive has one: refusing it' % device)
            ptype = mbr[446 + 4]
            start, count = struct.unpack_from('<II', mbr, 446 + 8)
            if ptype not in (0x04, 0x06, 0x0E) or not start:
                raise BootselError('%s: first partition is type 0x%02x at sector %d, not the boot ROM\'s FAT16: refusing it'
                                   % (device, ptype, start))
            f.seek(start * SECTOR)
            boot = f.read(SECTOR)
    except (IOError, OSError) as exc:
        raise BootselError('cannot read %s: %s' % (device, exc.strerror or exc))
    if len(boot) != SECTOR or boot[0x2B:0x2B + 11].rstrip(b' ') != DRIVE_LABEL or not boot[0x36:0x3E].startswith(b'FAT'):
        raise BootselError('%s: its FAT volume is not labelled RPI-RP2: not the RP2040 boot ROM drive, refusing it' % device)
    per_sector, per_cluster, reserved, fats, root_entries = struct.unpack_from('<HBHBH', boot, 11)
    per_fat, = struct.unpack_from('<H', boot, 22)
    if per_sector != SECTOR or not per_cluster or not fats:
        raise BootselError('%s: implausible FAT geometry (sector %d bytes): refusing it' % (device, per_sector))
    data = start + reserved + fats * per_fat + (root_entries * 32 + SECTOR - 1) // SECTOR
    # Past the boot ROM's two virtual files (INDEX.HTM, INFO_UF2.TXT), as a copied file would land.
    return {'first_sector': data + 2 * per_cluster, 'sectors': start + count}


def probe_drive(root, hub):
    """The RPI-RP2 drive behind the hub's port 1, proven to be it, or None while it is not there."""
    found = usb.rp2040(root, hub)
    if found is None or found['mode'] != 'bootsel':
        return None
    info = disk.probe(usb.port_path(hub, usb.RP2040_PORT), root, identity=DRIVE_IDENTITY)
    if info is None:
        return None
    geometry = drive_geometry(info.real_path)
    return info, geometry


def write_uf2(info, geometry, data, root):
    """Write the UF2 blocks to consecutive sectors of the drive, after proving it is still there."""
    if geometry['first_sector'] * SECTOR + len(data) > info.size:
        raise BootselError('the UF2 (%d bytes) does not fit on %s' % (len(data), info.path))
    try:
        now = disk.probe(info.usb_path, root, identity=DRIVE_IDENTITY)
    except disk.DiskError:
        now = None
    if now is None or (now.sysfs, now.dev, now.real_path) != (info.sysfs, info.dev, info.real_path):
        raise BootselError('the RPI-RP2 drive %s went away before the UF2 was written' % info.path)
    fd = os.open(info.real_path, os.O_WRONLY | getattr(os, 'O_CLOEXEC', 0))
    late_error = None
    try:
        os.lseek(fd, geometry['first_sector'] * SECTOR, os.SEEK_SET)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        try:
            os.fsync(fd)
        except OSError as exc:
            # The boot ROM may reboot and leave the bus as the last blocks land: judged by the console.
            late_error = exc
    finally:
        os.close(fd)
    return late_error
