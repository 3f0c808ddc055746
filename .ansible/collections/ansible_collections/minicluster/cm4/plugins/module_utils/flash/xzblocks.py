# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An .xz file as independent blocks, decoded on several threads and read back in order.

`xz -T0` (and pi-gen, which uses it) cuts its input into blocks and compresses each on its own; the
index at the end of every stream lists each block's compressed (unpadded) and uncompressed size.
Such blocks can be decoded in parallel. Each block is handed to the standard library's decoder
wrapped as a stream of its own: the stream header with the original stream flags, the block
exactly as stored (header, data, padding, check), and an index with that block's single record.
liblzma then checks the block's CRC64/SHA-256 and that its sizes match the index, exactly as it
would in the original file. The real indexes, stream headers and footers are checked here (CRC32,
flags, backward size), and the walk must account for every byte of the file: anything else is
not a well-formed .xz and the caller falls back to the sequential decoder, which reports the damage.

Memory stays bounded: each thread runs at most `ahead` bytes of output in front of the reader.
When the file's SHA-256 is wanted, the workers pass on the compressed bytes they decoded and the
reader hashes exactly those, in file order, with the bytes between blocks: a file that changes
during the run cannot pass for the one that was checked.
"""

from __future__ import annotations

import lzma
import os
import queue
import struct
import threading
import zlib
from collections import namedtuple

XZ_MAGIC = b'\xfd7zXZ\x00'
FOOTER_MAGIC = b'YZ'
RAW_READ = 1024 * 1024

Block = namedtuple('Block', ['flags', 'offset', 'unpadded', 'uncompressed'])
"""A block: its stream's flags (2 bytes), file offset of its header, sizes from the index."""


def _crc32(data):
    return struct.pack('<I', zlib.crc32(data))


def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf, pos):
    value = 0
    for shift in range(0, 63, 7):
        if pos >= len(buf):
            raise ValueError('truncated integer')
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise ValueError('integer too long')


def _stream_blocks(fd, end):
    """Blocks of the stream that ends at `end`, and where that stream starts."""
    footer = os.pread(fd, 12, end - 12)
    if len(footer) != 12 or footer[10:12] != FOOTER_MAGIC or _crc32(footer[4:10]) != footer[:4]:
        raise ValueError('bad stream footer')
    flags = footer[8:10]
    index_size = (struct.unpack('<I', footer[4:8])[0] + 1) * 4
    index_pos = end - 12 - index_size
    if index_pos < 12:
        raise ValueError('index out of the file')
    index = os.pread(fd, index_size, index_pos)
    if index[0] != 0 or _crc32(index[:-4]) != index[-4:]:
        raise ValueError('bad index')
    count, pos = _read_varint(index, 1)
    records = []
    for dummy in range(count):
        unpadded, pos = _read_varint(index, pos)
        uncompressed, pos = _read_varint(index, pos)
        records.append((unpadded, uncompressed))
    if (pos + 3) & ~3 != index_size - 4:
        raise ValueError('index records and size disagree')
    start = index_pos - sum((u + 3) & ~3 for u, dummy in records) - 12
    header = os.pread(fd, 12, start) if start >= 0 else b''
    if header[:6] != XZ_MAGIC or header[6:8] != flags or _crc32(header[6:8]) != header[8:12]:
        raise ValueError('bad stream header')
    blocks = []
    offset = start + 12
    for unpadded, uncompressed in records:
        blocks.append(Block(flags, offset, unpadded, uncompressed))
        offset += (unpadded + 3) & ~3
    return start, blocks


def parse_blocks(fd, file_size):
    """Every block of every stream in file order, or None if the file is not well-formed .xz."""
    try:
        pos = file_size
        streams = []
        while pos > 0:
            # Stream padding: null bytes in multiples of four.
            while pos >= 4 and os.pread(fd, 4, pos - 4) == b'\0\0\0\0':
                pos -= 4
            if pos == 0:
                break
            pos, blocks = _stream_blocks(fd, pos)
            streams.append(blocks)
        if not streams:
            return None
        return [block for blocks in reversed(streams) for block in blocks]
    except (OSError, ValueError, IndexError, struct.error):
        return None


