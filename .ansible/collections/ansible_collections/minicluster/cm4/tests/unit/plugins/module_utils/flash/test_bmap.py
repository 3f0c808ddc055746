# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bmap files from bmaptool create (2.0) and written by hand to the 1.x format."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.flash import bmap as bmapmod
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.errors import BmapError, ChecksumError
from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.flash import images


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    return images.make_image(str(tmp_path_factory.mktemp('bmap') / 'disk.img'))


@pytest.fixture()
def bmap_v2(image, tmp_path):
    return images.bmaptool_create(image, str(tmp_path / 'disk.bmap'))


def edit(path, old, new, count=1):
    with open(path) as f:
        text = f.read()
    assert old in text
    with open(path, 'w') as f:
        f.write(text.replace(old, new, count))


def test_bmaptool_2_0(image, bmap_v2):
    bmap = bmapmod.parse_bmap(bmap_v2)
    assert bmap.version == '2.0'
    assert bmap.checksum_type == 'sha256'
    assert bmap.image_size == images.IMAGE_SIZE
    assert bmap.block_size == 4096
    assert bmap.blocks_count == (images.IMAGE_SIZE + 4095) // 4096
    assert [(r.first, r.last) for r in bmap.ranges] == images.mapped_blocks(image)
    assert bmap.mapped_blocks_count == sum(r.last - r.first + 1 for r in bmap.ranges)
    # The last block is partial: its range ends at ImageSize and its checksum covers only that.
    start, end = bmap.byte_range(bmap.ranges[-1])
    assert end == images.IMAGE_SIZE
    data = images.read(image, start, end - start)
    assert hashlib.sha256(data).hexdigest() == bmap.ranges[-1].checksum
    assert bmap.mapped_size == sum(e - s for s, e, checksum in bmap.byte_ranges())
    assert bmap.has_checksums


def test_file_checksum_computed_like_bmaptool(bmap_v2):
    with open(bmap_v2, 'rb') as f:
        data = f.read()
    recorded = re.search(rb'<BmapFileChecksum>\s*([0-9a-f]+)\s*</BmapFileChecksum>', data).group(1).decode()
    assert bmapmod.file_checksum_of(data, recorded, 'sha256') == recorded


def test_edited_bmap_fails_its_own_checksum(bmap_v2):
    bmap = bmapmod.parse_bmap(bmap_v2)
    first = bmap.ranges[0]
    edit(bmap_v2, '<Range chksum="%s">' % first.checksum, '<Range chksum="%s">' % ('0' * 64))
    with pytest.raises(ChecksumError, match='damaged or was edited'):
        bmapmod.parse_bmap(bmap_v2)


def test_resigned_bmap_parses_with_the_wrong_range_checksum(bmap_v2):
    # The pipeline's tests need a self-consistent bmap whose range checksum is wrong.
    first = bmapmod.parse_bmap(bmap_v2).ranges[0]
    edit(bmap_v2, first.checksum, 'f' * 64)
    images.resign(bmap_v2)
    assert bmapmod.parse_bmap(bmap_v2).ranges[0].checksum == 'f' * 64


def test_format_1_4_is_2_0(bmap_v2):
    edit(bmap_v2, 'version="2.0"', 'version="1.4"')
    images.resign(bmap_v2)
    assert bmapmod.parse_bmap(bmap_v2).checksum_type == 'sha256'


def test_format_1_3_sha1_by_hand(image, tmp_path):
    path = images.write_v1_bmap(image, str(tmp_path / 'v13.bmap'), version='1.3')
    bmap = bmapmod.parse_bmap(path)
    assert bmap.version == '1.3'
    assert bmap.checksum_type == 'sha1'
    assert len(bmap.file_checksum) == 40
    assert [(r.first, r.last) for r in bmap.ranges] == images.mapped_blocks(image)
    start, end = bmap.byte_range(bmap.ranges[1])
    assert hashlib.sha1(images.read(image, start, end - start)).hexdigest() == bmap.ranges[1].checksum


def test_format_1_3_by_hand_is_what_bmaptool_reads(image, tmp_path):
    # bmaptool checks BmapFileSHA1 and every range's SHA-1 of a 1.3 bmap: it must accept ours.
    images.need('bmaptool')
    path = images.write_v1_bmap(image, str(tmp_path / 'v13.bmap'), version='1.3')
    dest = str(tmp_path / 'copy.img')
    subprocess.run(['bmaptool', '-q', 'copy', '--bmap', path, image, dest], check=True)
    assert images.read(dest) == images.read(image)


