# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Serial port doubles for the console client: scripted byte streams and a small firmware model."""

from __future__ import annotations

import time


class ScriptedSerial(object):
    """Answers each write with the next recorded chunk list; a chunk is delivered per read call."""

    def __init__(self, script, pending=b''):
        self.script = list(script)
        self.written = []
        self._chunks = [pending] if pending else []
        self.closed = False

    @property
    def in_waiting(self):
        return len(self._chunks[0]) if self._chunks else 0

    def reset_input_buffer(self):
        # Like the kernel: drops what has arrived, not what the device will send later.
        if self._chunks:
            self._chunks.pop(0)

    def read(self, n=1):
        if not self._chunks:
            time.sleep(0.005)
            return b''
        chunk = self._chunks.pop(0)
        if len(chunk) > n:
            self._chunks.insert(0, chunk[n:])
            chunk = chunk[:n]
        return chunk

    def write(self, data):
        self.written.append(bytes(data))
        if self.script:
            self._chunks.extend(self.script.pop(0))
        return len(data)

    def flush(self):
        pass

    def close(self):
        self.closed = True


HELP = 'Commands:\nc<N> select channel\ne enable\nd disable\nU usb boot assert\nu usb boot deassert\nr reset\ns sample\na average\nh help\n'


class FirmwareSerial(object):
    """The stock firmware's console as hardware.md describes it, in memory."""

    def __init__(self, currents_on=500.0, eol=b'\r\n'):
        self.channel = 0
        self.en = [False] * 4
        self.nrpiboot = [True] * 4
        self.resets = [0] * 4
        self.log = []
        self.currents_on = currents_on
        # An off node is not at zero: its card's converters and NVMe stay powered.
        self.currents_off = [1.5] * 4
        self.eol = eol
        self._out = b''
        self._await_digit = False

    def _print(self, text):
        self._out += text.encode('ascii').replace(b'\n', self.eol)

    @property
    def in_waiting(self):
        return len(self._out)

    def reset_input_buffer(self):
        self._out = b''

    def read(self, n=1):
        out, self._out = self._out[:n], self._out[n:]
        return out

    def write(self, data):
        for b in bytearray(data):
            self._byte(chr(b))
        return len(data)

    def _byte(self, c):
        self._print(c)
        if self._await_digit:
            self._await_digit = False
            if c in '0123':
                self.channel = int(c)
                self._print('\nSwitched to channel %d\n' % self.channel)
            else:
                self._print('Unknown input channel\n' + HELP)
            return
        ch = self.channel
        self.log.append((c, ch))
        if c == 'c':
            self._await_digit = True
        elif c == 'e':
            self.en[ch] = True
            self._print('Enable:%d\n' % ch)
        elif c == 'd':
            self.en[ch] = False
            self._print('Disable:%d\n' % ch)
        elif c == 'U':
            self.nrpiboot[ch] = False
            self._print('USB boot assert:%d\n' % ch)
        elif c == 'u':
            self.nrpiboot[ch] = True
            self._print('USB boot deassert:%d\n' % ch)
        elif c == 'r':
            self.resets[ch] += 1
            self._print('Reseting:%d\n' % ch)
        elif c == 'a':
            self._print('\n' + ','.join('%f mA' % (self.currents_on if on else off) for on, off in zip(self.en, self.currents_off)) + '\n')
        elif c == 's':
            self._print('\n0x26C -> 0.499072 V\n')
        elif c in '\r\n':
            pass
        elif c == 'h':
            self._print(HELP)
        else:
            self._print('\nUnrecognised command: %s\n' % c + HELP)

    def flush(self):
        pass

    def close(self):
        pass
