# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backing files of the simulated disks: sparse eMMC images, decoys, and cutting off writers.

A real USB disk that goes away makes its writer's next write fail. A regular file cannot do that
to a file descriptor that is already open, so the simulator does the next best thing: when a disk
goes away while some process holds its backing file open, the eMMC image is copied (sparsely, or
reflinked) to a new inode that takes the image's name. The writer keeps an fd on the old inode,
now unlinked: its later writes succeed but land nowhere, exactly as data sent to an unplugged
disk never reaches it, and fstat(fd).st_nlink == 0 tells it the disk is gone. The eMMC keeps what
was written before the removal.
"""

from __future__ import annotations

import fcntl
import hashlib
import os

FICLONE = 0x40049409
DECOY_SIZE = 16 * 1024 * 1024


def ensure_image(path, size):
    """A sparse file of exactly size bytes (created, or resized when the eMMC size changed)."""
    with open(path, 'ab'):
        pass
    if os.path.getsize(path) != size:
        os.truncate(path, size)


def holders(path):
    """PIDs of processes (this user can see) with path open."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    pids = []
    me = str(os.getpid())
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or pid == me:
            continue
        fd_dir = os.path.join('/proc', pid, 'fd')
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                fst = os.stat(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino):
                pids.append(int(pid))
                break
    return pids


def _sparse_copy(src_fd, dst_fd, size):
    offset = 0
    while offset < size:
        try:
            data_start = os.lseek(src_fd, offset, os.SEEK_DATA)
        except OSError:
            break  # no more data: the rest is a hole
        hole = os.lseek(src_fd, data_start, os.SEEK_HOLE)
        pos = data_start
        while pos < hole:
            chunk = os.pread(src_fd, min(1 << 20, hole - pos), pos)
            if not chunk:
                break
            os.pwrite(dst_fd, chunk, pos)
            pos += len(chunk)
        offset = hole
    os.ftruncate(dst_fd, size)


def detach_if_open(path):
    """Give path a fresh inode with the same content if anyone holds it open. True if done."""
    if not holders(path):
        return False
    tmp = path + '.detach'
    src = os.open(path, os.O_RDONLY)
    try:
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            size = os.fstat(src).st_size
            try:
                fcntl.ioctl(dst, FICLONE, src)
            except OSError:
                _sparse_copy(src, dst, size)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    os.replace(tmp, path)
    return True


def make_decoy_image(path, label):
    """A small sparse image with a recognisable head and tail; returns its sha256."""
    if not os.path.exists(path):
        marker = ('HATSIM DECOY %s: must never be written\n' % label).encode('ascii')
        with open(path, 'wb') as f:
            f.write((marker * (4096 // len(marker) + 1))[:4096])
            f.truncate(DECOY_SIZE)
            f.seek(DECOY_SIZE - len(marker))
            f.write(marker)
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()
