# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Image sources: a raw image or one compressed with xz, gzip, bzip2 or zstd, read as one stream.

The expanded image is never written to disk: `open_image()` returns a reader whose `read(n)`
yields the image's bytes in order, decompressing as it goes. The format comes from the file's
magic bytes; the name's suffix only has to agree with them (an ``.xz`` that is not xz is an error,
not a raw image).

Integrity, in the order a stream meets it:
- the compressed file's SHA-256 (``sha256=``), computed over the bytes as they are read and
  checked when the stream ends; `verify_sha256()` checks the same up front;
- the format's own checks (xz CRC64/SHA-256, gzip CRC32 and length, bzip2 block CRCs, zstd content
  checksum) by the decompressors;
- a stream must end where its format says it ends: a truncated stream, or data after it (other than
  the padding the format allows) is an error naming the format.

A multi-block .xz (as `xz -T0` and pi-gen write them) is decoded on several threads (xzblocks).
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import os
import struct
import zlib

from ansible_collections.minicluster.cm4.plugins.module_utils.flash import xzblocks
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.errors import (
    ChecksumError,
    SourceError,
)

try:
    import zstandard
    HAS_ZSTANDARD = True
except ImportError:  # pragma: no cover - depends on the controller
    zstandard = None
    HAS_ZSTANDARD = False

# Compressed input is read in blocks this large: big enough that per-call overhead vanishes,
# small enough to keep memory flat.
READ_BLOCK = 1024 * 1024

XZ_MAGIC = xzblocks.XZ_MAGIC
GZIP_MAGIC = b'\x1f\x8b'
BZIP2_MAGIC = b'BZh'
ZSTD_MAGIC = 0xFD2FB528
ZSTD_SKIPPABLE_MIN, ZSTD_SKIPPABLE_MAX = 0x184D2A50, 0x184D2A5F

SUFFIXES = {
    '.xz': 'xz',
    '.gz': 'gzip',
    '.gzip': 'gzip',
    '.bz2': 'bzip2',
    '.zst': 'zstd',
    '.zstd': 'zstd',
}
FORMATS = ('raw', 'xz', 'gzip', 'bzip2', 'zstd')


def _magic_format(head):
    """The format whose magic starts `head`, or None."""
    if head.startswith(XZ_MAGIC):
        return 'xz'
    if head.startswith(GZIP_MAGIC):
        return 'gzip'
    if head.startswith(BZIP2_MAGIC) and len(head) > 3 and head[3:4] in b'123456789':
        return 'bzip2'
    if len(head) >= 4:
        magic = struct.unpack('<I', head[:4])[0]
        if magic == ZSTD_MAGIC or ZSTD_SKIPPABLE_MIN <= magic <= ZSTD_SKIPPABLE_MAX:
            return 'zstd'
    return None


def detect_format(path):
    """'raw', 'xz', 'gzip', 'bzip2' or 'zstd' for the file at path, from its magic bytes.

    Raises SourceError when the file is missing or unreadable, when its suffix names a compression
    its content does not have, or when it is an archive this pipeline does not take (zip, lzma).
    """
    try:
        with open(path, 'rb') as f:
            head = f.read(8)
    except OSError as exc:
        raise SourceError('cannot open image %s: %s' % (path, exc.strerror or exc)) from None
    fmt = _magic_format(head)
    suffix = os.path.splitext(path)[1].lower()
    if fmt is None:
        if suffix in SUFFIXES:
            raise SourceError('image %s is named %s but does not start with %s magic bytes'
                              % (path, suffix, SUFFIXES[suffix]))
        if head.startswith(b'PK\x03\x04'):
            raise SourceError('image %s is a zip archive; unpack it or recompress the image with xz'
                              % path)
        if suffix == '.lzma':
            raise SourceError('image %s is legacy .lzma; recompress it with xz' % path)
        return 'raw'
    if suffix in SUFFIXES and SUFFIXES[suffix] != fmt:
        raise SourceError('image %s is named %s but holds %s data' % (path, suffix, fmt))
    return fmt


