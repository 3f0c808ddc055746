# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Operations of control.sock (JSON lines): inspection and fault injection for tests, and the
back end of the fake rpiboot.

  {"op": "ping"}                                   -> {"ok": true, "pid": N, "dir": D, "options": {...}}
  {"op": "state"}                                  -> {"ok": true, "state": {...state.json...}}
  {"op": "set", "jumpers": false, ...}             -> {"ok": true, "changed": [names], "options": {...}}
  {"op": "unplug", "node": 1}                      -> {"ok": true, "disk": "sda"|null, "detached": bool}
  {"op": "decoys", "usb_paths": ["1-1.4"]}         -> {"ok": true, "decoys": {key: {...}}}
  {"op": "hub_reset"}                              -> {"ok": true, "usb_hub": {...}}
  {"op": "hash", "node": 1} | {"op": "hash", "decoy": "loop0"}
                                                   -> {"ok": true, "sha256": hex, "size": N, "allocated": N}
  {"op": "rpiboot", "usb_path": "1-1.2.1"|null, "port": N|null, "payload": "mass-storage-gadget"}
                                                   -> {"ok": true, "served": bool, "node": N|null, ...}
  {"op": "power_cycle", "keep_options": false, "wipe_emmc": false, "wipe_eeprom": false,
                     "clear_decoys": false, "clear_log": false}
                                                   -> {"ok": true}   the hat as just started (EEPROM kept)
  {"op": "console", "node": 1}                     -> {"ok": true, "text": "...last 4 KiB..."}
"""

from __future__ import annotations

import os

from hatsim.options import NODES

PAYLOADS = ('mass-storage-gadget', 'msd')


def _node(request):
    node = request.get('node')
    if isinstance(node, bool) or not isinstance(node, int) or node not in NODES:
        raise ValueError('"node" must be 1..4')
    return node


class Control(object):

    def __init__(self, hat):
        self.hat = hat
        self.ops = {
            'ping': self.ping, 'state': self.state, 'set': self.set, 'unplug': self.unplug, 'decoys': self.decoys,
            'hub_reset': self.hub_reset, 'power_cycle': self.power_cycle, 'hash': self.hash, 'rpiboot': self.rpiboot, 'console': self.console,
            'halt': self.halt,
        }

    def handle(self, request):
        op = request.get('op')
        if op not in self.ops:
            raise ValueError('unknown op %r; known: %s' % (op, ', '.join(sorted(self.ops))))
        reply = self.ops[op](request)
        reply['ok'] = True
        return reply

    def ping(self, request):  # pylint: disable=unused-argument
        return {'pid': os.getpid(), 'dir': self.hat.dir, 'options': self.hat.options.as_dict()}

    def state(self, request):  # pylint: disable=unused-argument
        return {'state': self.hat.state()}

    def set(self, request):
        values = dict((k, v) for k, v in request.items() if k != 'op')
        if not values:
            raise ValueError('"set" needs at least one option')
        changed = self.hat.set_options(values)
        return {'changed': changed, 'options': self.hat.options.as_dict()}

    def unplug(self, request):
        return self.hat.unplug(_node(request))

    def decoys(self, request):
        paths = request.get('usb_paths', ['1-1.4'])
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ValueError('"usb_paths" must be a list of USB port paths')
        return {'decoys': self.hat.make_decoys(paths)}

    def power_cycle(self, request):
        flags = {}
        for name in ('keep_options', 'wipe_emmc', 'wipe_eeprom', 'clear_decoys', 'clear_log'):
            value = request.get(name, False)
            if not isinstance(value, bool):
                raise ValueError('"%s" takes true or false' % name)
            flags[name] = value
        self.hat.power_cycle(**flags)
        return {}

    def hub_reset(self, request):  # pylint: disable=unused-argument
        return {'usb_hub': self.hat.hub_reset()}

    def hash(self, request):
        if 'decoy' in request:
            decoy = self.hat.decoys.get(request['decoy'])
            if decoy is None:
                raise ValueError('no decoy %r (have: %s)' % (request['decoy'], ', '.join(sorted(self.hat.decoys)) or 'none'))
            result = self.hat.hash_file(decoy['backing'])
            result['intact'] = result['sha256'] == decoy['sha256']
            return result
        return self.hat.hash_file(self.hat.nodes[_node(request)].emmc_path)

    def rpiboot(self, request):
        usb_path = request.get('usb_path')
        port = request.get('port')
        payload = request.get('payload', 'mass-storage-gadget')
        if usb_path is not None and not isinstance(usb_path, str):
            raise ValueError('"usb_path" must be a string or null')
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
            raise ValueError('"port" must be an integer or null')
        if not isinstance(payload, str) or not payload:
            raise ValueError('"payload" must be a non-empty string')
        node = self.hat.rpiboot(usb_path, port, payload)
        if node is None:
            return {'served': False, 'node': None}
        return {'served': True, 'node': node, 'usb_path': self.hat.nodes[node].usb_path,
                'disk_delay': self.hat.options.disk_delay}

    def halt(self, request):
        return self.hat.halt(_node(request))

    def console(self, request):
        with self.hat.lock:
            return {'text': self.hat.nodes[_node(request)].console_tail}
