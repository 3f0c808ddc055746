# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of the network flash tests: the payload builder, small images with SHA-256 ranges,
blank stand-in eMMCs."""

from __future__ import annotations

import hashlib
import importlib.util
import lzma
import os
import random
import shutil
import socket

import pytest
import zstandard

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location('netflash_payload_build',
                                               os.path.join(REPO, 'tools', 'payload', 'build.py'))
payload_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(payload_build)

NEEDS_QEMU = pytest.mark.skipif(not all(shutil.which(t) for t in ('qemu-system-aarch64', 'fdtput', 'dpkg-deb')),
                                reason='needs qemu-system-aarch64, fdtput and dpkg-deb (make netflash-deps)')


class Image(object):
    """A raw image with data ranges and holes, its compressed forms, and its plan ranges."""

    def __init__(self, directory, size=6 << 20, seed=12):
        rnd = random.Random(seed)
        self.size = size
        self.ranges = []
        data = bytearray(size)
        # Mapped extents of 4 KiB blocks with holes between them, the last one ending in a
        # short block as a real image's may.
        for offset, length in ((0, 512 << 10), (1 << 20, 1 << 20), (3 << 20, 64 << 10),
                               (4 << 20, (2 << 20) - 1000)):
            chunk = rnd.randbytes(length // 2) + bytes(length - length // 2)
            data[offset:offset + length] = chunk
            self.ranges.append((offset, length, hashlib.sha256(chunk).hexdigest()))
        self.size = (4 << 20) + (2 << 20) - 1000
        self.raw = bytes(data[:self.size])
        self.paths = {'none': os.path.join(directory, 'image.img')}
        with open(self.paths['none'], 'wb') as f:
            f.write(self.raw)
        self.paths['xz'] = self.paths['none'] + '.xz'
        with open(self.paths['xz'], 'wb') as f:
            f.write(lzma.compress(self.raw, preset=1))
        self.paths['zstd'] = self.paths['none'] + '.zst'
        with open(self.paths['zstd'], 'wb') as f:
            f.write(zstandard.ZstdCompressor(level=3).compress(self.raw))


def blank_disk(path, size=16 << 20, fill=b'\xa5'):
    """The stand-in eMMC: filled with a pattern, so a range left unwritten reads back wrong."""
    with open(path, 'wb') as f:
        f.write(fill * size)
    return path


def free_port():
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
