# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A pseudo-terminal that behaves like a USB CDC or UART port seen from the controller.

The slave side is put in raw mode once (no echo, no newline translation by the tty layer: the
firmware model produces every byte itself). The simulator does not keep the slave open, so the
master reports POLLHUP while no program has the port open; that stands in for DTR:

* Output written while nobody has the port open is dropped, as the Pico SDK's USB stdio drops it
  without a connected host and as a closed UART on the Pi discards what arrives.
* When the last program closes the port, what it left unread is flushed, so the next program does
  not see stale bytes (a real ttyACM starts empty).
* A write that the reader does not take within 0.5 s is dropped (PICO_STDIO_USB_STDOUT_TIMEOUT_US).
"""

from __future__ import annotations

import errno
import os
import select
import termios
import time
import tty

WRITE_TIMEOUT = 0.5
IDLE_POLL = 0.05


def drain(fd):
    """Empty a non-blocking wake-up pipe."""
    try:
        while os.read(fd, 64):
            pass
    except OSError:
        pass


class PtyPort(object):

    def __init__(self, link_path):
        self.link_path = link_path
        self.master, slave = os.openpty()
        self.slave_name = os.ttyname(slave)
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        # Raw already clears OPOST (so no ONLCR) and ECHO; also ignore modem control lines.
        attrs[2] |= termios.CLOCAL
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.close(slave)
        os.set_blocking(self.master, False)
        self._connected = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.closed = False
        if os.path.lexists(link_path):
            os.unlink(link_path)
        os.symlink(self.slave_name, link_path)

    # -- connection (DTR stand-in) ------------------------------------------------------------
    def _hup(self):
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        events = poller.poll(0)
        return bool(events and events[0][1] & select.POLLHUP)

    def connected(self):
        """True while some program has the port open. Flushes stale output on a disconnect."""
        now_connected = not self._hup()
        if self._connected and not now_connected:
            self._flush_unread()
        self._connected = now_connected
        return now_connected

    def _flush_unread(self):
        try:
            fd = os.open(self.slave_name, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return
        try:
            termios.tcflush(fd, termios.TCIFLUSH)
        finally:
            os.close(fd)

    # -- input --------------------------------------------------------------------------------
    def wake(self):
        try:
            os.write(self._wake_w, b'x')
        except OSError:
            pass

    def read(self, timeout=None):
        """Bytes the controller sent; b'' on timeout or wake-up. Never spins while disconnected."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.closed:
            if not self.connected():
                wait = IDLE_POLL if deadline is None else min(IDLE_POLL, deadline - time.monotonic())
                if wait <= 0:
                    return b''
                ready, dummy, dummy2 = select.select([self._wake_r], [], [], wait)
                if ready:
                    self._drain_wake()
                    return b''
                continue
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, dummy, dummy2 = select.select([self.master, self._wake_r], [], [], wait)
            if self._wake_r in ready:
                self._drain_wake()
                return b''
            if not ready:
                return b''
            try:
                data = os.read(self.master, 4096)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EIO):
                    # EIO: the last reader closed between poll and read; loop to notice it.
                    continue
                raise
            if data:
                return data
        return b''

    def _drain_wake(self):
        drain(self._wake_r)

    # -- output -------------------------------------------------------------------------------
    def write(self, data):
        """Send bytes to the controller; returns how many were delivered (the rest were dropped)."""
        if self.closed or not data or not self.connected():
            return 0
        sent = 0
        deadline = time.monotonic() + WRITE_TIMEOUT
        while sent < len(data):
            try:
                sent += os.write(self.master, data[sent:])
                continue
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EIO):
                    raise
                if exc.errno == errno.EIO:
                    return sent
            left = deadline - time.monotonic()
            if left <= 0:
                break
            select.select([], [self.master], [], left)
        return sent

    def stop(self):
        """Ask the owning thread to leave read(); it then calls release()."""
        self.closed = True
        self.wake()

    def release(self):
        """Close the pty and remove its link (by the owning thread, after its loop ended)."""
        self.closed = True
        for fd in (self.master, self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            if os.path.islink(self.link_path):
                os.unlink(self.link_path)
        except OSError:
            pass
