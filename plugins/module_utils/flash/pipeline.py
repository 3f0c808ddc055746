# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Flash one image to several targets from a single decompression stream.

Threads, each doing one thing, joined by bounded queues of immutable pieces (an image offset and
its bytes, shared by every consumer without copies):

    caller's thread   read + decompress the source, cut the mapped ranges into pieces aligned to
                      a chunk_size grid, hand each piece to every consumer
    digester          SHA-256 of each range (checked against the bmap) and of all mapped content
    writer per target pwrite each piece; hand finished ranges to its verifier
    verifier per target
                      fdatasync, then read the ranges back past the page cache and compare their
                      SHA-256 with the digester's

The decompressors, hashlib and the I/O calls release the GIL, so decompression keeps one core
busy while writing, hashing and read-back share the others; verification overlaps the stream
instead of following it. A target that fails (I/O error, gone, too small) stops receiving and is
reported; the others go on. A problem with the source (corrupt, truncated, checksum mismatch)
stops every target, because none of them can receive a good image from it.

content_digest: SHA-256 of the image's mapped bytes concatenated in image order; without a bmap,
of the whole expanded image. It depends only on the image and its map, so it can be recomputed
from a flashed disk by reading the same ranges (`content_digest_of`).
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections import namedtuple

from ansible_collections.minicluster.cm4.plugins.module_utils.flash.bmap import parse_bmap
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.errors import (
    BmapError,
    ChecksumError,
    FlashError,
    SourceError,
    TargetError,
)
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.source import (
    file_sha256,
    normalize_sha256,
    open_image,
    verify_sha256,
)
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.writer import ReadBack, Target

# The errors are re-exported so that callers need only this module.
__all__ = ['flash', 'check_image', 'image_identity', 'content_digest_of', 'TargetResult', 'ImageSummary',
           'FlashResults', 'FlashError', 'SourceError', 'BmapError', 'ChecksumError', 'TargetError']

MiB = 1024 * 1024
PROGRESS_STEP = 64 * MiB
# Without a bmap the image is verified in segments this large, so that read-back overlaps writing
# and a mismatch says roughly where.
SEGMENT = 64 * MiB
# Bytes in flight per consumer queue; the slowest consumer paces the stream.
QUEUE_BYTES = 64 * MiB

_END = object()

Piece = namedtuple('Piece', ['offset', 'data', 'index', 'last'])
"""Bytes of the image at offset; index of their range; last: the range ends with them."""


class TargetResult:
    """What happened to one target.

    ok: the whole image was written, synced and (when asked) verified. error: one line, or None.
    stage: where it failed: 'open', 'source', 'write', 'sync' or 'verify' (None when ok).
    bytes_written: bytes this target received. verified: read back and every range matched.
    bytes_verified: bytes read back and matched. content_digest: of the image the target received
    (see the module docstring); None unless the whole image was written. seconds: from the start of
    flash() to this target's end.
    """

    __slots__ = ('name', 'path', 'ok', 'error', 'stage', 'bytes_written', 'verified',
                 'bytes_verified', 'content_digest', 'seconds')

    def __init__(self, name, path):
        self.name = name
        self.path = path
        self.ok = False
        self.error = None
        self.stage = None
        self.bytes_written = 0
        self.verified = False
        self.bytes_verified = 0
        self.content_digest = None
        self.seconds = 0.0

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self):
        return 'TargetResult(%s)' % ', '.join('%s=%r' % (k, getattr(self, k)) for k in self.__slots__)


class ImageSummary:
    """What flash() learnt about the image: format, sizes, digests, bmap."""

    def __init__(self, source_path, bmap_path):
        self.source_path = source_path
        self.bmap_path = bmap_path
        self.format = None
        self.image_size = None
        self.mapped_size = None
        self.ranges = None
        self.bmap_version = None
        self.content_digest = None
        self.source_sha256 = None
        self.error = None
        self.seconds = 0.0

    def as_dict(self):
        return dict(self.__dict__)


class FlashResults(dict):
    """{name: TargetResult}, with the image's summary as ``.image``."""

    image = None

    @property
    def ok(self):
        return bool(self) and all(r.ok for r in self.values())


def _segments(size, step=SEGMENT):
    """Ranges covering a whole image of known size, or endlessly when size is None."""
    start = 0
    while size is None or start < size:
        end = start + step if size is None else min(size, start + step)
        yield start, end, None
        start = end