def normalize_sha256(value):
    """Lower-case hex from 'HEX' or 'sha256:HEX'; ValueError for anything else."""
    text = str(value).strip().lower()
    if text.startswith('sha256:'):
        text = text[len('sha256:'):]
    if len(text) != 64 or any(c not in '0123456789abcdef' for c in text):
        raise ValueError('not a SHA-256 hex digest: %r' % (value,))
    return text


def file_sha256(path, block=READ_BLOCK):
    """SHA-256 hex of the file at path, as stored (compressed files are not expanded)."""
    digest = hashlib.sha256()
    try:
        with open(path, 'rb', buffering=0) as f:
            buf = bytearray(block)
            view = memoryview(buf)
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                digest.update(view[:n])
    except OSError as exc:
        raise SourceError('cannot read %s: %s' % (path, exc.strerror or exc)) from None
    return digest.hexdigest()


def verify_sha256(path, expected):
    """Raise ChecksumError unless the file at path has the expected SHA-256."""
    expected = normalize_sha256(expected)
    actual = file_sha256(path)
    if actual != expected:
        raise ChecksumError('SHA-256 of image %s is %s, expected %s' % (path, actual, expected))


# Expanded sizes known from the container, so that a too-small target is refused before anything is
# written even without a bmap. gzip (ISIZE is modulo 2**32) and bzip2 do not record it.

def xz_expanded_size(fd, file_size):
    """Sum of the uncompressed sizes in the indexes of every stream of an .xz file, or None when
    the file is not well-formed (the decoder then reports the damage when it reaches it)."""
    blocks = xzblocks.parse_blocks(fd, file_size)
    return None if blocks is None else sum(block.uncompressed for block in blocks)


def zstd_walk(fd, file_size, path='image'):
    """Walk the frames of a .zst file: (expanded size or None, compressed length).

    The zstandard stream reader ends quietly when its input ends in the middle of a frame, so the
    frame and block headers are walked first: a frame whose blocks run past the end of the file,
    or that lacks its last block, is truncated. The size is the sum of the frames' content sizes,
    None when a frame does not declare one.
    """
    pos = 0
    total = 0

    def u32(at):
        data = os.pread(fd, 4, at)
        if len(data) < 4:
            raise SourceError('truncated zstd stream in %s: ends inside a frame header at byte %d'
                              % (path, at))
        return struct.unpack('<I', data)[0]

    while pos < file_size:
        magic = u32(pos)
        if ZSTD_SKIPPABLE_MIN <= magic <= ZSTD_SKIPPABLE_MAX:
            pos += 8 + u32(pos + 4)
            continue
        if magic != ZSTD_MAGIC:
            raise SourceError('corrupt zstd stream in %s: no frame magic at byte %d' % (path, pos))
        header = os.pread(fd, 14, pos + 4)
        if not header:
            raise SourceError('truncated zstd stream in %s: ends after frame magic' % path)
        descriptor = header[0]
        fcs_flag = descriptor >> 6
        single_segment = (descriptor >> 5) & 1
        checksum_flag = (descriptor >> 2) & 1
        dict_id_len = (0, 1, 2, 4)[descriptor & 3]
        fcs_len = (single_segment, 2, 4, 8)[fcs_flag]
        at = 1 + (0 if single_segment else 1) + dict_id_len
        if len(header) < at + fcs_len:
            raise SourceError('truncated zstd stream in %s: ends inside a frame header' % path)
        if fcs_len and total is not None:
            fcs = int.from_bytes(header[at:at + fcs_len], 'little')
            total += fcs + 256 if fcs_len == 2 else fcs
        else:
            total = None
        pos += 4 + at + fcs_len
        while True:
            block = os.pread(fd, 3, pos)
            if len(block) < 3:
                raise SourceError('truncated zstd stream in %s: frame ends without its last block'
                                  % path)
            value = int.from_bytes(block, 'little')
            block_type = (value >> 1) & 3
            if block_type == 3:
                raise SourceError('corrupt zstd stream in %s: reserved block type at byte %d'
                                  % (path, pos))
            # An RLE block carries one byte however many it expands to.
            pos += 3 + (1 if block_type == 1 else value >> 3)
            if value & 1:
                break
        pos += 4 * checksum_flag
        if pos > file_size:
            raise SourceError('truncated zstd stream in %s: last frame runs past the end of the file'
                              % path)
    return total, pos


