# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Block maps (.bmap) as bmaptool writes them: which blocks of an image hold data.

Format versions, as bmaptool (bmaptools/BmapCopy.py, BmapCreate.py) reads and writes them:

- 1.0 to 1.2: ImageSize, BlockSize, BlocksCount, MappedBlocksCount and a BlockMap of Range
  elements ("first-last" or a single block "n"), each optionally with a ``sha1`` attribute.
- 1.3: adds BmapFileSHA1, the SHA-1 of the bmap file itself.
- 1.4 and 2.0 (identical; 1.4 was a numbering mistake): ChecksumType names the hash (sha256 by
  default), ranges carry ``chksum`` and the file's own checksum is BmapFileChecksum.

The file checksum is computed like bmaptool does it: over the file's bytes with the first occurrence
of the recorded hex digest replaced by as many ASCII '0'. A range's checksum covers its blocks,
the last block only up to ImageSize.

bmaptool does not check range SHA-1s of formats before 1.3; this parser checks them whenever they
are present. It refuses what a streaming writer cannot follow: ranges out of order or overlapping.
"""

from __future__ import annotations

import hashlib
import re
from collections import namedtuple
from xml.etree import ElementTree

from ansible_collections.minicluster.cm4.plugins.module_utils.flash.errors import (
    BmapError,
    ChecksumError,
)

SUPPORTED_MAJOR = 2

BmapRange = namedtuple('BmapRange', ['first', 'last', 'checksum'])
"""Blocks first..last (inclusive) of the image, and their expected hex checksum or None."""

_HEX = re.compile(r'^[0-9a-f]+$')


class Bmap:
    """A parsed, verified block map. Byte offsets come from `byte_ranges()`."""

    def __init__(self, version, image_size, block_size, blocks_count, mapped_blocks_count,
                 checksum_type, file_checksum, ranges, path=None):
        self.version = version
        self.image_size = image_size
        self.block_size = block_size
        self.blocks_count = blocks_count
        self.mapped_blocks_count = mapped_blocks_count
        self.checksum_type = checksum_type
        self.file_checksum = file_checksum
        self.ranges = tuple(ranges)
        self.path = path

    def __repr__(self):
        return ('Bmap(version=%r, image_size=%d, block_size=%d, ranges=%d, mapped=%d)'
                % (self.version, self.image_size, self.block_size, len(self.ranges),
                   self.mapped_size))

    def byte_range(self, rng):
        """(start, end) byte offsets of a range, end exclusive and clipped to the image size."""
        return (rng.first * self.block_size,
                min((rng.last + 1) * self.block_size, self.image_size))

    def byte_ranges(self):
        """(start, end, checksum) for every range in image order; end exclusive."""
        for rng in self.ranges:
            start, end = self.byte_range(rng)
            yield start, end, rng.checksum

    @property
    def mapped_size(self):
        """Bytes of the image the map covers (the last block only up to ImageSize)."""
        return sum(end - start for start, end, checksum in self.byte_ranges())

    @property
    def has_checksums(self):
        return bool(self.checksum_type) and all(r.checksum for r in self.ranges)


def _text(root, tag, path, required=True):
    node = root.find(tag)
    if node is None or node.text is None or not node.text.strip():
        if required:
            raise BmapError('bmap %s has no %s' % (path, tag))
        return None
    return node.text.strip()


def _int(root, tag, path):
    text = _text(root, tag, path)
    try:
        value = int(text)
    except ValueError:
        raise BmapError('bmap %s: %s is not an integer: %r' % (path, tag, text)) from None
    if value < 0:
        raise BmapError('bmap %s: %s is negative' % (path, tag))
    return value


def _new_hash(name, path):
    try:
        return hashlib.new(name)
    except (ValueError, TypeError):
        raise BmapError('bmap %s uses checksum type %r, which this Python does not provide'
                        % (path, name)) from None


def file_checksum_of(data, recorded, checksum_type):
    """The bmap file's own checksum as bmaptool computes it (see the module docstring)."""
    pos = data.find(recorded.encode('ascii'))
    if pos < 0:
        return None
    zeroed = data[:pos] + b'0' * len(recorded) + data[pos + len(recorded):]
    digest = hashlib.new(checksum_type)
    digest.update(zeroed)
    return digest.hexdigest()


