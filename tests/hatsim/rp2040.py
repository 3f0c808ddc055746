# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hat's RP2040 running its stock one-character console firmware, byte for byte.

The firmware is a loop of `c = getchar(); printf("%c", c); switch (c) ...`, so every byte is
echoed before anything else, `c` blocks for the next byte (echoed with a newline by the same
printf), and the Pico SDK's stdio turns every '\\n' it sends into '\\r\\n' (unless built without
that translation: line_ending 'lf'). Replies, help text and number formats are the firmware's:

    c<d>  "<d>\\nSwitched to channel <d>\\n"   (bad digit: "<x>\\nUnknown input channel\\n" + help)
    e d U u  "Enable:N" "Disable:N" "USB boot assert:N" "USB boot deassert:N"
    r     RUN low 100 ms, then "Reseting:N"
    s     "\\n0x%03x -> %f V\\n"   one ADC sample of the selected channel
    a     "\\n%f mA,%f mA,%f mA,%f mA\\n"   1000-sample averages of ADC0..3, millivolts
    S     "\\nStarting capture\\nDone\\n" then 1000 lines "%03x" (a raw capture)
    h     help (the upstream example's text, see HELP); '\\r' and '\\n' ignored; anything else,
          `w` included, "\\nUnrecognised command: X\\n" + help
"""

from __future__ import annotations

import logging
import random
import struct
import time

LOG = logging.getLogger('hatsim')

# The shipped adc_console.uf2 prints the help of the upstream pico-examples adc_console, not the
# one in the board's C source (which lists c r U u e d a): `w` is in it but has no handler.
HELP = ('\nCommands:\n'
        'c0, ...\t: Select ADC channel n\n'
        's\t: Sample once\n'
        'S\t: Sample many\n'
        'w\t: Wiggle pins\n')

N_SAMPLES = 1000
ADC_MAX = 4095
ADC_NOISE_LSB = 3.0
RESET_PULSE_S = 0.1
# 4 x 1000 samples at the ADC's 500 kS/s, plus the printf.
AVERAGE_TIME_S = 4 * N_SAMPLES / 500000.0 + 0.0005
CAPTURE_TIME_S = N_SAMPLES / 500000.0


def f32(value):
    """Round to IEEE single precision, as the firmware's float arithmetic does."""
    return struct.unpack('<f', struct.pack('<f', value))[0]


# 's': const float conversion_factor = 3.3f / (1 << 12);  result * conversion_factor in float.
VOLTS_PER_LSB = f32(f32(3.3) / 4096)
# 'a': const float conversion_factor = 3.3f / (1 << 12) * 1000.0;  the product is a double that is
# stored back into a float, then multiplies the (double) mean of the samples.
MV_PER_LSB_A = f32(VOLTS_PER_LSB * 1000.0)


def sample_line(raw):
    """The 's' reply for one raw ADC reading (float multiply, printed with %f)."""
    return '\n0x%03x -> %f V\n' % (raw, f32(raw * VOLTS_PER_LSB))


def average_line(totals):
    """The 'a' reply from the integer sums of 1000 samples of each channel."""
    return '\n%s\n' % ','.join('%f mA' % ((total / 1000.0) * MV_PER_LSB_A) for total in totals)


class RP2040(object):
    """The firmware loop. `hat` provides the pins, the analog inputs, the lock and the logbook."""

    def __init__(self, port, hat, rng=None):
        self.port = port
        self.hat = hat
        self.rng = rng or random.Random(2040)
        self.channel = 0
        self._input = bytearray()
        self.stopping = False

    # -- stdio ---------------------------------------------------------------------------------
    def getchar(self):
        while not self._input:
            if self.stopping:
                return None
            self._input += self.port.read()
        c = self._input[0]
        del self._input[0]
        return c

    def printf(self, data):
        if isinstance(data, str):
            data = data.encode('latin-1')
        if self.hat.options.line_ending == 'crlf':
            data = data.replace(b'\n', b'\r\n')
        self.port.write(data)

    # -- ADC -----------------------------------------------------------------------------------
    def _counts(self, channel):
        return self.hat.adc_millivolts(channel) / MV_PER_LSB_A

    def adc_read(self, channel):
        raw = int(round(self._counts(channel) + self.rng.gauss(0, ADC_NOISE_LSB)))
        return max(0, min(ADC_MAX, raw))

    def adc_total(self, channel):
        """Sum of N_SAMPLES noisy readings (the noise of the sum, not each sample)."""
        mean = self._counts(channel)
        total = int(round(mean * N_SAMPLES + self.rng.gauss(0, ADC_NOISE_LSB * N_SAMPLES ** 0.5)))
        return max(0, min(ADC_MAX * N_SAMPLES, total))

    # -- the loop ------------------------------------------------------------------------------
    def run(self):
        try:
            while not self.stopping:
                c = self.getchar()
                if c is None:
                    return
                try:
                    self.printf(bytes((c,)))
                    self.command(c)
                except Exception:  # pylint: disable=broad-except
                    # The firmware loop must survive anything a test throws at it.
                    LOG.exception('RP2040 command %r failed', c)
        finally:
            self.port.release()

    def stop(self):
        self.stopping = True
        self.port.stop()

    def command(self, c):
        ch = chr(c)
        if ch == 'c':
            d = self.getchar()
            if d is None:
                return
            self.printf(bytes((d,)) + b'\n')
            if not ord('0') <= d <= ord('3'):
                self.hat.rp2040_logged('c' + chr(d), self.channel)
                self.printf('Unknown input channel\n')
                self.printf(HELP)
            else:
                self.channel = d - ord('0')
                self.hat.rp2040_logged('c' + chr(d), self.channel)
                self.printf('Switched to channel %c\n' % chr(d))
        elif ch == 'r':
            self.hat.set_pin(self.channel, 'run', False)
            time.sleep(RESET_PULSE_S)
            self.hat.set_pin(self.channel, 'run', True)
            self.hat.rp2040_logged(ch, self.channel)
            self.printf('Reseting:%d\n' % self.channel)
        elif ch in 'uUde':
            pin, value, text = {
                'u': ('nrpiboot', True, 'USB boot deassert'),
                'U': ('nrpiboot', False, 'USB boot assert'),
                'd': ('en', False, 'Disable'),
                'e': ('en', True, 'Enable'),
            }[ch]
            self.hat.set_pin(self.channel, pin, value)
            self.hat.rp2040_logged(ch, self.channel)
            self.printf('%s:%d\n' % (text, self.channel))
        elif ch == 's':
            raw = self.adc_read(self.channel)
            self.hat.rp2040_logged(ch, self.channel)
            self.printf(sample_line(raw))
        elif ch == 'a':
            time.sleep(AVERAGE_TIME_S)
            totals = [self.adc_total(i) for i in range(4)]
            self.hat.rp2040_logged(ch, self.channel)
            self.printf(average_line(totals))
        elif ch == 'S':
            self.hat.rp2040_logged(ch, self.channel)
            self.printf('\nStarting capture\n')
            time.sleep(CAPTURE_TIME_S)
            samples = [self.adc_read(self.channel) for dummy in range(N_SAMPLES)]
            self.printf('Done\n' + ''.join('%03x\n' % v for v in samples))
        elif ch in '\r\n':
            pass
        elif ch == 'h':
            self.hat.rp2040_logged(ch, self.channel)
            self.printf(HELP)
        else:
            self.hat.rp2040_logged(ch, self.channel)
            self.printf(b'\nUnrecognised command: ' + bytes((c,)) + b'\n')
            self.printf(HELP)