class _CountingFile:
    """The compressed file as read by a decoder: counts the bytes and hashes them when asked."""

    def __init__(self, f, hashing):
        self._f = f
        self.count = 0
        self.digest = hashlib.sha256() if hashing else None

    def read(self, n=-1):
        data = self._f.read(READ_BLOCK if n is None or n < 0 else n)
        self.count += len(data)
        if self.digest is not None and data:
            self.digest.update(data)
        return data

    def readinto(self, buf):
        n = self._f.readinto(buf)
        if n:
            self.count += n
            if self.digest is not None:
                self.digest.update(memoryview(buf)[:n])
        return n

    def seek_forward(self, n):
        self._f.seek(n, os.SEEK_CUR)
        self.count += n

    def feed(self, data):
        """Account for bytes a decoder read itself, which come next in the file."""
        self.count += len(data)
        if self.digest is not None:
            self.digest.update(data)

    def advance_to(self, offset):
        """Account for the file up to offset, reading (to hash) what has not been fed."""
        if self.digest is None:
            self.count = max(self.count, offset)
            return
        fd = self._f.fileno()
        while self.count < offset:
            data = os.pread(fd, min(READ_BLOCK, offset - self.count), self.count)
            if not data:
                break
            self.feed(data)

    def close(self):
        self._f.close()


class _RawDecoder:
    """A raw image: the file's bytes are the image."""

    name = 'raw'

    def __init__(self, raw, path):
        self._raw = raw

    def read_some(self, n):
        return self._raw.read(n)

    def close(self):
        pass


class _ParallelXzDecoder:
    """A multi-block .xz decoded on several threads (see xzblocks)."""

    name = 'xz'

    def __init__(self, raw, path, fd, blocks, threads):
        self._raw = raw
        self._path = path
        self._blocks = blocks
        self._size = os.fstat(fd).st_size
        hashing = raw.digest is not None
        self._dec = xzblocks.ParallelXzDecoder(fd, blocks, threads,
                                               on_raw=self._on_raw if hashing else None)

    def _on_raw(self, block, data):
        # Stream headers, indexes and padding before this block come from the file; the block's
        # own bytes are the ones its worker decoded.
        self._raw.advance_to(block.offset)
        self._raw.feed(data)

    def read_some(self, n):
        try:
            out = self._dec.read_some(n)
        except (lzma.LZMAError, OSError, EOFError, ValueError) as exc:
            index = self._dec.block_index
            raise SourceError('corrupt xz stream in %s: %s (block %d of %d, at byte %d)' % (
                self._path, exc, index + 1, len(self._blocks), self._blocks[index].offset)) from None
        # Hash and count the file in order as the blocks are consumed; the rest (indexes,
        # footers, padding) once the last block has been read.
        self._raw.advance_to(self._dec.block_end if out else self._size)
        return out

    def close(self):
        self._dec.close()


