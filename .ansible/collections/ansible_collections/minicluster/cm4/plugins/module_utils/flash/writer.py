# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One flash target: a block device or a regular file (the simulator's eMMC backing files).

A target is opened read-write without O_CREAT or O_TRUNC: a mistyped path fails instead of
becoming a new file, and a regular file keeps its size and whatever the image does not cover. A
block device is opened with O_EXCL, which the kernel refuses while the device is mounted or held
by another claimant.

Writes use O_DIRECT from a page-aligned buffer whenever the piece is 4 KiB-aligned (every bmap
range is): the data goes to the device without passing through the page cache, so flashing does
not fill the controller's memory with dirty pages, an I/O error surfaces at the write that caused
it, and progress counts bytes the device accepted. The copy into the aligned buffer costs less
than the page cache's own copy and bookkeeping. Unaligned pieces (a partial last block) and file
systems without O_DIRECT take ordinary writes; fsync at the end covers both.

Read-back bypasses the page cache: O_DIRECT with page-aligned buffers and 4 KiB-aligned offsets
and lengths (a multiple of every logical block size in use), and where the file system refuses
O_DIRECT, POSIX_FADV_DONTNEED after the data was synced, then ordinary reads.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import stat
import struct

from ansible_collections.minicluster.cm4.plugins.module_utils.flash.errors import TargetError

BLKGETSIZE64 = 0x80081272   # <linux/fs.h>: _IOR(0x12, 114, size_t)
DIRECT_ALIGN = 4096

# Seams for fault tests: every write and read-back goes through these.
_pwrite = os.pwrite
_preadv = os.preadv


def _reason(exc):
    if isinstance(exc, OSError) and exc.errno:
        return '%s (%s)' % (exc.strerror or os.strerror(exc.errno), errno.errorcode.get(exc.errno, exc.errno))
    return str(exc) or exc.__class__.__name__


