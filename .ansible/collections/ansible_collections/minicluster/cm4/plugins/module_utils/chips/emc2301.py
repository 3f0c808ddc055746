# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Microchip EMC2301 single-fan PWM controller (the hat's 4-pin fan), register names from its datasheet.

The pure functions convert between what people set (RPM, duty percent, ms) and register values;
they do no I/O. The EMC2301 class reads the chip through the I2C transport. Nothing here writes
SOFTWARE_LOCK (0xEF): once set it locks the configuration until a power cycle.

Tachometer: the chip counts 32.768 kHz clock periods over (edges - 1) tach edges, one fan
revolution when edges = 2 * poles + 1, and scales the count by the range multiplier m, so

    RPM = (edges - 1) / poles * 32768 * 60 * m / COUNT   (3 932 160 * m / COUNT for 2 poles, 5 edges)

COUNT is 13 bits: the reading registers hold it as (COUNT << 3) high byte first, the target
registers likewise (TACH_TARGET_LOW bits 7:3 = COUNT bits 4:0, TACH_TARGET_HIGH = COUNT bits 12:5).
"""

from __future__ import annotations

from ansible_collections.minicluster.cm4.plugins.module_utils.transports.i2c import Device

ADDRESS = 0x2F

# Registers
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

PRODUCT_ID_EMC2301 = 0x37
MANUFACTURER_ID_SMSC = 0x5D

# Registers a caller may write. Status, tach reading, identity and SOFTWARE_LOCK are not among them.
WRITABLE = frozenset([CONFIGURATION, FAN_INTERRUPT_ENABLE, PWM_POLARITY_CONFIG, PWM_OUTPUT_CONFIG,
                      PWM_BASE_FREQUENCY, FAN_SETTING, PWM_DIVIDE, FAN_CONFIGURATION_1,
                      FAN_CONFIGURATION_2, GAIN, FAN_SPIN_UP_CONFIGURATION, FAN_MAX_STEP,
                      FAN_MINIMUM_DRIVE, VALID_TACH_COUNT, FAN_DRIVE_FAIL_BAND_LOW,
                      FAN_DRIVE_FAIL_BAND_HIGH, TACH_TARGET_LOW, TACH_TARGET_HIGH])

# Order to write in: the target before FAN_CONFIGURATION_1 (so closed-loop control starts with the
# new range and target), FAN_CONFIGURATION_1 before FAN_SETTING (read-only while RPM control runs),
# and TACH_TARGET_LOW before TACH_TARGET_HIGH (the target takes effect when the high byte is written).
WRITE_ORDER = (CONFIGURATION, PWM_POLARITY_CONFIG, PWM_OUTPUT_CONFIG, PWM_BASE_FREQUENCY, PWM_DIVIDE,
               FAN_CONFIGURATION_2, GAIN, FAN_SPIN_UP_CONFIGURATION, FAN_MAX_STEP, FAN_MINIMUM_DRIVE,
               VALID_TACH_COUNT, FAN_DRIVE_FAIL_BAND_LOW, FAN_DRIVE_FAIL_BAND_HIGH, TACH_TARGET_LOW,
               TACH_TARGET_HIGH, FAN_CONFIGURATION_1, FAN_SETTING, FAN_INTERRUPT_ENABLE)

# FAN_CONFIGURATION_1 fields
CONFIG1_EN_ALGO = 0x80
CONFIG1_RANGE_SHIFT = 5
CONFIG1_RANGE_MASK = 0x60
CONFIG1_EDGES_SHIFT = 3
CONFIG1_EDGES_MASK = 0x18
CONFIG1_UPDATE_MASK = 0x07
CONFIG1_DEFAULT = 0x2B

# FAN_SPIN_UP_CONFIGURATION fields
SPIN_LVL_SHIFT = 2
SPIN_LVL_MASK = 0x1C
SPINUP_TIME_MASK = 0x03
PWM_BASE_MASK = 0x03

TACH_FREQUENCY_HZ = 32768
TACH_COUNT_MAX = 0x1FFF           # 13 bits; the reading saturates here when the fan stops
RANGE_MIN_RPM = (500, 1000, 2000, 4000)   # RANGE 00..11
RANGE_MULTIPLIER = (1, 2, 4, 8)
RPM_MIN = 500
RPM_MAX = 16000                   # the datasheet's maximum target
UPDATE_TIMES_MS = (100, 200, 300, 400, 500, 800, 1200, 1600)
SPIN_UP_LEVELS_PERCENT = (30, 35, 40, 45, 50, 55, 60, 65)
SPIN_UP_TIMES_MS = (250, 500, 1000, 2000)
PWM_BASE_FREQUENCIES_HZ = (26000, 19531, 4882, 2441)   # PWM_BASE 00..11
POLES = (1, 2, 3, 4)


class EMC2301Error(Exception):
    """A value the chip cannot take, or a chip that is not an EMC2301."""


def _choice(name, value, choices, unit):
    if value not in choices:
        raise EMC2301Error('%s %s %s is not one the EMC2301 offers: %s'
                           % (name, value, unit, ', '.join(str(c) for c in choices)))
    return choices.index(value)


def edges_for_poles(poles):
    """Tach edges per revolution: 3, 5, 7, 9 for 1..4 poles."""
    _choice('poles', poles, POLES, '')
    return 2 * poles + 1


def edges_bits(poles):
    """FAN_CONFIGURATION_1 EDGES field (0..3) for a fan with this many poles."""
    return _choice('poles', poles, POLES, '')


def poles_from_edges_bits(bits):
    return POLES[bits & 0x03]


def multiplier(range_bits):
    return RANGE_MULTIPLIER[range_bits & 0x03]


def rpm_from_count(count, range_bits, poles=2):
    """RPM from a 13-bit TACH count; 0 when the count is saturated (stopped fan) or zero."""
    if count <= 0 or count >= TACH_COUNT_MAX:
        return 0
    edges = edges_for_poles(poles)
    return int(round(float(edges - 1) * TACH_FREQUENCY_HZ * 60 * multiplier(range_bits) / (poles * count)))


def count_from_rpm(rpm, range_bits, poles=2):
    """The 13-bit TACH count the chip sees at rpm. Raises EMC2301Error when it does not fit."""
    if rpm <= 0:
        raise EMC2301Error('a fan speed must be a positive RPM, not %r' % (rpm,))
    edges = edges_for_poles(poles)
    count = int(round(float(edges - 1) * TACH_FREQUENCY_HZ * 60 * multiplier(range_bits) / (poles * rpm)))
    if not 1 <= count < TACH_COUNT_MAX:
        raise EMC2301Error('%s RPM is outside what range %d (minimum %d RPM) can measure'
                           % (rpm, range_bits, RANGE_MIN_RPM[range_bits]))
    return count


def range_for_rpm(rpm):
    """RANGE bits for a target: the highest range whose minimum is at or below it (finest resolution)."""
    if not RPM_MIN <= rpm <= RPM_MAX:
        raise EMC2301Error('target %s RPM is unreachable: the EMC2301 controls fans from %d to %d RPM'
                           % (rpm, RPM_MIN, RPM_MAX))
    bits = 0
    for index, low in enumerate(RANGE_MIN_RPM):
        if low <= rpm:
            bits = index
    return bits


def target_registers(count):
    """(TACH_TARGET_LOW, TACH_TARGET_HIGH) for a 13-bit count."""
    if not 0 <= count <= TACH_COUNT_MAX:
        raise EMC2301Error('TACH count %r is outside 0..%d' % (count, TACH_COUNT_MAX))
    word = count << 3
    return word & 0xF8, (word >> 8) & 0xFF


def count_from_registers(high, low):
    """13-bit count from a high and a low byte (tach target or tach reading)."""
    return ((high << 8) | low) >> 3


def setting_from_percent(percent):
    """Duty percent 0..100 -> FAN_SETTING / FAN_MINIMUM_DRIVE 0..255."""
    if isinstance(percent, bool) or not 0 <= percent <= 100:
        raise EMC2301Error('a duty cycle must be 0 to 100 %%, not %r' % (percent,))
    return int(round(percent * 255.0 / 100))


def percent_from_setting(value):
    """0..255 -> duty percent, one decimal."""
    return round((value & 0xFF) * 100.0 / 255, 1)


def update_time_bits(ms):
    return _choice('update time', ms, UPDATE_TIMES_MS, 'ms')


def update_time_ms(bits):
    return UPDATE_TIMES_MS[bits & CONFIG1_UPDATE_MASK]


def spin_up_level_bits(percent):
    return _choice('spin-up level', percent, SPIN_UP_LEVELS_PERCENT, '%')


def spin_up_level_percent(bits):
    return SPIN_UP_LEVELS_PERCENT[bits & 0x07]


def spin_up_time_bits(ms):
    return _choice('spin-up time', ms, SPIN_UP_TIMES_MS, 'ms')


def spin_up_time_ms(bits):
    return SPIN_UP_TIMES_MS[bits & SPINUP_TIME_MASK]


def pwm_base_bits(hz):
    return _choice('PWM frequency', hz, PWM_BASE_FREQUENCIES_HZ, 'Hz')


def pwm_base_hz(bits):
    return PWM_BASE_FREQUENCIES_HZ[bits & PWM_BASE_MASK]


def config1(rpm_control, range_bits, poles, update_ms):
    """FAN_CONFIGURATION_1 from its fields."""
    return ((CONFIG1_EN_ALGO if rpm_control else 0) | ((range_bits & 0x03) << CONFIG1_RANGE_SHIFT)
            | (edges_bits(poles) << CONFIG1_EDGES_SHIFT) | update_time_bits(update_ms))


def parse_config1(value):
    """FAN_CONFIGURATION_1 -> {'rpm_control', 'range', 'poles', 'update_time_ms'}."""
    return {
        'rpm_control': bool(value & CONFIG1_EN_ALGO),
        'range': (value & CONFIG1_RANGE_MASK) >> CONFIG1_RANGE_SHIFT,
        'poles': poles_from_edges_bits((value & CONFIG1_EDGES_MASK) >> CONFIG1_EDGES_SHIFT),
        'update_time_ms': update_time_ms(value & CONFIG1_UPDATE_MASK),
    }


def spin_up(value, level_percent=None, time_ms=None):
    """FAN_SPIN_UP_CONFIGURATION with SPIN_LVL and/or SPINUP_TIME replaced (other bits kept)."""
    if level_percent is not None:
        value = (value & ~SPIN_LVL_MASK & 0xFF) | (spin_up_level_bits(level_percent) << SPIN_LVL_SHIFT)
    if time_ms is not None:
        value = (value & ~SPINUP_TIME_MASK & 0xFF) | spin_up_time_bits(time_ms)
    return value


def describe(regs):
    """Human settings from register values {register: value} (the registers read_state() returns)."""
    c1 = parse_config1(regs[FAN_CONFIGURATION_1])
    target_count = count_from_registers(regs[TACH_TARGET_HIGH], regs[TACH_TARGET_LOW])
    spin = regs[FAN_SPIN_UP_CONFIGURATION]
    return {
        'mode': 'rpm' if c1['rpm_control'] else 'pwm',
        'duty_percent': percent_from_setting(regs[FAN_SETTING]),
        'target_rpm': rpm_from_count(target_count, c1['range'], c1['poles']),
        'range_min_rpm': RANGE_MIN_RPM[c1['range']],
        'poles': c1['poles'],
        'update_time_ms': c1['update_time_ms'],
        'min_drive_percent': percent_from_setting(regs[FAN_MINIMUM_DRIVE]),
        'spin_up_level_percent': spin_up_level_percent((spin & SPIN_LVL_MASK) >> SPIN_LVL_SHIFT),
        'spin_up_time_ms': spin_up_time_ms(spin),
        'pwm_frequency': pwm_base_hz(regs[PWM_BASE_FREQUENCY]),
    }


STATE_REGISTERS = (PWM_BASE_FREQUENCY, FAN_SETTING, FAN_CONFIGURATION_1, FAN_SPIN_UP_CONFIGURATION,
                   FAN_MINIMUM_DRIVE, TACH_TARGET_LOW, TACH_TARGET_HIGH)


class EMC2301(Device):

    def __init__(self, bus, addr=ADDRESS):
        super(EMC2301, self).__init__(bus, addr)

    def identity(self):
        """(PRODUCT_ID, MANUFACTURER_ID) as read."""
        return self.read_u8(PRODUCT_ID), self.read_u8(MANUFACTURER_ID)

    def identify(self):
        return self.identity() == (PRODUCT_ID_EMC2301, MANUFACTURER_ID_SMSC)

    def read_registers(self, registers):
        return dict((reg, self.read_u8(reg)) for reg in registers)

    def read_state(self, extra=()):
        """The registers describe() needs, plus extra."""
        return self.read_registers(sorted(set(STATE_REGISTERS) | set(extra)))

    def tach_count(self):
        """The 13-bit TACH reading; the high byte is read first, which latches the low byte."""
        high = self.read_u8(TACH_READING_HIGH)
        low = self.read_u8(TACH_READING_LOW)
        return count_from_registers(high, low)

    def rpm(self, config1_value=None):
        """Measured fan speed, using the range and edges FAN_CONFIGURATION_1 holds."""
        if config1_value is None:
            config1_value = self.read_u8(FAN_CONFIGURATION_1)
        c1 = parse_config1(config1_value)
        return rpm_from_count(self.tach_count(), c1['range'], c1['poles'])

    def status(self):
        """{'rpm', 'duty_percent', 'mode'}: what the fan does now (read-only)."""
        c1 = self.read_u8(FAN_CONFIGURATION_1)
        return {
            'rpm': self.rpm(c1),
            'duty_percent': percent_from_setting(self.read_u8(FAN_SETTING)),
            'mode': 'rpm' if c1 & CONFIG1_EN_ALGO else 'pwm',
        }

    def write_registers(self, values):
        """Write {register: value} in WRITE_ORDER. Refuses SOFTWARE_LOCK and read-only registers."""
        for reg in values:
            if reg not in WRITABLE:
                raise EMC2301Error('register 0x%02x of the EMC2301 is not writable here' % reg)
        order = [r for r in WRITE_ORDER if r in values]
        for reg in order:
            self.write_u8(reg, values[reg])
        return order