class _StdlibDecoder:
    """xz, gzip and bzip2 through the standard library's decompressor objects.

    One decompressor object covers one xz stream, gzip member or bzip2 stream; a file may hold
    several back to back (pixz, pigz, pbzip2, or plain concatenation), each started on the previous
    one's unused data. ``decompress(data, max_length)`` bounds the output, so a stretch of zeros
    that compresses a thousandfold never inflates memory.
    """

    def __init__(self, raw, path, name):
        self.name = name
        self._raw = raw
        self._path = path
        self._pending = b''    # compressed bytes not yet given to the decompressor
        self._dec = self._new()
        self._in_stream = True

    def _new(self):
        if self.name == 'xz':
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        if self.name == 'gzip':
            return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        return bz2.BZ2Decompressor()

    def _magic(self):
        return {'xz': XZ_MAGIC, 'gzip': GZIP_MAGIC, 'bzip2': BZIP2_MAGIC}[self.name]

    def _fill(self):
        data = self._raw.read(READ_BLOCK)
        self._pending += data
        return bool(data)

    def _needs_input(self):
        if self.name == 'gzip':
            # zlib keeps what it could not consume in unconsumed_tail, which we hand back.
            return not self._pending
        return self._dec.needs_input and not self._pending

    def _next_stream(self):
        """After a stream ended: start the next one, or True when the file has ended cleanly."""
        self._pending = self._dec.unused_data + self._pending
        padding = 0
        while True:
            if not self._pending and not self._fill():
                # xz stream padding must be a multiple of four bytes.
                if self.name == 'xz' and padding % 4:
                    raise SourceError('corrupt xz stream in %s: stream padding of %d bytes is not a '
                                      'multiple of four' % (self._path, padding))
                return True
            if self.name in ('xz', 'gzip'):
                stripped = self._pending.lstrip(b'\0')
                padding += len(self._pending) - len(stripped)
                self._pending = stripped
                if not stripped:
                    continue
            magic = self._magic()
            while len(self._pending) < len(magic) and self._fill():
                pass
            if not self._pending.startswith(magic):
                raise SourceError('corrupt %s stream in %s: %d bytes of data that is not %s follow '
                                  'the end of the stream at byte %d' % (
                                      self.name, self._path, len(self._pending), self.name,
                                      self._raw.count - len(self._pending)))
            self._dec = self._new()
            return False

    def read_some(self, n):
        """Up to n expanded bytes (at least one), or b'' once the file has ended cleanly."""
        while True:
            if self._dec.eof:
                if self._next_stream():
                    return b''
            if self._needs_input() and not self._fill():
                raise SourceError('truncated %s stream in %s: the file ends after %d bytes, before '
                                  'the end of the compressed stream' % (
                                      self.name, self._path, self._raw.count))
            data, self._pending = self._pending, b''
            try:
                out = self._dec.decompress(data, n)
            except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError) as exc:
                raise SourceError('corrupt %s stream in %s: %s (within the first %d compressed '
                                  'bytes)' % (self.name, self._path, exc, self._raw.count)) from None
            if self.name == 'gzip':
                # At the end of a member zlib leaves the rest in unused_data (and may repeat it in
                # unconsumed_tail); _next_stream picks it up from unused_data.
                self._pending = b'' if self._dec.eof else self._dec.unconsumed_tail
            if out:
                return out

    def close(self):
        pass


class _ZstdDecoder:
    """zstd through the zstandard package's stream reader, which bounds each read's output.

    The reader ends quietly on a truncated frame, so the frames are walked up front
    (`zstd_walk`) and the compressed bytes consumed are compared with the walked length at the end.
    """

    name = 'zstd'

    def __init__(self, raw, path, frames_length):
        if not HAS_ZSTANDARD:
            raise SourceError('image %s is zstd-compressed and the zstandard Python package is not '
                              'installed on the controller' % path)
        self._raw = raw
        self._path = path
        self._length = frames_length
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=READ_BLOCK, read_across_frames=True, closefd=False)

    def read_some(self, n):
        try:
            out = self._reader.read(n)
        except zstandard.ZstdError as exc:
            raise SourceError('corrupt zstd stream in %s: %s (within the first %d compressed '
                              'bytes)' % (self._path, exc, self._raw.count)) from None
        if not out:
            if self._raw.count != self._length or self._raw.read(1):
                raise SourceError('truncated zstd stream in %s: decoding ended after %d of %d '
                                  'compressed bytes' % (self._path, self._raw.count, self._length))
        return out

    def close(self):
        self._reader.close()


