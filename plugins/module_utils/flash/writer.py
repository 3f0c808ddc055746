# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One flash target: a block device or a regular file (the simulator's eMMC backing files).

A target is opened read-write without O_CREAT or O_TRUNC: a mistyped path fails instead of
becoming a new file, and a regular file keeps its size and whatever the image does not cover. A
block device is opened with O_EXCL, which the kernel refuses while the device is mounted or held
by another claimant.

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

    def __init__(self, name, path, alive=None):
        self.name = name
        self.path = path
        self.alive = alive
        self.fd = None
        self.size = None
        self.is_block = False
        self.bytes_written = 0

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
        view = memoryview(data)
        done = 0
        while done < len(view):
            try:
                n = _pwrite(self.fd, view[done:], offset + done)
            except OSError as exc:
                raise TargetError('%s: write at byte %d failed: %s'
                                  % (self.path, offset + done, _reason(exc))) from None
            if n <= 0:
                raise TargetError('%s: write at byte %d wrote nothing' % (self.path, offset + done))
            done += n
        self.bytes_written += done

    def sync(self, data_only=False):
        try:
            (os.fdatasync if data_only else os.fsync)(self.fd)
        except OSError as exc:
            raise TargetError('%s: flushing to the device failed: %s'
                              % (self.path, _reason(exc))) from None

    def close(self):
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


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
