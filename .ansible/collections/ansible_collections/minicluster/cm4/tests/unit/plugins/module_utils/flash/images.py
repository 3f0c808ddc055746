# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small images, compressed and mapped by the real tools, for the flash pipeline's tests."""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess

import pytest

KiB = 1024
MiB = 1024 * KiB
PATTERN = 0xA5
COMPRESSORS = {
    'xz': (['xz', '-k', '-T1', '-3'], '.xz'),
    'gzip': (['gzip', '-k', '-n'], '.gz'),
    'bzip2': (['bzip2', '-k'], '.bz2'),
    'zstd': (['zstd', '-q', '-k'], '.zst'),
}

# A sparse image: (offset, length, kind) written; the rest are holes. Data straddles chunk
# boundaries, sits at the very start and ends in a partial last block.
EXTENTS = (
    (0, 8 * KiB, 'random'),
    (60 * KiB, 200 * KiB, 'text'),
    (512 * KiB, 96 * KiB, 'zero'),
    (700 * KiB, 300 * KiB, 'random'),
    (1536 * KiB, 4 * KiB, 'text'),
)
IMAGE_SIZE = 2 * MiB + 1000   # not a multiple of the block size: the last block is partial
TAIL = (IMAGE_SIZE - 600, 600, 'text')


def need(tool):
    if not shutil.which(tool):
        pytest.skip('%s is not installed' % tool)


def data(kind, n, rng):
    if kind == 'zero':
        return bytes(n)
    if kind == 'random':
        return rng.randbytes(n)
    words = [b'boot', b'root', b'cmdline', b'config', b'kernel8', b'overlay', b'\n', b'=']
    out = b' '.join(rng.choices(words, k=n // 3 + 1))
    return out[:n]


def make_image(path, size=IMAGE_SIZE, extents=EXTENTS + (TAIL,), seed=7):
    """Write a sparse raw image; returns its path."""
    rng = random.Random(seed)
    with open(path, 'wb') as f:
        f.truncate(size)
        for offset, length, kind in extents:
            f.seek(offset)
            f.write(data(kind, length, rng))
    return str(path)


def compress(image, fmt):
    """Compress with the format's command line tool, keeping the input; returns the new path."""
    args, suffix = COMPRESSORS[fmt]
    need(args[0])
    out = image + suffix
    if os.path.exists(out):
        os.unlink(out)
    subprocess.run(args + [image], check=True)
    return out


def bmaptool_create(image, bmap=None):
    need('bmaptool')
    bmap = bmap or image + '.bmap'
    subprocess.run(['bmaptool', 'create', '-o', bmap, image], check=True)
    return bmap


def resign(bmap_path, checksum_type='sha256', tag='BmapFileChecksum'):
    """Recompute a bmap's own checksum after an edit, the way bmaptool defines it."""
    with open(bmap_path, 'rb') as f:
        text = f.read().decode()
    zeros = '0' * len(hashlib.new(checksum_type).hexdigest())
    text = re.sub(r'<%s>\s*[0-9a-fA-F]+\s*</%s>' % (tag, tag), '<%s> %s </%s>' % (tag, zeros, tag), text)
    digest = hashlib.new(checksum_type, text.encode()).hexdigest()
    text = text.replace(zeros, digest, 1)
    with open(bmap_path, 'w') as f:
        f.write(text)


def mapped_blocks(image, block=4096):
    """Block ranges holding data, from SEEK_DATA/SEEK_HOLE (what FIEMAP reports on these files)."""
    ranges = []
    fd = os.open(image, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            ranges.append((start // block, (end + block - 1) // block - 1))
            pos = end
    finally:
        os.close(fd)
    return ranges


def write_v1_bmap(image, path, version='1.3', ranges=None, block=4096, with_sha1=True):
    """A bmap in format 1.x by hand: SHA-1 per range ('sha1' attribute) and, from 1.3 on, the
    file's own SHA-1 in BmapFileSHA1."""
    size = os.path.getsize(image)
    ranges = ranges or mapped_blocks(image, block)
    lines = []
    with open(image, 'rb') as f:
        for first, last in ranges:
            f.seek(first * block)
            chunk = f.read((last - first + 1) * block)
            attr = ' sha1="%s"' % hashlib.sha1(chunk).hexdigest() if with_sha1 else ''
            text = '%d-%d' % (first, last) if last > first else '%d' % first
            lines.append('        <Range%s> %s </Range>' % (attr, text))
    mapped = sum(last - first + 1 for first, last in ranges)
    head = ('<?xml version="1.0" ?>\n<bmap version="%s">\n'
            '    <ImageSize> %d </ImageSize>\n'
            '    <BlockSize> %d </BlockSize>\n'
            '    <BlocksCount> %d </BlocksCount>\n'
            '    <MappedBlocksCount> %d </MappedBlocksCount>\n'
            % (version, size, block, (size + block - 1) // block, mapped))
    if version == '1.3':
        head += '    <BmapFileSHA1> %s </BmapFileSHA1>\n' % ('0' * 40)
    text = head + '    <BlockMap>\n%s\n    </BlockMap>\n</bmap>\n' % '\n'.join(lines)
    if version == '1.3':
        text = text.replace('0' * 40, hashlib.sha1(text.encode()).hexdigest(), 1)
    with open(path, 'w') as f:
        f.write(text)
    return path


def make_target(path, size, fill=PATTERN):
    """A regular file target pre-filled with a pattern, so untouched regions can be proven."""
    with open(path, 'wb') as f:
        f.write(bytes([fill]) * size)
    return str(path)


def read(path, start=0, length=None):
    with open(path, 'rb') as f:
        f.seek(start)
        return f.read() if length is None else f.read(length)


def byte_ranges(bmap):
    return [(start, end) for start, end, checksum in bmap.byte_ranges()]


def mapped_content(image, bmap):
    with open(image, 'rb') as f:
        out = b''
        for start, end in byte_ranges(bmap):
            f.seek(start)
            out += f.read(end - start)
    return out


def assert_flashed(target, image, bmap, fill=PATTERN):
    """Mapped ranges hold the image's bytes; every other byte of the target still holds fill."""
    want = read(image)
    got = read(target)
    pos = 0
    for start, end in byte_ranges(bmap):
        assert got[pos:start] == bytes([fill]) * (start - pos), 'unmapped bytes %d-%d touched' % (pos, start)
        assert got[start:end] == want[start:end], 'mapped bytes %d-%d differ' % (start, end)
        pos = end
    assert got[pos:] == bytes([fill]) * (len(got) - pos), 'bytes after the last range touched'
