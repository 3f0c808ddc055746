# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One slot of the hat: a CM4 node card with its control pins, boot behaviour, current and heat.

Modes of a node:
  off            EN low (or no card in the slot)
  reset          RUN held low
  booting        powered with nRPIBOOT released; the boot log is on its way
  running        booted from its eMMC, login prompt printed
  no_boot_media  nothing bootable on the eMMC; the bootloader retries every few seconds
  usb_rom        powered with nRPIBOOT asserted: the boot ROM waits for rpiboot
  usb_loading    rpiboot served it; the payload is starting (the disk appears after disk_delay)
  usb_msd        its eMMC is a USB mass-storage disk on the controller
  usb_payload    rpiboot served a payload that exposes no disk (recovery and the like)
  halted         its OS powered off while EN stays high (control op `halt`): SoC stopped, PMIC on
"""

from __future__ import annotations

import math
import os
import random
import time

# IMON millivolts (what the RP2040 reports as "mA") by mode. EN switches only the CM4's GLOBAL_EN:
# the card's eFuse, its converters and an NVMe drive stay powered, so 'off' is small but not zero.
MODE_MILLIVOLTS = {
    'off': 24.0, 'reset': 300.0, 'booting': 640.0, 'running': 430.0, 'no_boot_media': 390.0,
    'usb_rom': 375.0, 'usb_loading': 520.0, 'usb_msd': 450.0, 'usb_payload': 470.0, 'halted': 80.0,
}
EMPTY_SLOT_MV = 0.15
WRITE_ACTIVITY_MV = 140.0
RUNNING_SETTLE_S = 3.0
# Thermal model: steady rise = K x current / (1 + AIRFLOW_GAIN x airflow), time constant TAU_S.
K_PER_AMP = 140.0
AIRFLOW_GAIN = 1.6
TAU_S = 4.0
SENSOR_OFFSET_C = {1: 0.8, 2: -1.2, 3: 1.9, 4: -0.4}
TAIL_CHARS = 4096


class Node(object):

    def __init__(self, number, usb_path, emmc_path, present, ambient_c, rng=None):
        self.number = number
        self.usb_path = usb_path
        self.emmc_path = emmc_path
        self.present = present
        self.rng = rng or random.Random(number)
        self.en = False
        self.run = True
        self.nrpiboot = True
        self.mode = 'off'
        self.mode_since = time.monotonic()
        self.usb_boot_at_power_on = None
        self.boots = 0
        self.halts = 0
        self.epoch = 0
        self.disk = None
        self.hostname = None
        self.payload = None
        self.unplugged = False
        self.last_write_seen = 0.0
        self._last_mtime = None
        self.wander = 0.0
        self.temperature_c = ambient_c + (SENSOR_OFFSET_C.get(number, 0.0) if present else 0.0)
        self.console_tail = ''

    @property
    def powered(self):
        return self.present and self.en

    def set_mode(self, mode):
        self.mode = mode
        self.mode_since = time.monotonic()

    def new_epoch(self):
        """Invalidate every pending event of this node (boot log lines, disk arrival)."""
        self.epoch += 1
        return self.epoch

    # -- current -------------------------------------------------------------------------------
    def millivolts(self, now=None):
        """The node's IMON voltage right now, with the noise a real eFuse output has."""
        if not self.present:
            return max(0.0, EMPTY_SLOT_MV + self.rng.gauss(0, 0.08))
        if not self.powered:
            return max(0.0, MODE_MILLIVOLTS['off'] + self.rng.gauss(0, 0.5))
        now = time.monotonic() if now is None else now
        base = MODE_MILLIVOLTS.get(self.mode, 400.0)
        if self.mode == 'running' and now - self.mode_since < RUNNING_SETTLE_S:
            base = MODE_MILLIVOLTS['booting']  # services still starting
        if self.mode == 'usb_msd' and now - self.last_write_seen < 1.0:
            base += WRITE_ACTIVITY_MV
        wander = 0.0 if self.mode == 'halted' else self.wander  # a stopped SoC does no work
        return max(0.0, base + wander + self.rng.gauss(0, 4.0))

    def current_ma(self, ma_per_unit=1.0):
        return self.millivolts() * ma_per_unit

    # -- physics tick --------------------------------------------------------------------------
    def step(self, dt, ambient_c, airflow):
        if self.powered:
            # Slow random wander of the load, bounded.
            self.wander = max(-25.0, min(25.0, self.wander * 0.98 + self.rng.gauss(0, 2.0)))
        else:
            self.wander = 0.0
        if self.mode == 'usb_msd' and self.disk:
            try:
                mtime = os.stat(self.emmc_path).st_mtime
            except OSError:
                mtime = None
            if self._last_mtime is not None and mtime != self._last_mtime:
                self.last_write_seen = time.monotonic()
            self._last_mtime = mtime
        else:
            self._last_mtime = None
        amps = self.millivolts() / 1000.0 if self.powered else 0.0
        goal = ambient_c + SENSOR_OFFSET_C.get(self.number, 0.0) + K_PER_AMP * amps / (1.0 + AIRFLOW_GAIN * airflow)
        self.temperature_c += (goal - self.temperature_c) * (1.0 - math.exp(-dt / TAU_S))

    def sensor_temperature(self):
        return self.temperature_c + self.rng.gauss(0, 0.02)

    # -- console -------------------------------------------------------------------------------
    def remember(self, text):
        self.console_tail = (self.console_tail + text)[-TAIL_CHARS:]

    def snapshot(self, ma_per_unit=1.0):
        try:
            st = os.stat(self.emmc_path)
            allocated = st.st_blocks * 512
        except OSError:
            allocated = None
        return {
            'en': self.en, 'run': self.run, 'nrpiboot': self.nrpiboot, 'usb_boot_at_power_on': self.usb_boot_at_power_on,
            'powered': self.powered, 'present': self.present, 'mode': self.mode,
            'current_ma': round(self.current_ma(ma_per_unit), 3), 'temperature_c': round(self.temperature_c, 3),
            'disk': self.disk, 'usb_path': self.usb_path, 'boots': self.boots, 'halts': self.halts, 'hostname': self.hostname,
            'payload': self.payload, 'unplugged': self.unplugged, 'emmc': self.emmc_path,
            'allocated_bytes': allocated, 'console_tail': self.console_tail,
        }
