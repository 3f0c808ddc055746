# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An exclusive lock shared by every process on the controller that talks to one device.

flock() on a file: the kernel drops it when the holder dies, so a killed ansible-playbook never
leaves the hat locked. A device reachable by several paths (the RP2040 answers on USB and on the
Pi's UART5) is locked by its identity, not by the path in use: see hat_lock_path.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time

from ansible_collections.minicluster.cm4.plugins.module_utils.common.files import ensure_dir

DEFAULT_LOCK_DIR = '/run/lock'
DEFAULT_HAT = 'hat0'
HAT_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$')


class LockTimeout(Exception):
    pass


def lock_path_for(device, lock_dir=DEFAULT_LOCK_DIR):
    """The lock file of a device: one per real device, whatever path or link names it."""
    target = device
    if '://' not in device:
        target = os.path.realpath(device)
    name = re.sub(r'[^A-Za-z0-9_.-]+', '_', target).strip('_') or 'device'
    return os.path.join(lock_dir, 'minicluster-cm4.%s.lock' % name)


def check_hat_name(hat):
    """A hat identity usable in a file name: letters, digits, '_', '.', '-' (at most 64)."""
    if not isinstance(hat, str) or not HAT_NAME_RE.match(hat):
        raise ValueError('hat %r is not a hat name: use letters, digits, "_", "." or "-" (at most 64, '
                         'starting with a letter or digit), e.g. hat0' % (hat,))
    return hat


def hat_lock_path(hat=DEFAULT_HAT, lock_dir=DEFAULT_LOCK_DIR):
    """The lock of one hat, whichever of its RP2040's paths (USB CDC, UART5) a process opens."""
    return os.path.join(lock_dir, 'minicluster-cm4.%s.lock' % check_hat_name(hat))


class DeviceLock(object):
    """Re-entrant within one object, exclusive across processes."""

    def __init__(self, path, timeout=30.0, poll=0.02):
        self.path = path
        self.timeout = timeout
        self.poll = poll
        self._fd = None
        self._depth = 0

    def acquire(self):
        if self._depth:
            self._depth += 1
            return
        ensure_dir(os.path.dirname(self.path))
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o660)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout('another process has held the lock %s for over %ss' % (self.path, self.timeout))
                time.sleep(self.poll)
        self._fd = fd
        self._depth = 1

    def release(self):
        if not self._depth:
            return
        self._depth -= 1
        if not self._depth:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