def single_block_stream(block):
    """(prefix, suffix) that make the stored block a complete .xz stream on its own."""
    prefix = XZ_MAGIC + block.flags + _crc32(block.flags)
    index = b'\0' + _varint(1) + _varint(block.unpadded) + _varint(block.uncompressed)
    index += b'\0' * (-len(index) % 4)
    index += _crc32(index)
    backward = struct.pack('<I', len(index) // 4 - 1)
    footer = _crc32(backward + block.flags) + backward + block.flags + FOOTER_MAGIC
    return prefix, index + footer


class _Failure:
    def __init__(self, exc):
        self.exc = exc


class _Raw:
    """Compressed bytes a worker decoded, passed on so the reader can hash exactly those."""

    def __init__(self, data):
        self.data = data


_DONE = object()


class ParallelXzDecoder:
    """Decodes the blocks of an .xz on `threads` threads; read_some(n) returns them in order.

    Thread t decodes blocks t, t + threads, ... into a bounded queue per block, so it waits when
    it is `ahead` bytes in front of the reader. Errors are raised when the reader reaches the
    block that had them, as a sequential decoder would. on_raw(block, data), when given, receives
    in file order the compressed bytes each block was decoded from.
    """

    def __init__(self, fd, blocks, threads, piece=4 * 1024 * 1024, ahead=16 * 1024 * 1024,
                 on_raw=None):
        self._fd = fd
        self._blocks = blocks
        self._threads = max(1, min(threads, len(blocks)))
        self._piece = piece
        self._on_raw = on_raw
        # Raw pieces share the queue with output pieces when they are passed on.
        self._depth = max(2, ahead // piece) + (max(2, ahead // RAW_READ) if on_raw else 0)
        self._queues = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._workers = []
        self._index = 0          # block being read
        self._queue = None
        self._current = b''
        self._offset = 0
        self.block_end = 0       # file offset up to which the reader has consumed blocks

    def _queue_for(self, index):
        with self._lock:
            q = self._queues.get(index)
            if q is None:
                q = self._queues[index] = queue.Queue(self._depth)
            return q

    def _put(self, q, item):
        while not self._closed.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, first):
        for index in range(first, len(self._blocks), self._threads):
            q = self._queue_for(index)
            try:
                for out in self._decode(self._blocks[index]):
                    if not self._put(q, out):
                        return
            except (lzma.LZMAError, OSError, EOFError, ValueError) as exc:
                self._put(q, _Failure(exc))
                return
            if not self._put(q, _DONE):
                return

    def _decode(self, block):
        """Output of one block in pieces of exactly `piece` bytes (the last one shorter)."""
        prefix, suffix = single_block_stream(block)
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        parts, have = [], 0
        end = block.offset + ((block.unpadded + 3) & ~3)
        pos = block.offset
        inputs = [prefix]
        while inputs or pos < end:
            if self._closed.is_set():
                return
            if inputs:
                data = inputs.pop()
            else:
                data = os.pread(self._fd, min(RAW_READ, end - pos), pos)
                if not data:
                    raise EOFError('the file ends inside a block')
                if self._on_raw is not None:
                    yield _Raw(data)
                pos += len(data)
                if pos >= end:
                    inputs.append(suffix)
            while not self._closed.is_set():
                out = dec.decompress(data, self._piece - have)
                data = b''
                if out:
                    parts.append(out)
                    have += len(out)
                    if have == self._piece:
                        yield parts[0] if len(parts) == 1 else b''.join(parts)
                        parts, have = [], 0
                if dec.eof or dec.needs_input:
                    break
        if not dec.eof:
            raise EOFError('block ended before its end-of-stream marker')
        if parts:
            yield b''.join(parts)

    def start(self):
        for t in range(self._threads):
            worker = threading.Thread(target=self._work, args=(t,), name='xz-block-%d' % t, daemon=True)
            worker.start()
            self._workers.append(worker)

    def read_some(self, n):
        """Up to n bytes, b'' after the last block. Raises what a block's decoder raised."""
        if not self._workers:
            self.start()
        while self._offset >= len(self._current):
            if self._index >= len(self._blocks):
                return b''
            if self._queue is None:
                self._queue = self._queue_for(self._index)
            item = self._queue.get()
            if item is _DONE:
                block = self._blocks[self._index]
                self.block_end = block.offset + ((block.unpadded + 3) & ~3)
                with self._lock:
                    del self._queues[self._index]
                self._index += 1
                self._queue = None
                continue
            if isinstance(item, _Failure):
                self.close()
                raise item.exc
            if isinstance(item, _Raw):
                self._on_raw(self._blocks[self._index], item.data)
                continue
            self._current, self._offset = item, 0
        if self._offset == 0 and n >= len(self._current):
            out, self._current = self._current, b''
            return out
        out = self._current[self._offset:self._offset + n]
        self._offset += len(out)
        return out

    @property
    def block_index(self):
        return self._index

    def close(self):
        self._closed.set()
        with self._lock:
            queues = list(self._queues.values())
        for q in queues:
            try:
                while True:
                    q.get_nowait()
            except queue.Empty:
                pass
        for worker in self._workers:
            worker.join()
        self._workers = []