class ImageReader:
    """The expanded image of one source, read once from start to end.

    Attributes: ``path``, ``format``, ``size`` (expanded size when the container records it, else
    None), ``compressed_size``, ``position`` (expanded bytes read so far), ``sha256`` (hex of the
    file as stored, set once the stream has ended and only when hashing was asked for).
    """

    def __init__(self, path, sha256=None, hash_source=False, threads=None):
        self.path = path
        self.format = detect_format(path)
        self.expected_sha256 = normalize_sha256(sha256) if sha256 else None
        self.position = 0
        self.sha256 = None
        self._ended = False
        try:
            f = open(path, 'rb', buffering=0)
        except OSError as exc:
            raise SourceError('cannot open image %s: %s' % (path, exc.strerror or exc)) from None
        try:
            fd = f.fileno()
            self.compressed_size = os.fstat(fd).st_size
            self._raw = _CountingFile(f, hashing=bool(self.expected_sha256 or hash_source))
            if self.format == 'raw':
                self.size = self.compressed_size
                self._decoder = _RawDecoder(self._raw, path)
            elif self.format == 'zstd':
                self.size, length = zstd_walk(fd, self.compressed_size, path)
                self._decoder = _ZstdDecoder(self._raw, path, length)
            else:
                blocks = (xzblocks.parse_blocks(fd, self.compressed_size)
                          if self.format == 'xz' else None)
                self.size = None if blocks is None else sum(b.uncompressed for b in blocks)
                threads = default_threads() if threads is None else threads
                if blocks is not None and len(blocks) > 1 and threads > 1:
                    self._decoder = _ParallelXzDecoder(self._raw, path, fd, blocks, threads)
                else:
                    self._decoder = _StdlibDecoder(self._raw, path, self.format)
        except BaseException:
            f.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self._decoder.close()
        finally:
            self._raw.close()

    def _end(self):
        """The stream has ended: check the expanded size and the source's SHA-256."""
        if self._ended:
            return
        self._ended = True
        if self.size is not None and self.position != self.size:
            raise SourceError('%s image %s expanded to %d bytes but its container records %d'
                              % (self.format, self.path, self.position, self.size))
        if self._raw.digest is not None:
            self.sha256 = self._raw.digest.hexdigest()
            if self.expected_sha256 and self.sha256 != self.expected_sha256:
                raise ChecksumError('SHA-256 of image %s is %s, expected %s'
                                    % (self.path, self.sha256, self.expected_sha256))

    def read(self, n):
        """Exactly n expanded bytes, fewer only at the end of the image, b'' after it.

        Raises SourceError for a corrupt or truncated stream and ChecksumError when the stream
        ended and the source's SHA-256 differs from the one asked for.
        """
        if self._ended or n <= 0:
            return b''
        parts = []
        want = n
        while want:
            data = self._decoder.read_some(want)
            if not data:
                self._end()
                break
            parts.append(data)
            want -= len(data)
            self.position += len(data)
        return parts[0] if len(parts) == 1 else b''.join(parts)

    def skip(self, n):
        """Move n bytes forward; returns how many were skipped (fewer only at the end)."""
        if (self.format == 'raw' and self._raw.digest is None
                and self.position + n <= self.compressed_size):
            self._raw.seek_forward(n)
            self.position += n
            return n
        done = 0
        while done < n:
            data = self.read(min(n - done, READ_BLOCK * 4))
            if not data:
                break
            done += len(data)
        return done

    def read_to_end(self):
        """Read and discard the rest of the stream, so that its end is checked; returns the count."""
        if self.format == 'raw' and self._raw.digest is None and not self._ended:
            done = self.skip(self.compressed_size - self.position)
            self._end()
            return done
        done = 0
        while True:
            data = self.read(READ_BLOCK * 4)
            if not data:
                return done
            done += len(data)


def default_threads():
    """Decoder threads for multi-block .xz: the CPUs this process may use, at most four."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def open_image(path, sha256=None, hash_source=False, threads=None):
    """Open an image source for streaming: an ImageReader with ``read(n)``.

    sha256: the expected SHA-256 of the file as stored ('HEX' or 'sha256:HEX'), checked when the
    stream ends (ChecksumError). hash_source: compute ``reader.sha256`` without checking it.
    threads: decoder threads for an .xz made of several blocks (`xz -T0`); default
    `default_threads()`, 1 decodes sequentially.
    """
    return ImageReader(path, sha256=sha256, hash_source=hash_source, threads=threads)
