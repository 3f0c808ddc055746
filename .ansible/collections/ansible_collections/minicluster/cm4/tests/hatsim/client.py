# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Clients of the simulator's sockets: Control (control.sock) and I2C (raw bus protocol)."""

from __future__ import annotations

import json
import os
import socket


class ControlError(Exception):
    """The simulator refused a request or could not be reached."""


class _LineClient(object):

    def __init__(self, path, timeout=30.0):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise ControlError('cannot connect to %s: %s (is the simulator running?)' % (path, exc))
        self._buf = b''

    def call(self, request):
        """Send one request object, return the reply object (whatever its "ok")."""
        self.sock.sendall(json.dumps(request).encode('utf-8') + b'\n')
        while b'\n' not in self._buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ControlError('%s closed the connection' % self.path)
            self._buf += chunk
        line, self._buf = self._buf.split(b'\n', 1)
        return json.loads(line.decode('utf-8'))

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Control(_LineClient):
    """Control(dir) talks to DIR/control.sock. Every method returns the reply dict."""

    def __init__(self, directory, timeout=30.0):
        path = directory if directory.endswith('.sock') else os.path.join(directory, 'control.sock')
        super(Control, self).__init__(path, timeout)

    def request(self, op, **args):
        args['op'] = op
        reply = self.call(args)
        if not reply.get('ok'):
            raise ControlError('%s: %s' % (op, reply.get('error')))
        return reply

    def ping(self):
        return self.request('ping')

    def state(self):
        return self.request('state')['state']

    def set(self, **options):
        return self.request('set', **options)

    def unplug(self, node):
        return self.request('unplug', node=node)

    def decoys(self, usb_paths=None):
        return self.request('decoys', **({'usb_paths': list(usb_paths)} if usb_paths else {}))['decoys']

    def power_cycle(self, keep_options=False, wipe_emmc=False, wipe_eeprom=False, clear_decoys=False, clear_log=False):
        return self.request('power_cycle', keep_options=keep_options, wipe_emmc=wipe_emmc, wipe_eeprom=wipe_eeprom,
                            clear_decoys=clear_decoys, clear_log=clear_log)

    def hub_reset(self):
        return self.request('hub_reset')['usb_hub']

    def hash(self, node=None, decoy=None):
        return self.request('hash', **({'decoy': decoy} if decoy else {'node': node}))

    def rpiboot(self, usb_path=None, port=None, payload='mass-storage-gadget'):
        return self.request('rpiboot', usb_path=usb_path, port=port, payload=payload)

    def console(self, node):
        return self.request('console', node=node)['text']


class I2C(_LineClient):
    """Raw access to a bus socket: transfer() returns the protocol's reply dict unchanged."""

    def transfer(self, *msgs):
        return self.call({'op': 'transfer', 'msgs': list(msgs)})

    def read_reg(self, addr, reg, count):
        reply = self.transfer({'addr': addr, 'write': [reg]}, {'addr': addr, 'read': count})
        if not reply.get('ok'):
            raise ControlError('I2C 0x%02x: %s' % (addr, reply))
        return reply['data'][0]

    def write(self, addr, data):
        reply = self.transfer({'addr': addr, 'write': list(data)})
        if not reply.get('ok'):
            raise ControlError('I2C 0x%02x: %s' % (addr, reply))
        return reply
