# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A dead man's switch for a flash: a forked process that outlives the flash only to clean up.

A flash can be killed in ways it cannot catch (SIGKILL from an async timeout, the OOM killer). The
guardian is forked before the flash takes any lock or opens any device, in a session of its own
(a kill of the flash's process group spares it), and blocks reading a pipe whose only writer is
the flash. A flash that ends normally writes one byte first; end of file without it means the
flash died, and the guardian runs its cleanup (switch the nodes off, release USB boot, note it for
the next run) before it exits.
"""

from __future__ import annotations

import os

_DONE = b'd'


class Guardian(object):

    def __init__(self, on_death):
        self.on_death = on_death
        self.pid = None
        self._write = None

    def start(self):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked child
            code = 0
            try:
                os.close(write)
                os.setsid()
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                # Hold nothing of the flash's: no lock it takes later is shared, no pipe kept open.
                os.closerange(3, read)
                os.closerange(read + 1, 65536)
                data = b''
                while True:
                    try:
                        data = os.read(read, 1)
                        break
                    except InterruptedError:
                        continue
                if data != _DONE:
                    self.on_death()
            except BaseException:  # pylint: disable=broad-except
                code = 1
            finally:
                os._exit(code)
        os.close(read)
        self.pid = pid
        self._write = write
        return self

    def stop(self):
        """The flash ends normally: the guardian exits without doing anything."""
        if self._write is None:
            return
        try:
            os.write(self._write, _DONE)
        finally:
            os.close(self._write)
            self._write = None
        try:
            os.waitpid(self.pid, 0)
        except OSError:
            pass