class _Digests:
    """Per-range SHA-256 from the digester, waited for by the verifiers."""

    def __init__(self):
        self._cond = threading.Condition()
        self._digests = {}
        self._closed = False

    def put(self, index, digest):
        with self._cond:
            self._digests[index] = digest
            self._cond.notify_all()

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, index):
        with self._cond:
            while index not in self._digests and not self._closed:
                self._cond.wait()
            return self._digests.get(index)


class _Run:
    """State shared by the threads of one flash() call."""

    def __init__(self, progress, total, started):
        self.abort = threading.Event()
        self.abort_reason = None
        self.lock = threading.Lock()
        self.progress = progress
        self.total = total
        self.started = started
        self.digests = _Digests()

    def fail_all(self, reason):
        with self.lock:
            if self.abort_reason is None:
                self.abort_reason = reason
        self.abort.set()

    def report(self, name, done):
        if self.progress is None:
            return
        with self.lock:
            try:
                self.progress(name, done, self.total)
            except Exception:  # a progress display must never break a flash
                pass


class _Digester(threading.Thread):
    def __init__(self, run, checks, checksum_type, depth):
        super().__init__(name='flash-digest', daemon=True)
        self.run_state = run
        self.checks = checks            # index -> (start, end, expected hex or None)
        self.checksum_type = checksum_type
        self.queue = queue.Queue(depth)
        self.content = hashlib.sha256()
        self.content_digest = None
        self.failed = False

    def run(self):
        run = self.run_state
        verify_hash = check_hash = None
        separate = self.checksum_type not in (None, 'sha256')
        while True:
            piece = self.queue.get()
            if piece is _END:
                break
            if self.failed or run.abort.is_set():
                continue
            try:
                if verify_hash is None:
                    verify_hash = hashlib.sha256()
                    check_hash = hashlib.new(self.checksum_type) if separate else None
                self.content.update(piece.data)
                verify_hash.update(piece.data)
                if check_hash is not None:
                    check_hash.update(piece.data)
                if piece.last:
                    start, end, expected = self.checks(piece.index)
                    actual = (check_hash or verify_hash).hexdigest()
                    if expected and actual != expected:
                        run.fail_all('image does not match its bmap: bytes %d-%d have %s %s, the '
                                     'bmap records %s' % (start, end - 1, self.checksum_type,
                                                          actual, expected))
                        self.failed = True
                        continue
                    run.digests.put(piece.index, verify_hash.digest())
                    verify_hash = check_hash = None
            except BaseException as exc:  # keep draining so the stream never blocks on us
                run.fail_all('hashing failed: %s' % exc)
                self.failed = True
        if not self.failed and not run.abort.is_set():
            self.content_digest = self.content.hexdigest()
        run.digests.close()


class _Verifier(threading.Thread):
    """Syncs a target and reads its finished ranges back, overlapping the rest of the stream."""

    def __init__(self, target, run, ranges_of, buffer_size):
        super().__init__(name='flash-verify-%s' % target.name, daemon=True)
        self.target = target
        self.run_state = run
        self.ranges_of = ranges_of
        self.queue = queue.Queue()
        self.readback = ReadBack(target.path, buffer_size)
        self.error = None
        self.bytes_verified = 0

    def submit(self, indexes):
        self.queue.put(list(indexes))

    def run(self):
        try:
            self.readback.open()
        except TargetError as exc:
            self.error = str(exc)
        while True:
            batch = self.queue.get()
            if batch is _END:
                break
            if self.error or self.run_state.abort.is_set():
                continue
            try:
                self.target.check_alive()
                # The writer finished these ranges before handing them over, so this sync puts
                # them on the device; the rest of the stream keeps arriving meanwhile.
                self.target.sync(data_only=True)
                for index in batch:
                    start, end = self.ranges_of(index)[:2]
                    expected = self.run_state.digests.get(index)
                    if expected is None:
                        break     # the stream failed; the writer reports why
                    if self.readback.hash_range(start, end).digest() != expected:
                        raise TargetError('%s: read-back of bytes %d-%d does not match the image'
                                          % (self.target.path, start, end - 1))
                    self.bytes_verified += end - start
            except TargetError as exc:
                self.error = str(exc)
            except BaseException as exc:
                self.error = '%s: read-back failed: %s' % (self.target.path, exc)
        self.readback.close()


