# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's GPIO lines, through one seam: libgpiod on a Pi, a socket for the simulator.

Only two operations are needed: drive lines as outputs at given levels, and release lines to
inputs (so the pull-ups on the hat win again). A released line is explicitly turned into an input
first, because the kernel keeps a line as last configured when its request ends.

  gpiochip0, /dev/gpiochip0   the Pi's header (the BCM2711's pinctrl), through python3-libgpiod
                              (the 1.x bindings of Debian bookworm or the 2.x ones of trixie/PyPI)
  unix:PATH                   a simulated hat, JSON lines: {"op": "output", "lines": {"21": 0}},
                              {"op": "input", "lines": [21]}, {"op": "get", "lines": [21]}
"""

from __future__ import annotations

import json
import os
import re
import socket

try:
    import gpiod
    HAS_GPIOD = True
except ImportError:  # pragma: no cover - depends on the controller
    gpiod = None
    HAS_GPIOD = False
try:  # libgpiod 2.x bindings
    from gpiod.line import Direction, Value
except ImportError:  # pragma: no cover - 1.x bindings, or none
    Direction = Value = None

CONSUMER = 'minicluster.cm4'
DEFAULT_CHIP = 'gpiochip0'
CHIP_RE = re.compile(r'^(/dev/)?gpiochip[0-9]+$')


class GpioError(Exception):
    """Lines that cannot be requested or set, with a message for the operator."""


def parse_spec(spec):
    """('chip', '/dev/gpiochipN') or ('unix', PATH); ValueError for anything else."""
    if not isinstance(spec, str) or any(ord(c) < 32 for c in spec):
        raise ValueError('gpio %r is not a GPIO chip: use gpiochip0, /dev/gpiochip0 or unix:PATH' % (spec,))
    if spec.startswith('unix:') and len(spec) > 5:
        return 'unix', spec[5:]
    if CHIP_RE.match(spec):
        return 'chip', spec if spec.startswith('/dev/') else '/dev/' + spec
    raise ValueError('gpio %r is not a GPIO chip: use gpiochip0, /dev/gpiochip0 or unix:PATH' % (spec,))


class SocketLines(object):
    """The simulator's GPIO socket."""

    def __init__(self, path, timeout=10.0):
        self.name = 'unix:' + path
        try:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        except OSError as exc:
            raise GpioError('cannot connect to the GPIO socket %s: %s' % (path, exc.strerror or exc))
        self._buf = b''

    def _call(self, request):
        self.sock.sendall(json.dumps(request).encode('utf-8') + b'\n')
        while b'\n' not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise GpioError('the GPIO socket %s closed' % self.name)
            self._buf += chunk
        line, self._buf = self._buf.split(b'\n', 1)
        reply = json.loads(line.decode('utf-8'))
        if not reply.get('ok'):
            raise GpioError('GPIO %s: %s' % (self.name, reply.get('error')))
        return reply

    def output(self, values):
        self._call({'op': 'output', 'lines': dict((str(k), int(v)) for k, v in values.items())})

    def release(self, lines):
        self._call({'op': 'input', 'lines': list(lines)})

    def close(self):
        self.sock.close()


class ChipLines(object):
    """A GPIO chip through libgpiod; keeps the output request open until release()."""

    def __init__(self, path):
        if not HAS_GPIOD:
            raise GpioError('the gpiod Python library is missing on the controller: install python3-libgpiod')
        if not os.path.exists(path):
            raise GpioError('GPIO chip %s does not exist: is this the controller Pi?' % path)
        self.name = path
        self._request = None
        self._lines = {}
        self._v2 = Direction is not None and hasattr(gpiod, 'request_lines')

    def output(self, values):
        wanted = dict(self._lines)
        wanted.update(values)
        try:
            if self._request is not None and set(wanted) == set(self._lines):
                # Same lines: change levels on the held request, without a glitch.
                if self._v2:
                    self._request.set_values(dict((o, Value.ACTIVE if v else Value.INACTIVE) for o, v in wanted.items()))
                else:
                    self._request[1].set_values([wanted[o] for o in sorted(wanted)])
                self._lines = wanted
                return
            self._drop()
            if self._v2:
                config = dict((offset, gpiod.LineSettings(
                    direction=Direction.OUTPUT, output_value=Value.ACTIVE if level else Value.INACTIVE))
                    for offset, level in wanted.items())
                self._request = gpiod.request_lines(self.name, consumer=CONSUMER, config=config)
            else:
                chip = gpiod.Chip(self.name)
                offsets = sorted(wanted)
                bulk = chip.get_lines(offsets)
                bulk.request(consumer=CONSUMER, type=gpiod.LINE_REQ_DIR_OUT, default_vals=[wanted[o] for o in offsets])
                self._request = (chip, bulk)
        except (OSError, ValueError) as exc:
            raise GpioError('cannot drive GPIO %s on %s: %s (is another program holding them?)'
                            % (', '.join(str(o) for o in sorted(wanted)), self.name, getattr(exc, 'strerror', None) or exc))
        self._lines = wanted

    def release(self, lines):
        """The lines become inputs again; the others stay as they are."""
        keep = dict((o, v) for o, v in self._lines.items() if o not in lines)
        self._drop()
        try:
            if self._v2:
                config = dict((offset, gpiod.LineSettings(direction=Direction.INPUT)) for offset in lines)
                gpiod.request_lines(self.name, consumer=CONSUMER, config=config).release()
            else:
                chip = gpiod.Chip(self.name)
                bulk = chip.get_lines(sorted(lines))
                bulk.request(consumer=CONSUMER, type=gpiod.LINE_REQ_DIR_IN)
                bulk.release()
                chip.close()
        except (OSError, ValueError) as exc:
            raise GpioError('cannot release GPIO %s on %s: %s' % (', '.join(str(o) for o in sorted(lines)), self.name,
                                                                  getattr(exc, 'strerror', None) or exc))
        self._lines = {}
        if keep:
            self.output(keep)

    def _drop(self):
        if self._request is None:
            return
        if self._v2:
            self._request.release()
        else:
            chip, bulk = self._request
            bulk.release()
            chip.close()
        self._request = None

    def close(self):
        self._drop()


def open_lines(spec):
    kind, where = parse_spec(spec)
    if kind == 'unix':
        return SocketLines(where)
    return ChipLines(where)
