# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Microchip EMC2301 fan controller (datasheet DS20006532A) and the 4-pin fan it drives.

SMBus byte protocol on a 256-byte register space: write [reg] sets the pointer, write [reg, v...]
writes v to reg (and the following registers: block writes auto-increment), a read returns the
pointed register and the following ones. Unimplemented registers read 0 and ignore writes.

The TACH Reading is the count of 32.768 kHz periods over the configured number of tach edges;
for a 2-pole fan measured over 5 edges, RPM = 3 932 160 x m / count (m from the range bits).
"""

from __future__ import annotations

import random

CONFIGURATION = 0x20
FAN_STATUS = 0x24
FAN_STALL_STATUS = 0x25
FAN_SPIN_STATUS = 0x26
DRIVE_FAIL_STATUS = 0x27
FAN_INTERRUPT_ENABLE = 0x29
PWM_POLARITY_CONFIG = 0x2A
PWM_OUTPUT_CONFIG = 0x2B
PWM_BASE_FREQUENCY = 0x2D
FAN_SETTING = 0x30
PWM_DIVIDE = 0x31
FAN_CONFIGURATION_1 = 0x32
FAN_CONFIGURATION_2 = 0x33
GAIN = 0x35
FAN_SPIN_UP_CONFIGURATION = 0x36
FAN_MAX_STEP = 0x37
FAN_MINIMUM_DRIVE = 0x38
VALID_TACH_COUNT = 0x39
FAN_DRIVE_FAIL_BAND_LOW = 0x3A
FAN_DRIVE_FAIL_BAND_HIGH = 0x3B
TACH_TARGET_LOW = 0x3C
TACH_TARGET_HIGH = 0x3D
TACH_READING_HIGH = 0x3E
TACH_READING_LOW = 0x3F
SOFTWARE_LOCK = 0xEF
PRODUCT_FEATURES = 0xFC
PRODUCT_ID = 0xFD
MANUFACTURER_ID = 0xFE
REVISION = 0xFF

DEFAULTS = {
    CONFIGURATION: 0x40, FAN_STATUS: 0x00, FAN_STALL_STATUS: 0x00, FAN_SPIN_STATUS: 0x00,
    DRIVE_FAIL_STATUS: 0x00, FAN_INTERRUPT_ENABLE: 0x00, PWM_POLARITY_CONFIG: 0x00,
    PWM_OUTPUT_CONFIG: 0x00, PWM_BASE_FREQUENCY: 0x00, FAN_SETTING: 0x00, PWM_DIVIDE: 0x01,
    FAN_CONFIGURATION_1: 0x2B, FAN_CONFIGURATION_2: 0x28, GAIN: 0x2A, FAN_SPIN_UP_CONFIGURATION: 0x19,
    FAN_MAX_STEP: 0x10, FAN_MINIMUM_DRIVE: 0x66, VALID_TACH_COUNT: 0xF5, FAN_DRIVE_FAIL_BAND_LOW: 0x00,
    FAN_DRIVE_FAIL_BAND_HIGH: 0x00, TACH_TARGET_LOW: 0xF8, TACH_TARGET_HIGH: 0xFF,
    TACH_READING_HIGH: 0xFF, TACH_READING_LOW: 0xF8, SOFTWARE_LOCK: 0x00, PRODUCT_FEATURES: 0x00,
    PRODUCT_ID: 0x37, MANUFACTURER_ID: 0x5D, REVISION: 0x80,
}
READ_ONLY = frozenset((FAN_STATUS, FAN_STALL_STATUS, FAN_SPIN_STATUS, DRIVE_FAIL_STATUS, TACH_READING_HIGH,
                       TACH_READING_LOW, PRODUCT_FEATURES, PRODUCT_ID, MANUFACTURER_ID, REVISION))
# The software lock freezes the configuration registers; Fan Setting and TACH Target stay
# writable so software can still drive the fan (the datasheet's SWL column).
NOT_LOCKED = frozenset((FAN_SETTING, TACH_TARGET_LOW, TACH_TARGET_HIGH, SOFTWARE_LOCK))
WRITABLE = frozenset(DEFAULTS) - READ_ONLY
# Bits that exist: writes to the others are dropped.
WRITE_MASKS = {CONFIGURATION: 0xE3, PWM_BASE_FREQUENCY: 0x03, PWM_POLARITY_CONFIG: 0x01, PWM_OUTPUT_CONFIG: 0x01,
               FAN_INTERRUPT_ENABLE: 0x01, FAN_MAX_STEP: 0x3F, TACH_TARGET_LOW: 0xF8, FAN_DRIVE_FAIL_BAND_LOW: 0xF8,
               FAN_SPIN_UP_CONFIGURATION: 0xFF, FAN_CONFIGURATION_2: 0x7E}

EN_ALGO = 0x80
LOCK = 0x01
NOKICK = 0x20
FNSTL = 0x01
FNSPIN = 0x02
DVFAIL = 0x04

TACH_CLOCK_HZ = 32768
RPM_FACTOR = 3932160  # 32768 Hz x 60 s x 2 (a revolution is 5 edges of a 2-pole fan)
COUNT_MAX = 0x1FFF
UPDATE_S = (0.1, 0.2, 0.3, 0.4, 0.5, 0.8, 1.2, 1.6)
SPIN_TIME_S = (0.25, 0.5, 1.0, 2.0)
RANGE_MULTIPLIER = (1, 2, 4, 8)
EDGES = (3, 5, 7, 9)
GAIN_FACTOR = (1, 2, 4, 8)


def rpm_from_count(count, multiplier):
    """Datasheet equation for a 2-pole fan over 5 edges; count 0x1FFF or 0 means no rotation."""
    if count <= 0 or count >= COUNT_MAX:
        return 0.0
    return RPM_FACTOR * multiplier / float(count)


def count_from_rpm(rpm, multiplier, edges=5):
    """What the chip measures for a 2-pole fan spinning at rpm, when configured for `edges` edges."""
    if rpm <= 0:
        return COUNT_MAX
    revolutions = (edges - 1) / 4.0
    return max(1, min(COUNT_MAX, int(round(RPM_FACTOR * multiplier * revolutions / rpm))))


class Fan4Pin(object):
    """A 4-pin PWM fan: speed follows duty with a first-order lag; it stalls at low duty.

    It needs about 20 % duty to start from standstill (hence the controller's spin-up kick) and
    stops below 8 %.
    """

    MAX_RPM = 5000.0
    START_DUTY = 0.20
    STOP_DUTY = 0.08
    TAU_S = 0.8

    def __init__(self):
        self.rpm = 0.0
        self.blocked = False

    def target(self, duty):
        if self.blocked:
            return 0.0
        if duty < self.STOP_DUTY or (self.rpm < 50.0 and duty < self.START_DUTY):
            return 0.0
        return self.MAX_RPM * min(1.0, duty)

    def step(self, duty, dt):
        goal = self.target(duty)
        # Exact first-order step, stable for any dt.
        alpha = 1.0 - pow(2.718281828459045, -dt / self.TAU_S)
        self.rpm += (goal - self.rpm) * alpha
        if goal == 0.0 and self.rpm < 20.0:
            self.rpm = 0.0

    def airflow(self):
        """0 (still) .. 1 (full speed)."""
        return self.rpm / self.MAX_RPM


class EMC2301(object):
    name = 'EMC2301'

    def __init__(self, rng=None):
        self.rng = rng or random.Random(2301)
        self.fan = Fan4Pin()
        self.regs = bytearray(256)
        for reg, value in DEFAULTS.items():
            self.regs[reg] = value
        self.pointer = 0
        self.locked = False
        self.lock_writes = 0
        self.drive = 0.0  # what the PWM output drives, 0..255 (fractional inside the loop)
        self.tach_target = COUNT_MAX
        self._latched_low = None
        self._spin_until = 0.0
        self._spin_start = 0.0
        self._spin_pending_check = False
        self._next_update = 0.0
        self._last_setting = 0
        self.status = 0
        self.now = 0.0

    # -- I2C target ----------------------------------------------------------------------------
    def acks(self, now):  # pylint: disable=unused-argument
        return True

    def repeated_start(self):
        pass

    def stop(self, now):
        pass

    def write(self, data, now):
        if not data:
            return
        self.pointer = data[0]
        for value in data[1:]:
            self.write_register(self.pointer, value, now)
            self.pointer = (self.pointer + 1) & 0xFF

    def read(self, count, now):
        out = []
        for dummy in range(count):
            out.append(self.read_register(self.pointer, now))
            self.pointer = (self.pointer + 1) & 0xFF
        return out

    # -- registers -----------------------------------------------------------------------------
    def config1(self):
        return self.regs[FAN_CONFIGURATION_1]

    def multiplier(self):
        return RANGE_MULTIPLIER[(self.config1() >> 5) & 0x3]

    def edges(self):
        return EDGES[(self.config1() >> 3) & 0x3]

    def algorithm_on(self):
        return bool(self.config1() & EN_ALGO)

    def measured_count(self):
        if self.fan.rpm <= 0:
            return COUNT_MAX
        jitter = 1.0 + self.rng.gauss(0, 0.002)
        return count_from_rpm(self.fan.rpm * jitter, self.multiplier(), self.edges())

    def valid_count(self):
        return (self.regs[VALID_TACH_COUNT] << 5) | 0x1F

    def read_register(self, reg, now):
        if reg == TACH_READING_HIGH:
            count = self.measured_count()
            word = count << 3
            self._latched_low = word & 0xFF  # reading the high byte latches the low byte
            return word >> 8
        if reg == TACH_READING_LOW:
            if self._latched_low is not None:
                value, self._latched_low = self._latched_low, None
                return value
            return (self.measured_count() << 3) & 0xFF
        if reg == FAN_SETTING:
            return int(round(self.drive)) if self.algorithm_on() else self.regs[FAN_SETTING]
        if reg == FAN_STATUS:
            value = self.status
            self._clear_status()
            return value
        if reg in (FAN_STALL_STATUS, FAN_SPIN_STATUS, DRIVE_FAIL_STATUS):
            bit = {FAN_STALL_STATUS: FNSTL, FAN_SPIN_STATUS: FNSPIN, DRIVE_FAIL_STATUS: DVFAIL}[reg]
            value = 1 if self.status & bit else 0
            self._clear_status(bit)
            return value
        return self.regs[reg]

    def _clear_status(self, bits=FNSTL | FNSPIN | DVFAIL):
        # Status bits clear on read unless the condition persists.
        keep = 0
        if self._stalled():
            keep |= FNSTL
        self.status &= ~bits | keep

    def write_register(self, reg, value, now):
        if reg == SOFTWARE_LOCK:
            self.lock_writes += 1
            if value & LOCK:
                self.locked = True
                self.regs[SOFTWARE_LOCK] = LOCK
            return
        if reg not in WRITABLE:
            return
        if self.locked and reg not in NOT_LOCKED:
            return
        value &= WRITE_MASKS.get(reg, 0xFF)
        if reg == FAN_SETTING:
            if self.algorithm_on():
                return  # read-only while the RPM-based algorithm runs
            self.regs[FAN_SETTING] = value
            self._direct_setting(value, now)
            return
        if reg == TACH_TARGET_HIGH:
            was_off = self.regs[TACH_TARGET_HIGH] == 0xFF
            self.regs[TACH_TARGET_HIGH] = value
            # The target takes effect (low and high together) when the high byte is written.
            self.tach_target = (value << 5) | (self.regs[TACH_TARGET_LOW] >> 3)
            if self.algorithm_on() and was_off and value != 0xFF:
                self._begin_spin_up(now)
            return
        if reg == FAN_CONFIGURATION_1:
            was_on = self.algorithm_on()
            self.regs[reg] = value
            if not was_on and self.algorithm_on():
                self._next_update = now
                if self.regs[TACH_TARGET_HIGH] != 0xFF and self.fan.rpm <= 0:
                    self._begin_spin_up(now)
            elif was_on and not self.algorithm_on():
                # Leaving RPM mode: Fan Setting holds the last drive and is writable again.
                self.regs[FAN_SETTING] = int(round(self.drive))
            return
        self.regs[reg] = value

    # -- drive ---------------------------------------------------------------------------------
    def _direct_setting(self, value, now):
        if value == 0:
            self._spin_until = now  # back to 0 aborts a spin-up
            self._spin_pending_check = False
        elif self._last_setting == 0:
            self._begin_spin_up(now)
        self._last_setting = value
        if not self.spinning_up(now):
            self.drive = float(value)

    def _begin_spin_up(self, now):
        spin = self.regs[FAN_SPIN_UP_CONFIGURATION]
        self._spin_start = now
        self._spin_until = now + SPIN_TIME_S[spin & 0x3]
        self._spin_pending_check = True

    def spinning_up(self, now):
        return now < self._spin_until

    def _spin_drive(self, now):
        spin = self.regs[FAN_SPIN_UP_CONFIGURATION]
        quarter = self._spin_start + (self._spin_until - self._spin_start) / 4.0
        if not spin & NOKICK and now < quarter:
            return 255.0
        return 255.0 * (30 + 5 * ((spin >> 2) & 0x7)) / 100.0

    def duty(self, now):
        """PWM duty the fan sees, 0..1."""
        if self.spinning_up(now):
            drive = self._spin_drive(now)
        else:
            drive = self.drive
        duty = drive / 255.0
        if self.regs[PWM_POLARITY_CONFIG] & 0x01:
            duty = 1.0 - duty
        return duty

    def _stalled(self):
        return self.drive > 0 and self.measured_count() > self.valid_count()

    def step(self, now, dt):
        """Advance the fan and the RPM-based algorithm by dt seconds (physics thread)."""
        self.now = now
        if self._spin_pending_check and not self.spinning_up(now):
            self._spin_pending_check = False
            if self.algorithm_on():
                spin = self.regs[FAN_SPIN_UP_CONFIGURATION]
                self.drive = max(float(self.regs[FAN_MINIMUM_DRIVE]), 255.0 * (30 + 5 * ((spin >> 2) & 0x7)) / 100.0)
            else:
                self.drive = float(self.regs[FAN_SETTING])
            if self.measured_count() > self.valid_count() and self.drive > 0:
                self.status |= FNSPIN
        if self.algorithm_on() and not self.spinning_up(now) and now >= self._next_update:
            self._next_update = now + UPDATE_S[self.config1() & 0x7]
            self._algorithm_update(now)
        self.fan.step(self.duty(now), dt)
        if self._stalled() and not self.spinning_up(now):
            self.status |= FNSTL

    def _algorithm_update(self, now):
        if self.regs[TACH_TARGET_HIGH] == 0xFF:
            self.drive = 0.0  # a target of 0xFF.. turns the fan off
            return
        if self.fan.rpm <= 0 and self.drive > 0:
            self._begin_spin_up(now)  # stalled under control: kick it again
            return
        target_rpm = rpm_from_count(self.tach_target, self.multiplier())
        measured_rpm = rpm_from_count(self.measured_count(), self.multiplier())
        gain = GAIN_FACTOR[self.regs[GAIN] & 0x3]
        step = 0.125 * gain * (target_rpm - measured_rpm) * 255.0 / Fan4Pin.MAX_RPM
        limit = float(self.regs[FAN_MAX_STEP] & 0x3F)
        step = max(-limit, min(limit, step))
        self.drive = max(float(self.regs[FAN_MINIMUM_DRIVE]), min(255.0, self.drive + step))
        if self.drive >= 255.0 and measured_rpm < target_rpm * 0.9:
            self.status |= DVFAIL

    def snapshot(self):
        regs = bytearray(self.regs)
        count = self.measured_count()
        regs[TACH_READING_HIGH] = (count << 3) >> 8
        regs[TACH_READING_LOW] = (count << 3) & 0xFF
        if self.algorithm_on():
            regs[FAN_SETTING] = int(round(self.drive))
        return {
            'registers': bytes(regs).hex(), 'locked': self.locked, 'lock_writes': self.lock_writes,
            'drive': int(round(self.drive)), 'rpm': round(self.fan.rpm, 1), 'tach_count': count,
            'tach_target': self.tach_target, 'rpm_control': self.algorithm_on(),
        }
