# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import struct

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.board import bootsel
from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.board.uf2_images import (
    SAMD21, make_uf2, uf2_block)


def write(tmp_path, data, name='fw.uf2'):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_a_complete_rp2040_image_passes(tmp_path):
    data, dummy = make_uf2(blocks=5)
    summary, got = bootsel.check_uf2(write(tmp_path, data))
    assert got == data
    assert (summary['blocks'], summary['size'], summary['flash_start'], summary['flash_end']) == \
        (5, 2560, '0x10000000', '0x10000500')


@pytest.mark.parametrize('mangle, message', [
    (lambda d: b'\x7fELF' + d[4:], 'lacks the UF2 magic numbers'),
    (lambda d: d[:-4] + b'\0\0\0\0', r'block 3 \(offset 1536\) lacks the UF2 magic numbers'),
    (lambda d: d[:-1], 'not a whole number of 512-byte UF2 blocks'),
    (lambda d: b'', 'is empty'),
    (lambda d: d[:512 * 3], 'holds 3 of its 4 blocks'),
    (lambda d: d + d[:512], 'inconsistent with the blocks before it'),
])
def test_not_a_usable_uf2(tmp_path, mangle, message):
    data, dummy = make_uf2(blocks=4)
    with pytest.raises(bootsel.BootselError, match=message) as info:
        bootsel.check_uf2(write(tmp_path, mangle(data)))
    assert '\n' not in str(info.value)


def test_another_chip_family_is_refused(tmp_path):
    data, dummy = make_uf2(blocks=2, family=SAMD21)
    with pytest.raises(bootsel.BootselError, match='family 0x68ED2B88, not the RP2040 \\(0xE48BFF56\\)'):
        bootsel.check_uf2(write(tmp_path, data))


def test_one_foreign_block_is_enough_to_refuse(tmp_path):
    data, dummy = make_uf2(blocks=3)
    bad = uf2_block(1, 3, 0x10000100, b'\0' * 256, family=SAMD21)
    with pytest.raises(bootsel.BootselError, match='block 1 .* family 0x68ED2B88'):
        bootsel.check_uf2(write(tmp_path, data[:512] + bad + data[1024:]))


def test_no_family_and_ram_targets_are_refused(tmp_path):
    with pytest.raises(bootsel.BootselError, match='names no chip family'):
        bootsel.check_uf2(write(tmp_path, uf2_block(0, 1, 0x10000000, b'\0' * 256, flags=0)))
    with pytest.raises(bootsel.BootselError, match='256-byte pages in flash'):
        bootsel.check_uf2(write(tmp_path, uf2_block(0, 1, 0x20000000, b'\0' * 256)))


def boot_rom_drive(path, label=b'RPI-RP2    ', ptype=0x0E):
    """The RP2040 boot ROM's disk as its source describes it: an MBR with one FAT16 partition at
    sector 1, 8 sectors per cluster, 1 reserved sector, 2 FATs, 512 root entries."""
    sectors = 262144
    mbr = bytearray(512)
    mbr[446 + 4] = ptype
    struct.pack_into('<II', mbr, 446 + 8, 1, sectors - 1)
    mbr[510:512] = b'\x55\xaa'
    boot = bytearray(512)
    struct.pack_into('<HBHBH', boot, 11, 512, 8, 1, 2, 512)
    struct.pack_into('<H', boot, 22, 64)
    boot[0x2B:0x36] = label
    boot[0x36:0x3E] = b'FAT16   '
    with open(path, 'wb') as f:
        f.write(bytes(mbr) + bytes(boot))
        f.truncate(sectors * 512)
    return str(path)


def test_drive_geometry_finds_the_data_area(tmp_path):
    geometry = bootsel.drive_geometry(boot_rom_drive(tmp_path / 'drive'))
    # sector 1 + 1 reserved + 2 x 64 FAT sectors + 32 root directory sectors, past two clusters.
    assert geometry['first_sector'] == 1 + 1 + 128 + 32 + 16


@pytest.mark.parametrize('label, ptype, message', [
    (b'NO NAME    ', 0x0E, 'not labelled RPI-RP2'),
    (b'RPI-RP2    ', 0x83, 'not the boot ROM'),
])
def test_drive_that_is_not_the_boot_rom_is_refused(tmp_path, label, ptype, message):
    with pytest.raises(bootsel.BootselError, match=message):
        bootsel.drive_geometry(boot_rom_drive(tmp_path / 'drive', label, ptype))
