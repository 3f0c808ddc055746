# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One I2C primitive, transfer(msgs), over the kernel bus or the simulator socket.

A transfer is one combined transaction: every message after the first is sent after a repeated
start and one stop ends it, exactly like the kernel's I2C_RDWR ioctl. Both backends raise the same
errors: OSError(ENXIO) when an address is not acknowledged, so retry and error handling above this
layer is identical on a real board and against the simulator.
"""

from __future__ import annotations

import errno
import json
import socket
from collections import namedtuple

try:
    from smbus2 import SMBus, i2c_msg
    HAS_SMBUS2 = True
    SMBUS2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the controller
    HAS_SMBUS2 = False
    SMBUS2_IMPORT_ERROR = exc

I2CMsg = namedtuple('I2CMsg', ['addr', 'data', 'length'])
"""A write carries data (bytes) and length None; a read carries length and data None."""


def write(addr, data):
    """A write message: the bytes go to addr."""
    return I2CMsg(addr, bytes(data), None)


def read(addr, length):
    """A read message: length bytes come back from addr."""
    return I2CMsg(addr, None, int(length))


class I2CError(Exception):
    """A bus that cannot be opened or a peer that breaks the protocol."""


def nack_error(addr):
    return OSError(errno.ENXIO, 'no acknowledge from I2C address 0x%02x' % addr)


def is_nack(exc):
    """True for the errors a bus raises when an address does not answer."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENXIO, errno.EREMOTEIO, errno.EIO)


def _check(msgs):
    if not msgs:
        raise ValueError('an I2C transfer needs at least one message')
    for m in msgs:
        if not 0 <= m.addr <= 0x7F:
            raise ValueError('I2C address 0x%x is outside 0x00..0x7f' % m.addr)
        if (m.data is None) == (m.length is None):
            raise ValueError('an I2C message is either a write or a read')


class KernelBus(object):
    """/dev/i2c-N through smbus2's I2C_RDWR."""

    def __init__(self, number):
        if not HAS_SMBUS2:
            raise I2CError('the smbus2 Python library is missing on the controller: install python3-smbus2 '
                           '(or pip install smbus2)')
        self.name = '/dev/i2c-%d' % number
        try:
            self._bus = SMBus(number)
        except (OSError, IOError) as exc:
            raise I2CError('cannot open I2C bus %s: %s (is I2C enabled: dtparam=i2c_arm=on?)'
                           % (self.name, exc.strerror or exc))

    def transfer(self, msgs):
        _check(msgs)
        raw = [i2c_msg.write(m.addr, m.data) if m.length is None else i2c_msg.read(m.addr, m.length)
               for m in msgs]
        self._bus.i2c_rdwr(*raw)
        return [bytes(list(r)) for m, r in zip(msgs, raw) if m.length is not None]

    def close(self):
        self._bus.close()


class SocketBus(object):
    """The simulator's bus: a Unix stream socket, one JSON object per line each way."""

    def __init__(self, path, timeout=10.0):
        self.name = 'unix:' + path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except (OSError, IOError) as exc:
            self._sock.close()
            raise I2CError('cannot connect to I2C bus socket %s: %s' % (path, exc.strerror or exc))
        self._buf = b''

    def _line(self):
        while b'\n' not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                raise I2CError('I2C bus %s did not answer' % self.name)
            if not chunk:
                raise I2CError('I2C bus %s closed the connection' % self.name)
            self._buf += chunk
        line, self._buf = self._buf.split(b'\n', 1)
        return line

    def transfer(self, msgs):
        _check(msgs)
        req = {'op': 'transfer', 'msgs': [
            {'addr': m.addr, 'write': list(m.data)} if m.length is None else {'addr': m.addr, 'read': m.length}
            for m in msgs]}
        self._sock.sendall(json.dumps(req).encode('ascii') + b'\n')
        try:
            reply = json.loads(self._line().decode('utf-8'))
        except ValueError:
            raise I2CError('I2C bus %s sent a reply that is not JSON' % self.name)
        if not reply.get('ok'):
            if reply.get('error') == 'nack':
                raise nack_error(reply.get('addr', msgs[0].addr))
            raise I2CError('I2C bus %s: %s' % (self.name, reply.get('error', 'unknown error')))
        data = reply.get('data', [])
        reads = [m for m in msgs if m.length is not None]
        if len(data) != len(reads) or any(len(d) != m.length for d, m in zip(data, reads)):
            raise I2CError('I2C bus %s answered with the wrong number of bytes' % self.name)
        return [bytes(d) for d in data]

    def close(self):
        self._sock.close()


def parse_bus(spec):
    """('kernel', N) or ('unix', PATH) from 1, '1', '/dev/i2c-1' or 'unix:PATH'."""
    if isinstance(spec, int):
        return 'kernel', spec
    text = str(spec).strip()
    if text.startswith('unix:') and len(text) > 5:
        return 'unix', text[5:]
    if text.isdigit():
        return 'kernel', int(text)
    if text.startswith('/dev/i2c-') and text[9:].isdigit():
        return 'kernel', int(text[9:])
    raise ValueError("i2c_bus must be a bus number, /dev/i2c-N or unix:PATH, not %r" % (spec,))


def open_bus(spec, timeout=10.0):
    """Open the bus named by spec (see parse_bus). Raises ValueError or I2CError with a clear message."""
    kind, where = parse_bus(spec)
    if kind == 'unix':
        return SocketBus(where, timeout)
    return KernelBus(where)


class Device(object):
    """A chip at one address: register helpers every driver shares."""

    def __init__(self, bus, addr):
        self.bus = bus
        self.addr = addr

    def read_reg(self, reg, length=1):
        return self.bus.transfer([write(self.addr, [reg]), read(self.addr, length)])[0]

    def read_u8(self, reg):
        return self.read_reg(reg, 1)[0]

    def write_u8(self, reg, value):
        self.bus.transfer([write(self.addr, [reg, value & 0xFF])])

    def read_u16_be(self, reg):
        hi, lo = self.read_reg(reg, 2)
        return (hi << 8) | lo

    def write_u16_be(self, reg, value):
        self.bus.transfer([write(self.addr, [reg, (value >> 8) & 0xFF, value & 0xFF])])

    def present(self):
        """True when the address acknowledges a one-byte read."""
        try:
            self.bus.transfer([read(self.addr, 1)])
            return True
        except OSError as exc:
            if is_nack(exc):
                return False
            raise