def device_size(fd):
    """Size in bytes of the open block device or regular file."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b'\0' * 8)
        return struct.unpack('Q', buf)[0]
    return st.st_size


class Target:
    """A destination of the image. Methods raise TargetError with a one-line message."""

    def __init__(self, name, path, alive=None, buffer_size=4 * 1024 * 1024):
        self.name = name
        self.path = path
        self.alive = alive
        self.fd = None
        self.direct_fd = None
        self.size = None
        self.is_block = False
        self.bytes_written = 0
        self.buffer_size = max(DIRECT_ALIGN, buffer_size - buffer_size % DIRECT_ALIGN)
        self._buf = None

    def open(self):
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise TargetError('%s: cannot use target: %s' % (self.path, _reason(exc))) from None
        flags = os.O_RDWR | os.O_CLOEXEC
        if stat.S_ISBLK(st.st_mode):
            self.is_block = True
            flags |= os.O_EXCL
        elif not stat.S_ISREG(st.st_mode):
            raise TargetError('%s: not a block device or regular file' % self.path)
        try:
            self.fd = os.open(self.path, flags)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise TargetError('%s: device is in use (mounted or claimed); refusing to write'
                                  % self.path) from None
            raise TargetError('%s: cannot open for writing: %s' % (self.path, _reason(exc))) from None
        try:
            self.size = device_size(self.fd)
        except OSError as exc:
            self.close()
            raise TargetError('%s: cannot read its size: %s' % (self.path, _reason(exc))) from None
        try:
            # A second descriptor: the O_EXCL claim above stays with the first one.
            self.direct_fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC | os.O_DIRECT)
            self._buf = mmap.mmap(-1, self.buffer_size)
        except OSError:
            self.direct_fd = None

    def require(self, nbytes):
        """Refuse a target that cannot hold nbytes (the whole image, before anything is written)."""
        if self.size < nbytes:
            raise TargetError('%s: target holds %d bytes, the image needs %d; nothing written'
                              % (self.path, self.size, nbytes))

    def check_alive(self):
        if self.alive is not None and not self.alive():
            raise TargetError('%s: disk is gone' % self.path)

    def write(self, offset, data):
        """Write data at offset, all of it."""
        end = offset + len(data)
        if end > self.size:
            raise TargetError('%s: image runs past the end of the target (%d bytes) at byte %d'
                              % (self.path, self.size, end))
        size = len(data)
        done = 0
        if (self.direct_fd is not None and size <= self.buffer_size
                and not (offset | size) % DIRECT_ALIGN):
            self._buf[:size] = data
            done = self._pwrite_all(self.direct_fd, memoryview(self._buf)[:size], offset)
        if done < size:
            done += self._pwrite_all(self.fd, memoryview(data)[done:], offset + done)
        self.bytes_written += done

    def _pwrite_all(self, fd, view, offset):
        """Write view at offset through fd; on the O_DIRECT descriptor, stop (and return what was
        written) where the kernel refuses alignment or a short write leaves an unaligned rest."""
        done = 0
        while done < len(view):
            try:
                n = _pwrite(fd, view[done:], offset + done)
            except OSError as exc:
                if fd == self.direct_fd and exc.errno == errno.EINVAL:
                    self._no_direct()
                    return done
                raise TargetError('%s: write at byte %d failed: %s'
                                  % (self.path, offset + done, _reason(exc))) from None
            if n <= 0:
                raise TargetError('%s: write at byte %d wrote nothing' % (self.path, offset + done))
            done += n
            if fd == self.direct_fd and done % DIRECT_ALIGN:
                return done
        return done

    def _no_direct(self):
        if self.direct_fd is not None:
            os.close(self.direct_fd)
            self.direct_fd = None

    def sync(self, data_only=False):
        try:
            (os.fdatasync if data_only else os.fsync)(self.fd)
        except OSError as exc:
            raise TargetError('%s: flushing to the device failed: %s'
                              % (self.path, _reason(exc))) from None

    def close(self):
        for fd in (self.direct_fd, self.fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fd = self.direct_fd = None
        if self._buf is not None:
            self._buf.close()
            self._buf = None


class ReadBack:
    """Reads a target's byte ranges from the device rather than from the page cache."""

    def __init__(self, path, buffer_size):
        self.path = path
        self.buffer_size = max(DIRECT_ALIGN, buffer_size - buffer_size % DIRECT_ALIGN)
        self.direct = True
        self.fd = None
        self._buf = None

    def open(self):
        path = self.path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise TargetError('%s: cannot open for read-back: %s' % (path, _reason(exc))) from None
            self._buffered()
        # Anonymous mappings are page aligned, as O_DIRECT needs.
        self._buf = mmap.mmap(-1, self.buffer_size)

    def _buffered(self):
        """No O_DIRECT here (tmpfs, some FUSE): drop the cached pages and read through the cache."""
        if self.fd is not None:
            os.close(self.fd)
        self.direct = False
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)

    def _drop_cache(self, start, end):
        if not self.direct:
            try:
                os.posix_fadvise(self.fd, start, end - start, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass

    def hash_range(self, start, end, digest=None):
        """Feed the bytes [start, end) to digest (a new SHA-256 by default) and return it."""
        if digest is None:
            digest = hashlib.sha256()
        self._drop_cache(start, end)
        pos = start - start % DIRECT_ALIGN
        view = memoryview(self._buf)
        while pos < end:
            want = min(self.buffer_size, end - pos)
            want += -want % DIRECT_ALIGN
            try:
                got = _preadv(self.fd, [view[:want]], pos)
            except OSError as exc:
                if exc.errno == errno.EINVAL and self.direct:
                    self._buffered()
                    self._drop_cache(start, end)
                    continue
                raise TargetError('%s: read-back at byte %d failed: %s'
                                  % (self.path, pos, _reason(exc))) from None
            lo = max(start, pos) - pos
            hi = min(end, pos + got) - pos
            if hi <= lo:
                raise TargetError('%s: read-back at byte %d came back short' % (self.path, pos))
            digest.update(view[lo:hi])
            pos += got
            if got < want and pos < end:
                raise TargetError('%s: read-back at byte %d came back short' % (self.path, pos))
        return digest

    def close(self):
        if self._buf is not None:
            self._buf.close()
            self._buf = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