def test_format_1_3_edited(image, tmp_path):
    path = images.write_v1_bmap(image, str(tmp_path / 'v13.bmap'), version='1.3')
    edit(path, '<ImageSize>', '<ImageSize>\n')
    with pytest.raises(ChecksumError, match='sha1'):
        bmapmod.parse_bmap(path)


def test_format_1_2_and_1_0(image, tmp_path):
    # Before 1.3 there is no file checksum; 1.2 ranges may carry SHA-1s, 1.0 ones carry none.
    v12 = bmapmod.parse_bmap(images.write_v1_bmap(image, str(tmp_path / 'v12.bmap'), version='1.2'))
    assert v12.file_checksum is None
    assert v12.checksum_type == 'sha1'
    v10 = bmapmod.parse_bmap(images.write_v1_bmap(image, str(tmp_path / 'v10.bmap'), version='1.0',
                                                  with_sha1=False))
    assert v10.checksum_type is None
    assert not v10.has_checksums
    assert v10.mapped_size == v12.mapped_size


def test_single_block_ranges(image, tmp_path):
    path = images.write_v1_bmap(image, str(tmp_path / 'one.bmap'), version='1.0',
                                ranges=[(0, 0), (2, 2), (5, 9)], with_sha1=False)
    bmap = bmapmod.parse_bmap(path)
    assert [(r.first, r.last) for r in bmap.ranges] == [(0, 0), (2, 2), (5, 9)]
    assert list(bmap.byte_ranges())[1] == (8192, 12288, None)


@pytest.mark.parametrize('old, new, message', [
    ('version="2.0"', 'version="3.0"', 'versions up to 2.x'),
    ('    <BlocksCount> ', '    <BlocksCount> 1', 'inconsistent'),
    ('    <MappedBlocksCount> ', '    <MappedBlocksCount> 1', 'MappedBlocksCount says'),
    ('<ChecksumType> sha256', '<ChecksumType> nosuchhash', 'does not provide'),
    ('</BlockMap>', '<Range> 999999 </Range></BlockMap>', 'beyond the image'),
])
def test_inconsistent_bmaps(bmap_v2, old, new, message):
    edit(bmap_v2, old, new)
    images.resign(bmap_v2)
    with pytest.raises(BmapError, match=message):
        bmapmod.parse_bmap(bmap_v2)


def test_ranges_out_of_order_are_refused(image, tmp_path):
    path = images.write_v1_bmap(image, str(tmp_path / 'order.bmap'), version='1.0',
                                ranges=[(5, 9), (0, 1)], with_sha1=False)
    with pytest.raises(BmapError, match='overlaps or precedes'):
        bmapmod.parse_bmap(path)
    path = images.write_v1_bmap(image, str(tmp_path / 'overlap.bmap'), version='1.0',
                                ranges=[(0, 5), (5, 9)], with_sha1=False)
    with pytest.raises(BmapError, match='overlaps or precedes'):
        bmapmod.parse_bmap(path)


def test_not_xml_missing_and_signed(tmp_path, bmap_v2):
    bad = tmp_path / 'bad.bmap'
    bad.write_text('<bmap version="2.0"><ImageSize>')
    with pytest.raises(BmapError, match='not well-formed XML'):
        bmapmod.parse_bmap(str(bad))
    with pytest.raises(BmapError, match='cannot read bmap'):
        bmapmod.parse_bmap(str(tmp_path / 'absent.bmap'))
    signed = tmp_path / 'signed.bmap'
    with open(bmap_v2) as f:
        signed.write_text('-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n' + f.read())
    with pytest.raises(BmapError, match='clear-signed'):
        bmapmod.parse_bmap(str(signed))


def test_bmaptool_without_checksums(image, tmp_path):
    images.need('bmaptool')
    path = str(tmp_path / 'nocs.bmap')
    subprocess.run(['bmaptool', 'create', '--no-checksum', '-o', path, image], check=True)
    bmap = bmapmod.parse_bmap(path)
    assert not bmap.has_checksums
    assert bmap.ranges and all(r.checksum is None for r in bmap.ranges)


def test_no_bmaptool_needed_for_parsing(bmap_v2, tmp_path):
    # Parsing works from bytes too (a bmap fetched over the network, say).
    copy = str(tmp_path / 'copy.bmap')
    shutil.copy(bmap_v2, copy)
    with open(copy, 'rb') as f:
        assert bmapmod.parse_bmap_bytes(f.read(), copy).version == '2.0'