class _Writer(threading.Thread):
    def __init__(self, target, result, run, depth, ranges_of, verify, verify_window,
                 chunk_size, sparse):
        super().__init__(name='flash-write-%s' % target.name, daemon=True)
        self.target = target
        self.result = result
        self.run_state = run
        self.queue = queue.Queue(depth)
        self.sparse = sparse
        self.zero = bytes(chunk_size) if sparse else None
        self.verify_window = verify_window
        self.verifier = _Verifier(target, run, ranges_of, chunk_size) if verify else None
        self.failed = False

    def fail(self, stage, message):
        if not self.failed:
            self.failed = True
            self.result.stage = stage
            self.result.error = message

    def run(self):
        run = self.run_state
        target = self.target
        if self.verifier is not None:
            self.verifier.start()
        next_report = PROGRESS_STEP
        pending = []
        window = 0
        while True:
            piece = self.queue.get()
            if piece is _END:
                break
            if self.verifier is not None and self.verifier.error:
                self.fail('verify', self.verifier.error)    # no point writing the rest
            if self.failed or run.abort.is_set():
                continue    # drain: the stream must never wait for a dead target
            try:
                target.check_alive()
                data = piece.data
                if not (self.sparse and data == self.zero[:len(data)]):
                    target.write(piece.offset, data)
                self.result.bytes_written = target.bytes_written
                if target.bytes_written >= next_report:
                    run.report(target.name, target.bytes_written)
                    next_report = target.bytes_written + PROGRESS_STEP
                window += len(data)
                if piece.last:
                    pending.append(piece.index)
                    if self.verifier is not None and window >= self.verify_window:
                        self.verifier.submit(pending)
                        pending, window = [], 0
            except TargetError as exc:
                self.fail('write', str(exc))
            except BaseException as exc:
                self.fail('write', '%s: write failed: %s' % (target.path, exc))
        try:
            self._finish(pending)
        finally:
            if self.verifier is not None:
                self.verifier.queue.put(_END)
                self.verifier.join()
            target.close()
        self.result.bytes_written = target.bytes_written
        if self.verifier is not None:
            self.result.bytes_verified = self.verifier.bytes_verified
            if not self.failed and self.verifier.error:
                self.fail('verify', self.verifier.error)
        self.result.seconds = time.monotonic() - run.started

    def _finish(self, pending):
        run = self.run_state
        if self.failed:
            return
        if run.abort.is_set():
            written = self.target.bytes_written
            self.fail('source', '%s%s' % (run.abort_reason,
                                          '; the target is partly written' if written else
                                          '; nothing written'))
            return
        try:
            self.target.check_alive()
            self.target.sync()
        except TargetError as exc:
            self.fail('sync', str(exc))
            return
        if self.verifier is not None and pending:
            self.verifier.submit(pending)
        run.report(self.target.name, self.target.bytes_written)


def _alive_for(alive, name):
    if alive is None:
        return None
    if callable(alive):
        return lambda: alive(name)
    return alive.get(name)


def _fail_all(results, stage, message, started):
    for result in results.values():
        result.stage = stage
        result.error = message
        result.seconds = time.monotonic() - started
    return results