def parse_bmap_bytes(data, path='<bmap>'):
    """Parse and verify a bmap held in memory. Raises BmapError or ChecksumError."""
    if data.lstrip().startswith(b'-----BEGIN PGP SIGNED MESSAGE-----'):
        raise BmapError('bmap %s is OpenPGP clear-signed; check its signature with gpg and pass the '
                        'bmap gpg extracts' % path)
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise BmapError('bmap %s is not well-formed XML: %s' % (path, exc)) from None
    if root.tag != 'bmap':
        raise BmapError('bmap %s: root element is <%s>, not <bmap>' % (path, root.tag))
    version = str(root.attrib.get('version', '')).strip()
    match = re.match(r'^(\d+)\.(\d+)$', version)
    if not match:
        raise BmapError('bmap %s has no usable format version: %r' % (path, version))
    major, minor = int(match.group(1)), int(match.group(2))
    if major > SUPPORTED_MAJOR:
        raise BmapError('bmap %s has format version %s; versions up to %d.x are supported'
                        % (path, version, SUPPORTED_MAJOR))

    image_size = _int(root, 'ImageSize', path)
    block_size = _int(root, 'BlockSize', path)
    blocks_count = _int(root, 'BlocksCount', path)
    mapped_blocks_count = _int(root, 'MappedBlocksCount', path)
    if block_size == 0:
        raise BmapError('bmap %s: BlockSize is 0' % path)
    if blocks_count != (image_size + block_size - 1) // block_size:
        raise BmapError('bmap %s is inconsistent: %d blocks of %d bytes do not make ImageSize %d'
                        % (path, blocks_count, block_size, image_size))

    # Which checksums this version carries: (range attribute, file checksum tag, hash name).
    if major >= 2 or (major == 1 and minor == 4):
        checksum_type = _text(root, 'ChecksumType', path).lower()
        attrib, file_tag = 'chksum', 'BmapFileChecksum'
    else:
        checksum_type, attrib, file_tag = 'sha1', 'sha1', 'BmapFileSHA1'
    digest_len = len(_new_hash(checksum_type, path).hexdigest())

    # The file's own checksum: required from 1.3 on, where the format introduced it.
    recorded = _text(root, file_tag, path, required=(major, minor) >= (1, 3))
    if recorded is not None:
        if len(recorded) != digest_len or not _HEX.match(recorded.lower()):
            raise BmapError('bmap %s: %s is not a %s digest' % (path, file_tag, checksum_type))
        actual = file_checksum_of(data, recorded, checksum_type)
        recorded = recorded.lower()
        if actual != recorded:
            raise ChecksumError('bmap %s is damaged or was edited: its %s checksum is %s, the file '
                                'records %s' % (path, checksum_type, actual, recorded))

    block_map = root.find('BlockMap')
    if block_map is None:
        raise BmapError('bmap %s has no BlockMap' % path)
    ranges = []
    mapped = 0
    next_free = 0
    any_checksum = False
    for node in block_map.findall('Range'):
        text = (node.text or '').strip()
        parts = [p.strip() for p in text.split('-', 1)]
        try:
            first = int(parts[0])
            last = int(parts[1]) if len(parts) > 1 else first
        except ValueError:
            raise BmapError('bmap %s: bad range %r' % (path, text)) from None
        if first < 0 or first > last:
            raise BmapError('bmap %s: bad range %r (first > last)' % (path, text))
        if last >= blocks_count:
            raise BmapError('bmap %s: range %r is beyond the image\'s %d blocks'
                            % (path, text, blocks_count))
        if first < next_free:
            raise BmapError('bmap %s: range %r overlaps or precedes the one before it'
                            % (path, text))
        checksum = node.attrib.get(attrib)
        if checksum is not None:
            checksum = checksum.strip().lower()
            if len(checksum) != digest_len or not _HEX.match(checksum):
                raise BmapError('bmap %s: range %r has a malformed %s' % (path, text, attrib))
            any_checksum = True
        ranges.append(BmapRange(first, last, checksum))
        mapped += last - first + 1
        next_free = last + 1
    if mapped != mapped_blocks_count:
        raise BmapError('bmap %s is inconsistent: its ranges map %d blocks, MappedBlocksCount says %d'
                        % (path, mapped, mapped_blocks_count))
    return Bmap(version, image_size, block_size, blocks_count, mapped_blocks_count,
                checksum_type if any_checksum else None, recorded, ranges, path)


def parse_bmap(path):
    """Parse and verify the .bmap file at path (see parse_bmap_bytes)."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as exc:
        raise BmapError('cannot read bmap %s: %s' % (path, exc.strerror or exc)) from None
    return parse_bmap_bytes(data, path)


def range_hash(bmap):
    """A new hash object for one range's checksum, or None when the map carries none."""
    return hashlib.new(bmap.checksum_type) if bmap.checksum_type else None
