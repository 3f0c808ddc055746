# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The RP2040's stdio over two ports at once, as the Pico SDK wires it with USB and UART enabled.

The stock firmware's getchar() takes a byte from whichever driver has one, and printf() goes out
on every driver: the USB CDC port (`DIR/rp2040`, behind the hub) and UART1, wired to the Pi's
UART5 (`DIR/rp2040-uart`). A reply to a command typed on one path therefore also reaches a
program that has the other path open (each port still drops output while nobody has it open).

While the RP2040 runs no firmware (held in reset by the Pi's GPIO25, or in its boot ROM) nothing
reads the ports: what arrives is lost, nothing is echoed. The USB port's name exists only while
the RP2040 enumerates as a CDC device behind a working hub; `visible` adds and removes it.
"""

from __future__ import annotations

import errno
import os
import select

from hatsim.ptyport import IDLE_POLL, drain


class Stdio(object):

    def __init__(self, ports, running):
        """ports: {'usb': PtyPort, 'uart': PtyPort}; running(): True while the firmware runs."""
        self.ports = ports
        self.running = running
        self.last_source = None
        self.closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def read(self):
        """Bytes from either port (the firmware's getchar); b'' when woken to stop."""
        while not self.closed:
            live = dict((port.master, name) for name, port in self.ports.items() if port.connected())
            ready, dummy, dummy2 = select.select(list(live) + [self._wake_r], [], [], IDLE_POLL)
            if self._wake_r in ready:
                drain(self._wake_r)
                return b''
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EIO):
                        continue
                    raise
                if data and self.running():
                    self.last_source = live[fd]
                    return data
        return b''

    def write(self, data):
        return max([port.write(data) for port in self.ports.values()] or [0])

    def visible(self, name, shown):
        """Add or remove the port's name in DIR (the device node of a USB port that comes and goes)."""
        port = self.ports[name]
        if shown and not os.path.lexists(port.link_path):
            os.symlink(port.slave_name, port.link_path)
        elif not shown and os.path.islink(port.link_path):
            os.unlink(port.link_path)

    def stop(self):
        self.closed = True
        try:
            os.write(self._wake_w, b'x')
        except OSError:
            pass

    def release(self):
        self.closed = True
        for port in self.ports.values():
            port.release()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
