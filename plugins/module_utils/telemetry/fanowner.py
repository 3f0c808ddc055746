# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One owner of the fan at a time.

The fan-curve daemon holds an exclusive flock() on an owner file for as long as it drives the
EMC2301 and writes its pid and name into it; the fan module refuses to write while someone holds
it. The kernel drops the lock when the holder dies, so a killed daemon never blocks the module.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re

from ansible_collections.minicluster.cm4.plugins.module_utils.common.files import ensure_dir
from ansible_collections.minicluster.cm4.plugins.module_utils.transports import i2c


def owner_path(bus_spec, lock_dir='/run/lock'):
    """The owner file of the fan on an I2C bus: one per bus, whatever spelling names it."""
    kind, where = i2c.parse_bus(bus_spec)
    name = 'i2c-%d' % where if kind == 'kernel' else os.path.realpath(where)
    name = re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('_')
    return os.path.join(lock_dir, 'minicluster-cm4.fan.%s.owner' % name)


class FanOwned(Exception):
    """Someone else drives the fan."""


def holder(path):
    """'NAME (pid N)' of whoever holds the owner file, or None when nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            text = os.read(fd, 200).decode('utf-8', 'replace').strip()
            return text or 'another process'
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class FanOwner(object):

    def __init__(self, path, name):
        self.path = path
        self.name = name
        self._fd = None

    @property
    def held(self):
        return self._fd is not None

    def acquire(self):
        """Take ownership; raises FanOwned naming the holder when another process has it."""
        if self._fd is not None:
            return
        ensure_dir(os.path.dirname(self.path))
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise FanOwned('the fan is driven by %s (owner file %s)' % (holder(self.path) or 'another process', self.path))
        os.ftruncate(fd, 0)
        os.write(fd, ('%s (pid %d)\n' % (self.name, os.getpid())).encode('utf-8'))
        self._fd = fd

    def release(self):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
