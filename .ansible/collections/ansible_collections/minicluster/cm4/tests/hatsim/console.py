# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A node's serial console: output only (input is read and discarded, as a booting node ignores it)."""

from __future__ import annotations

import collections
import logging
import threading

from hatsim.ptyport import PtyPort

LOG = logging.getLogger('hatsim')


class ConsolePort(object):

    def __init__(self, link_path, name):
        self.port = PtyPort(link_path)
        self.name = name
        self._queue = collections.deque()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self):
        self._thread.start()

    def emit(self, text):
        """Queue text for the console; '\\n' goes out as '\\r\\n' like a Linux tty with ONLCR."""
        data = text.replace('\r\n', '\n').replace('\n', '\r\n').encode('utf-8', errors='replace')
        with self._lock:
            self._queue.append(data)
        self.port.wake()

    def _run(self):
        try:
            while not self.port.closed:
                self.port.read()  # wakes on input (discarded), on emit() and on stop()
                while True:
                    with self._lock:
                        if not self._queue:
                            break
                        data = self._queue.popleft()
                    try:
                        self.port.write(data)
                    except OSError:
                        LOG.exception('%s: write failed', self.name)
        finally:
            self.port.release()

    def stop(self):
        self.port.stop()
        self._thread.join(5)
