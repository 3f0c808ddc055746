# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An I2C bus: combined transactions of write/read messages, as the kernel's I2C_RDWR makes them.

Request  {"op": "transfer", "msgs": [{"addr": 80, "write": [0, 16]}, {"addr": 80, "read": 4}]}
Reply    {"ok": true, "data": [[1, 2, 3, 4]]}   one list per read message, in order
      or {"ok": false, "error": "nack", "addr": 80}   the first message whose address nobody
         acknowledged; the messages before it took effect, then the master sent STOP.
"""

from __future__ import annotations

import time

MAX_READ = 65535


def parse_msgs(request):
    """Validate a transfer request -> [(addr, 'w', bytes) | (addr, 'r', count)]. Raises ValueError."""
    if request.get('op') != 'transfer':
        raise ValueError('unknown op %r: this bus only does "transfer"' % (request.get('op'),))
    msgs = request.get('msgs')
    if not isinstance(msgs, list) or not msgs:
        raise ValueError('"msgs" must be a non-empty list of messages')
    out = []
    for i, msg in enumerate(msgs):
        if not isinstance(msg, dict):
            raise ValueError('message %d is not an object' % i)
        addr = msg.get('addr')
        if isinstance(addr, bool) or not isinstance(addr, int) or not 0 <= addr <= 0x7F:
            raise ValueError('message %d: "addr" must be an integer 0..127' % i)
        has_write, has_read = 'write' in msg, 'read' in msg
        if has_write == has_read:
            raise ValueError('message %d must have exactly one of "write" or "read"' % i)
        extra = set(msg) - set(('addr', 'write', 'read'))
        if extra:
            raise ValueError('message %d has unknown keys %s' % (i, sorted(extra)))
        if has_write:
            data = msg['write']
            if not isinstance(data, list) or any(isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= 255
                                                 for b in data):
                raise ValueError('message %d: "write" must be a list of bytes 0..255' % i)
            out.append((addr, 'w', bytes(data)))
        else:
            count = msg['read']
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_READ:
                raise ValueError('message %d: "read" must be a byte count 0..%d' % (i, MAX_READ))
            out.append((addr, 'r', count))
    return out


class Bus(object):
    """resolve(addr) -> the target answering at addr now, or None. All buses share one lock."""

    def __init__(self, name, resolve, lock, on_change=None):
        self.name = name
        self.resolve = resolve
        self.lock = lock
        self.on_change = on_change
        self.transactions = 0
        self.nacks = 0

    def transfer(self, msgs):
        """Run one transaction; returns the reply dict of the socket protocol."""
        with self.lock:
            self.transactions += 1
            touched = []
            data = []
            reply = None
            for i, (addr, kind, payload) in enumerate(msgs):
                now = time.monotonic()
                if i:
                    for target in touched:
                        target.repeated_start()
                target = self.resolve(addr)
                if target is None or not target.acks(now):
                    self.nacks += 1
                    reply = {'ok': False, 'error': 'nack', 'addr': addr}
                    break
                if target not in touched:
                    touched.append(target)
                if kind == 'w':
                    target.write(payload, now)
                else:
                    data.append([int(b) for b in target.read(payload, now)])
            now = time.monotonic()
            for target in touched:
                target.stop(now)
            wrote = any(kind == 'w' and len(payload) > 1 for dummy, kind, payload in msgs[:i + 1])
        # Make state.json show a register or EEPROM write before the client sees the reply.
        if wrote and self.on_change is not None:
            self.on_change()
        return reply or {'ok': True, 'data': data}

    def handle(self, request):
        return self.transfer(parse_msgs(request))