def flash(source_path, targets, bmap_path=None, sha256=None, verify=True, progress=None,
          chunk_size=4 * MiB, sparse=False, alive=None, verify_window=64 * MiB,
          decoder_threads=None):
    """Write one image to every target at once; returns FlashResults {name: TargetResult}.

    source_path: raw or compressed image (see source.py). targets: {name: block device or regular
    file}. bmap_path: write only the ranges it maps and check their checksums; without it, every
    byte of the image is written. sha256: expected SHA-256 of the source file as stored ('HEX' or
    'sha256:HEX'); checked in full before any target is opened and again over the bytes actually
    decompressed, so a source that changes during the run fails every target too.
    verify: read every written range back past the page cache and compare SHA-256s.
    progress(name, bytes_done, bytes_total): called from worker threads, one call at a time, about
    every 64 MiB per target and when its writing ends; bytes_total is the mapped size (None when the
    image size is not known up front: gzip and bzip2 without a bmap).
    chunk_size: the write size and grid (a multiple of 4096); writes are aligned to it.
    sparse: skip writing chunks that are all zero. Only for targets known to read as zero there
    (new sparse files, discarded devices): verification still reads them, so a dirty target fails.
    alive: {name: callable() -> bool} or callable(name) -> bool, asked before every chunk; False
    fails that target with 'disk is gone'.
    verify_window: bytes a target writes between read-back batches.
    decoder_threads: threads decoding a multi-block .xz (default: the CPUs, at most 4; 1 for
    sequential decoding).

    Never raises for bad images or targets: every problem ends up in the results, one line per
    target. Raises ValueError for bad arguments (no targets, chunk_size, a malformed sha256).
    """
    if not targets:
        raise ValueError('no targets')
    if chunk_size <= 0 or chunk_size % 4096:
        raise ValueError('chunk_size must be a positive multiple of 4096')
    if sha256:
        sha256 = normalize_sha256(sha256)
    started = time.monotonic()
    results = FlashResults((name, TargetResult(name, path)) for name, path in targets.items())
    summary = results.image = ImageSummary(source_path, bmap_path)

    def finish():
        summary.seconds = time.monotonic() - started
        return results

    # The image first: nothing is opened for writing until the source and its map are sound.
    reader = None
    try:
        bmap = parse_bmap(bmap_path) if bmap_path else None
        if sha256:
            verify_sha256(source_path, sha256)
        reader = open_image(source_path, sha256=sha256, threads=decoder_threads)
        summary.format = reader.format
        if bmap is not None:
            summary.bmap_version = bmap.version
            if reader.size is not None and reader.size != bmap.image_size:
                raise FlashError('bmap %s describes a %d-byte image but %s expands to %d bytes'
                                 % (bmap_path, bmap.image_size, source_path, reader.size))
            image_size = bmap.image_size
            ranges = list(bmap.byte_ranges())
        else:
            image_size = reader.size
            ranges = None if image_size is None else list(_segments(image_size))
    except (FlashError, ValueError) as exc:
        if reader is not None:
            reader.close()
        summary.error = str(exc)
        _fail_all(results, 'source', '%s; nothing written' % exc, started)
        return finish()
    summary.image_size = image_size
    if ranges is not None:
        summary.ranges = len(ranges)
        summary.mapped_size = sum(rng[1] - rng[0] for rng in ranges)

    writers = []
    run = _Run(progress, summary.mapped_size, started)
    depth = max(2, QUEUE_BYTES // chunk_size)
    known = {}

    def ranges_of(index):
        return known[index]

    seen = {}
    for name, path in targets.items():
        target = Target(name, path, _alive_for(alive, name), buffer_size=chunk_size)
        try:
            real = os.path.realpath(path)
            if real in seen:
                raise TargetError('%s: same device as target %s; refusing to write it twice'
                                  % (path, seen[real]))
            seen[real] = name
            target.open()
            if image_size is not None:
                target.require(image_size)
        except TargetError as exc:
            target.close()
            results[name].stage = 'open'
            results[name].error = str(exc)
            results[name].seconds = time.monotonic() - started
            continue
        writers.append(_Writer(target, results[name], run, depth, ranges_of, verify,
                               verify_window, chunk_size, sparse))
    if not writers:
        reader.close()
        return finish()

    digester = _Digester(run, ranges_of, bmap.checksum_type if bmap else None, depth)
    consumers = [digester] + writers
    for thread in consumers:
        thread.start()
    try:
        _stream(reader, ranges, image_size, chunk_size, run, consumers, known)
    except BaseException as exc:
        run.fail_all('flash interrupted: %s' % (exc or exc.__class__.__name__))
        raise
    finally:
        reader.close()
        for thread in consumers:
            thread.queue.put(_END)
        for thread in consumers:
            thread.join()
        summary.source_sha256 = reader.sha256
        if ranges is None:
            summary.image_size = reader.position
            summary.ranges = len(known)
            summary.mapped_size = sum(rng[1] - rng[0] for rng in known.values())

    if run.abort.is_set():
        summary.error = run.abort_reason
    summary.content_digest = digester.content_digest
    for writer in writers:
        result = writer.result
        if not writer.failed and summary.content_digest:
            result.content_digest = summary.content_digest
            result.verified = bool(verify)
            result.ok = True
    return finish()


def _stream(reader, ranges, image_size, chunk_size, run, consumers, known):
    """Decompress once and hand every mapped piece to every consumer (the caller's thread)."""
    digester, writers = consumers[0], consumers[1:]
    open_ended = ranges is None
    pos = 0
    try:
        for index, (start, end, checksum) in enumerate(_segments(None) if open_ended else ranges):
            if run.abort.is_set():
                return
            if all(w.failed for w in writers):
                run.fail_all('no target left to write to')
                return
            if start > pos:
                pos += reader.skip(start - pos)
                if pos < start:
                    raise FlashError('image %s ends at byte %d, before the mapped range at byte %d:'
                                     ' the bmap does not belong to this image'
                                     % (reader.path, pos, start))
            known[index] = (start, end, checksum)
            ended = False
            while pos < end:
                size = min(end, (pos // chunk_size + 1) * chunk_size) - pos
                data = reader.read(size)
                if len(data) < size:
                    if not open_ended:
                        raise FlashError('image %s ends at byte %d, inside the mapped range at '
                                         'bytes %d-%d: the bmap does not belong to this image'
                                         % (reader.path, pos + len(data), start, end - 1))
                    # Without a size up front the image ends where its stream does.
                    ended = True
                    end = pos + len(data)
                    if end == start:
                        del known[index]
                        break
                    known[index] = (start, end, None)
                piece = Piece(pos, data, index, pos + len(data) == end)
                pos += len(data)
                digester.queue.put(piece)
                for writer in writers:
                    if not writer.failed:
                        writer.queue.put(piece)
                if run.abort.is_set():
                    return
            if ended:
                break
        # Read to the end even past the last mapped byte: the format's own end checks and the
        # source's SHA-256 cover the whole stream.
        total = pos + reader.read_to_end()
        if image_size is not None and total != image_size:
            raise FlashError('image %s expands to %d bytes, but its bmap describes %d: the bmap '
                             'does not belong to this image' % (reader.path, total, image_size))
    except (FlashError, ValueError) as exc:
        run.fail_all(str(exc))
    except OSError as exc:
        run.fail_all('reading image %s failed: %s' % (reader.path, exc))


def image_identity(source_path, bmap_path=None):
    """A cheap, stable identity of an image for idempotence records.

    {'source_sha256': SHA-256 of the source file as stored (compressed, not expanded),
     'bmap_sha256': SHA-256 of the bmap file or None, 'source_size': its size in bytes}.
    """
    return {
        'source_sha256': file_sha256(source_path),
        'source_size': os.stat(source_path).st_size,
        'bmap_sha256': file_sha256(bmap_path) if bmap_path else None,
    }


def check_image(source_path, bmap_path=None):
    """Refuse, before any node is touched, an image that cannot be flashed as given.

    Reads the whole expanded image once. Raises FlashError when it expands to nothing, when it is
    corrupt or truncated, when the bmap's ImageSize differs from the image's size, or when a range
    the bmap maps has another checksum than the image's bytes there. Returns {'format', 'size',
    'checked_ranges'}. It costs one decompression: callers remember a success per image and bmap.
    """
    bmap = parse_bmap(bmap_path) if bmap_path else None
    with open_image(source_path) as reader:
        if reader.size == 0:
            raise SourceError('image %s expands to 0 bytes: give the real image' % source_path)
        if bmap is not None and reader.size is not None and reader.size != bmap.image_size:
            raise BmapError('bmap %s describes a %d-byte image but %s expands to %d bytes: use the bmap made '
                            'for this image, or leave bmap out' % (bmap_path, bmap.image_size, source_path, reader.size))
        checked = 0
        for number, (start, end, checksum) in enumerate(bmap.byte_ranges() if bmap is not None else ()):
            while reader.position < start:
                if not reader.read(min(start - reader.position, 4 * MiB)):
                    break
            digest = hashlib.new(bmap.checksum_type) if checksum else None
            while reader.position < end:
                data = reader.read(min(end - reader.position, 4 * MiB))
                if not data:
                    break
                if digest is not None:
                    digest.update(data)
            if reader.position < end:
                raise BmapError('bmap %s maps bytes %d-%d but %s ends at byte %d: use the bmap made for this '
                                'image, or leave bmap out' % (bmap_path, start, end, source_path, reader.position))
            if digest is not None and digest.hexdigest() != checksum:
                raise BmapError('bmap %s does not belong to image %s: range %d (bytes %d-%d) has another checksum: '
                                'use the bmap made for this image, or leave bmap out'
                                % (bmap_path, source_path, number + 1, start, end))
            checked += 1
        while reader.read(4 * MiB):
            pass
        if not reader.position:
            raise SourceError('image %s expands to 0 bytes: give the real image' % source_path)
        if bmap is not None and reader.position != bmap.image_size:
            raise BmapError('bmap %s describes a %d-byte image but %s expands to %d bytes: use the bmap made '
                            'for this image, or leave bmap out' % (bmap_path, bmap.image_size, source_path, reader.position))
        return {'format': reader.format, 'size': reader.position, 'checked_ranges': checked}


def content_digest_of(path, bmap=None, image_size=None, chunk_size=4 * MiB):
    """content_digest of what a disk or file holds: its bmap's ranges (or its first image_size
    bytes when there is no bmap), read past the page cache."""
    if bmap is None and image_size is None:
        raise ValueError('content_digest_of needs a bmap or an image_size')
    ranges = list(bmap.byte_ranges()) if bmap is not None else [(0, image_size, None)]
    content = hashlib.sha256()
    readback = ReadBack(path, chunk_size)
    readback.open()
    try:
        for start, end, checksum in ranges:
            readback.hash_range(start, end, content)
    finally:
        readback.close()
    return content.hexdigest()
