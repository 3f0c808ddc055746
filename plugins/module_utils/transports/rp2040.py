# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client of the RP2040's one-character command console (the hat's stock firmware).

The firmware echoes every byte it receives, answers with one line per command and translates each
'\\n' it prints into '\\r\\n' (the Pico SDK's stdio default; a build without it sends bare '\\n').
It cannot report its pins and keeps one *selected channel* as global state, so every exchange runs
under an exclusive lock shared by all processes on the controller, and a channel is always
selected inside the same locked exchange as the command that depends on it.

The same console answers on two paths: USB CDC behind the hat's hub (/dev/ttyACM0) and the
RP2040's UART1, wired to the Pi's UART5. The lock belongs to the hat, not to a path, so two
processes on the two paths still take turns. When the USB console does not exist (the hub held in
reset by the EEPROM jumpers, or not configured yet) a session falls back to the UART path.

Channels are the firmware's 0..3. Node numbers never reach this file.
"""

from __future__ import annotations

import errno
import os
import re
import time

try:
    import serial
    HAS_PYSERIAL = True
    PYSERIAL_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the controller
    HAS_PYSERIAL = False
    PYSERIAL_IMPORT_ERROR = exc

from ansible_collections.minicluster.cm4.plugins.module_utils.transports.lock import (
    DEFAULT_HAT, DEFAULT_LOCK_DIR, DeviceLock, hat_lock_path)

CHANNELS = (0, 1, 2, 3)

# Command byte -> reply line, as the stock firmware prints them ('Reseting' is its spelling).
ENABLE = 'e'
DISABLE = 'd'
USB_BOOT_ASSERT = 'U'
USB_BOOT_DEASSERT = 'u'
RESET = 'r'
SAMPLE = 's'
AVERAGE = 'a'

REPLIES = {
    ENABLE: re.compile(r'Enable:(\d+)'),
    DISABLE: re.compile(r'Disable:(\d+)'),
    USB_BOOT_ASSERT: re.compile(r'USB boot assert:(\d+)'),
    USB_BOOT_DEASSERT: re.compile(r'USB boot deassert:(\d+)'),
    RESET: re.compile(r'Reseting:(\d+)'),
}
SELECTED_RE = re.compile(r'Switched to channel (\d+)')
SAMPLE_RE = re.compile(r'0x([0-9A-Fa-f]{1,3}) -> (\d+\.\d+) V')
_NUM = r'(-?\d+(?:\.\d+)?)'
AVERAGE_RE = re.compile(r'%s mA,\s*%s mA,\s*%s mA,\s*%s mA' % (_NUM, _NUM, _NUM, _NUM))
REFUSALS = re.compile(r'Unrecognised command: ?(.?)|Unknown input channel')

# 'r' holds RUN low for 100 ms before it answers; 'a' averages 4 x 1000 ADC samples.
DEFAULT_TIMEOUT = 2.0
DRAIN_QUIET = 0.03
DEFAULT_PORT = '/dev/ttyACM0'
# The stable name the hat role gives the Pi's UART5 (the RP2040's UART1).
DEFAULT_UART_PORT = '/dev/cm4hat-uart'
# open() errors that mean "this device does not exist now", the only ones that allow the fallback.
ABSENT_ERRNOS = (errno.ENOENT, errno.ENODEV, errno.ENXIO)


class ConsoleError(Exception):
    """The console could not be opened or did not answer as the stock firmware does."""


def split_lines(data):
    """Complete lines of a byte stream (CRLF or bare LF) and the unfinished rest."""
    text = data.decode('ascii', errors='replace')
    parts = text.split('\n')
    return [p.rstrip('\r') for p in parts[:-1]], parts[-1]


def find_reply(data, echo, pattern):
    """Parse what followed a command: the match of pattern in a complete line after the echo.

    Bytes before the echo (stale or line noise) are skipped. Returns the match, or None while the
    reply is still incomplete. Raises ConsoleError when the firmware refused the command.
    """
    start = data.find(echo)
    if start < 0:
        return None
    lines, dummy = split_lines(data[start + len(echo):])
    # The echo and the reply may share a line ('eEnable:0'), so the echo's own line counts too.
    lines = [echo.decode('ascii', errors='replace') + lines[0]] + lines[1:] if lines else []
    for line in lines:
        refused = REFUSALS.search(line)
        if refused:
            raise ConsoleError('the RP2040 refused %r: %s' % (echo.decode('ascii', errors='replace'), line.strip()))
        found = pattern.search(line)
        if found:
            return found
    return None


def parse_average(line):
    """'A mA,B mA,C mA,D mA' -> [A, B, C, D] as floats (channel 0 first)."""
    found = AVERAGE_RE.fullmatch(line.strip())
    if not found:
        raise ValueError('not an ADC average line: %r' % line)
    return [float(v) for v in found.groups()]


def parse_sample(line):
    """'0xHHH -> V.VVVVVV V' -> (raw count, volts)."""
    found = SAMPLE_RE.search(line)
    if not found:
        raise ValueError('not an ADC sample line: %r' % line)
    return int(found.group(1), 16), float(found.group(2))


class RP2040Console(object):
    """One locked conversation with the firmware: use as a context manager."""

    def __init__(self, port, lock_timeout=30.0, lock_dir=DEFAULT_LOCK_DIR, timeout=DEFAULT_TIMEOUT, baudrate=115200,
                 fallback_port=None, hat=DEFAULT_HAT):
        self.port = port
        self.fallback_port = fallback_port or None
        self.timeout = timeout
        self.baudrate = baudrate
        self.lock = DeviceLock(hat_lock_path(hat, lock_dir), lock_timeout)
        self.selected = None
        self.sent = []
        self.used_port = None
        self._serial = None
        self._quiet = False

    @property
    def path_name(self):
        """'uart' when the session runs over the fallback (UART) port, 'usb' otherwise."""
        if self.used_port is not None and self.used_port == self.fallback_port:
            return 'uart'
        return 'usb' if self.used_port is not None else None

    # -- session ----------------------------------------------------------------------------
    def _open_one(self, port):
        # Short reads: every wait below has its own deadline.
        return serial.serial_for_url(port, baudrate=self.baudrate, timeout=0.05, write_timeout=self.timeout)

    @staticmethod
    def _absent(port, exc):
        if '://' not in port and not os.path.exists(port):
            return True
        return getattr(exc, 'errno', None) in ABSENT_ERRNOS

    def open(self):
        if not HAS_PYSERIAL:
            raise ConsoleError('the pyserial Python library is missing on the controller: install python3-serial '
                               '(or pip install pyserial)')
        self.lock.acquire()
        ports = [self.port] + ([self.fallback_port] if self.fallback_port and self.fallback_port != self.port else [])
        failures = []
        for port in ports:
            try:
                self._serial = self._open_one(port)
            except (serial.SerialException, OSError, ValueError) as exc:
                failures.append('%s: %s' % (port, getattr(exc, 'strerror', None) or exc))
                if self._absent(port, exc):
                    continue
                break
            self.used_port = port
            break
        if self._serial is None:
            self.lock.release()
            raise ConsoleError('cannot open the RP2040 console %s; is the hat connected and the port right%s?'
                               % ('; nor its UART path '.join(failures),
                                  ' (the UART path needs the hat role)' if len(failures) > 1 else ''))
        # Another program may have left the firmware on any channel.
        self.selected = None
        self._quiet = False
        return self

    def close(self):
        if self._serial is not None:
            try:
                self._serial.close()
            finally:
                self._serial = None
                self.lock.release()

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    # -- bytes ------------------------------------------------------------------------------
    def _drain(self):
        """Discard anything already waiting (a reply nobody read, line noise).

        The first exchange of a session also waits for the line to go quiet: a process killed
        mid-exchange may have left a reply in flight. Later ones follow complete replies.
        """
        self._serial.reset_input_buffer()
        if self._quiet:
            while self._serial.in_waiting:
                self._serial.read(self._serial.in_waiting)
            return
        self._quiet = True
        deadline = time.monotonic() + self.timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if self._serial.read(self._serial.in_waiting or 1):
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= DRAIN_QUIET:
                return

    def exchange(self, command, pattern):
        """Send command (str) whole, return the match of pattern in its reply."""
        self._drain()
        echo = command.encode('ascii')
        # One write: a lone 'c' would leave the firmware waiting for a digit.
        self._serial.write(echo)
        self._serial.flush()
        self.sent.append(command)
        data = b''
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                found = find_reply(data, echo, pattern)
            except ConsoleError:
                # The help text that follows a refusal is still arriving.
                self._quiet = False
                raise
            if found:
                return found
            if time.monotonic() >= deadline:
                self._quiet = False
                seen = data.decode('ascii', errors='replace').strip()
                raise ConsoleError('no reply to %r from the RP2040 on %s within %.1fs (%s); is it running the stock firmware?'
                                   % (command, self.used_port, self.timeout, 'got %r' % seen[-60:] if seen else 'silent'))
            data += self._serial.read(self._serial.in_waiting or 1)

    # -- commands ---------------------------------------------------------------------------
    def select(self, channel):
        if channel not in CHANNELS:
            raise ValueError('RP2040 channel %r is outside 0..3' % (channel,))
        if self.selected == channel:
            return
        got = int(self.exchange('c%d' % channel, SELECTED_RE).group(1))
        if got != channel:
            raise ConsoleError('the RP2040 on %s switched to channel %d, not %d' % (self.used_port, got, channel))
        self.selected = channel

    def pin(self, channel, command):
        """One of ENABLE, DISABLE, USB_BOOT_ASSERT, USB_BOOT_DEASSERT, RESET on a channel."""
        self.select(channel)
        got = int(self.exchange(command, REPLIES[command]).group(1))
        if got != channel:
            self.selected = None
            raise ConsoleError('the RP2040 on %s answered %r for channel %d, expected %d' % (self.used_port, command, got, channel))

    def averages(self):
        """ADC averages of the four channels in reported units (millivolts labelled mA)."""
        return [float(v) for v in self.exchange(AVERAGE, AVERAGE_RE).groups()]

    def sample(self, channel):
        self.select(channel)
        return parse_sample(self.exchange(SAMPLE, SAMPLE_RE).group(0))
