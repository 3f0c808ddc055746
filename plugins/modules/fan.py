#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: fan
short_description: Set the cluster hat's fan through its EMC2301 controller
version_added: 0.1.0
description:
  - Drives the hat's 4-pin PWM fan through the Microchip EMC2301 at I2C address 0x2F, which has no
    kernel driver on most systems.
  - V(pwm) mode sets a fixed duty cycle; V(rpm) mode runs the chip's closed-loop speed control to a
    target speed, choosing the tachometer range for the target.
  - Checks the chip's identity first, reads the registers it would set, and writes only those that
    differ (in an order that keeps the fan sane). Never writes the software lock register (0xEF),
    which would freeze the configuration until a power cycle.
  - Input is checked before the bus is opened; bad input fails and writes nothing.
author:
  - minicluster.cm4 developers (@minicluster)
extends_documentation_fragment:
  - minicluster.cm4.i2c
attributes:
  check_mode:
    support: full
    description: Reads the chip and reports what would change; writes nothing.
  diff_mode:
    support: full
    description: Shows the settings that change, by name, before and after.
options:
  address:
    description:
      - I2C address of the EMC2301 (fixed at 0x2F on this chip).
    type: int
    default: 0x2F
  mode:
    description:
      - V(pwm) drives the fan at O(duty_percent).
      - V(rpm) enables the closed-loop algorithm with O(target_rpm).
      - Unset keeps the mode and changes only the other settings given.
    type: str
    choices: [pwm, rpm]
  duty_percent:
    description:
      - PWM duty cycle, 0 to 100, with O(mode=pwm). Stored as 0..255, so it reads back to 0.4 % steps.
    type: float
  target_rpm:
    description:
      - Target speed with O(mode=rpm), 500 to 16000 RPM. The module picks the tachometer range
        (minimum 500, 1000, 2000 or 4000 RPM) with the finest resolution that still reaches the target.
    type: int
  poles:
    description:
      - Poles of the fan (tach pulses per revolution), 1 to 4. Sets the tach edges the chip counts
        (3, 5, 7, 9). Most PC fans have 2.
    type: int
    choices: [1, 2, 3, 4]
    default: 2
  min_drive_percent:
    description:
      - Lowest drive the RPM algorithm may use, 0 to 100 (FAN_MINIMUM_DRIVE; chip default 40).
    type: float
  spin_up_level_percent:
    description:
      - Drive during spin-up from standstill (SPIN_LVL).
    type: int
    choices: [30, 35, 40, 45, 50, 55, 60, 65]
  spin_up_time_ms:
    description:
      - Duration of the spin-up (SPINUP_TIME).
    type: int
    choices: [250, 500, 1000, 2000]
  update_time_ms:
    description:
      - How often the RPM algorithm adjusts the drive (UPDATE).
    type: int
    choices: [100, 200, 300, 400, 500, 800, 1200, 1600]
  pwm_frequency:
    description:
      - PWM base frequency in Hz (PWM_BASE). 4-pin fans expect about 25 kHz, hence V(26000).
    type: int
    choices: [26000, 19531, 4882, 2441]
  lock_dir:
    description:
      - Directory of the fan's owner file. While the telemetry service's fan curve drives the fan it
        holds this file and the module refuses to write (one owner of the fan at a time); stop the
        service or disable its fan curve first. The module holds the file itself while it writes.
    type: path
    default: /run/lock
  registers:
    description:
      - Raw register values for anything else, register to value (both integers, or strings such as
        C("0x33")). A register a named option above also sets is refused, and so are read-only
        registers and the software lock (0xEF).
      - Compared with what reads back, so give values the chip keeps (no reserved bits).
    type: dict
    default: {}
notes:
  - Measured speed is read from the tachometer when the task ends; a change takes a few seconds to settle.
seealso:
  - module: minicluster.cm4.hat_info
'''

EXAMPLES = r'''
- name: Run the fan at 40 % duty
  minicluster.cm4.fan:
    mode: pwm
    duty_percent: 40

- name: Hold 3000 RPM, spinning up at 50 % for half a second
  minicluster.cm4.fan:
    mode: rpm
    target_rpm: 3000
    spin_up_level_percent: 50
    spin_up_time_ms: 500
    min_drive_percent: 20

- name: Set the gain of the RPM algorithm directly (FAN_CONFIGURATION_2 and GAIN)
  minicluster.cm4.fan:
    registers:
      "0x35": 0x2A

- name: What would change?
  minicluster.cm4.fan:
    mode: pwm
    duty_percent: 100
  check_mode: true
  diff: true
'''

RETURN = r'''
rpm:
  description: Measured fan speed when the task ends; 0 when the fan stands still.
  returned: success
  type: int
  sample: 2987
mode:
  description: V(pwm) or V(rpm), as set (in check mode, as it would be).
  returned: success
  type: str
  sample: rpm
settings:
  description: The fan settings the chip holds (in check mode, would hold).
  returned: success
  type: dict
  contains:
    mode:
      description: V(pwm) or V(rpm).
      type: str
    duty_percent:
      description: Drive now, percent. In V(rpm) mode the algorithm sets it.
      type: float
    target_rpm:
      description: The RPM target the TACH target registers hold (0 when none).
      type: int
    range_min_rpm:
      description: Lowest speed of the tachometer range in use.
      type: int
    poles:
      description: Fan poles the tach edges are set for.
      type: int
    update_time_ms:
      description: RPM algorithm update time.
      type: int
    min_drive_percent:
      description: Minimum drive of the RPM algorithm.
      type: float
    spin_up_level_percent:
      description: Spin-up drive.
      type: int
    spin_up_time_ms:
      description: Spin-up time.
      type: int
    pwm_frequency:
      description: PWM base frequency, Hz.
      type: int
  sample:
    mode: rpm
    duty_percent: 47.1
    target_rpm: 3000
    range_min_rpm: 2000
    poles: 2
    update_time_ms: 400
    min_drive_percent: 20.0
    spin_up_level_percent: 50
    spin_up_time_ms: 500
    pwm_frequency: 26000
registers:
  description: Registers written (in check mode, that would be written), in the order written, as hex strings to values.
  returned: success
  type: dict
  sample: {"0x3c": 24, "0x3d": 164, "0x32": 203}
'''

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.minicluster.cm4.plugins.module_utils.chips import emc2301
from ansible_collections.minicluster.cm4.plugins.module_utils.common import validate
from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry.fanowner import FanOwned, FanOwner, owner_path
from ansible_collections.minicluster.cm4.plugins.module_utils.transports import i2c


def parse_registers(raw):
    """{register: value} from a dict whose keys (and values) may be strings like '0x33'."""
    out = {}
    for key, value in (raw or {}).items():
        try:
            reg = key if isinstance(key, int) else int(str(key).strip(), 0)
            val = value if isinstance(value, int) and not isinstance(value, bool) else int(str(value).strip(), 0)
        except ValueError:
            raise ValueError('registers: %r: %r is not a register number and byte value' % (key, value))
        if reg == emc2301.SOFTWARE_LOCK:
            raise ValueError('registers: 0xef is the EMC2301 software lock, which freezes its configuration until '
                             'a power cycle; this module never writes it')
        if reg not in emc2301.WRITABLE:
            raise ValueError('registers: 0x%02x is not a writable EMC2301 configuration register' % reg)
        if not 0 <= val <= 0xFF:
            raise ValueError('registers: value %r of register 0x%02x is not a byte (0..255)' % (value, reg))
        out[reg] = val
    return out


def check_input(p):
    """Everything that can be checked without the chip. Raises ValueError."""
    i2c.parse_bus(p['i2c_bus'])
    if not 0x03 <= p['address'] <= 0x77:
        raise ValueError('address 0x%x is outside the I2C addresses 0x03..0x77' % p['address'])
    # required_if counts an option given as null as given: check the values.
    if p['mode'] == 'pwm' and p['duty_percent'] is None:
        raise ValueError('mode=pwm needs duty_percent (0 to 100)')
    if p['mode'] == 'rpm' and p['target_rpm'] is None:
        raise ValueError('mode=rpm needs target_rpm')
    if p['duty_percent'] is not None:
        if p['mode'] != 'pwm':
            raise ValueError('duty_percent applies to mode=pwm only')
        validate.number('duty_percent', p['duty_percent'], 0, 100, unit='%')
    if p['target_rpm'] is not None:
        if p['mode'] != 'rpm':
            raise ValueError('target_rpm applies to mode=rpm only')
        emc2301.range_for_rpm(p['target_rpm'])
    validate.number('min_drive_percent', p['min_drive_percent'], 0, 100, unit='%')
    return parse_registers(p['registers'])


def plan(p, current, raw):
    """{register: value} the options want, from the current registers."""
    want = {}
    c1 = emc2301.parse_config1(current[emc2301.FAN_CONFIGURATION_1])
    rpm_control = c1['rpm_control'] if p['mode'] is None else p['mode'] == 'rpm'
    range_bits = c1['range']
    if p['mode'] == 'rpm':
        range_bits = emc2301.range_for_rpm(p['target_rpm'])
        count = emc2301.count_from_rpm(p['target_rpm'], range_bits, p['poles'])
        want[emc2301.TACH_TARGET_LOW], want[emc2301.TACH_TARGET_HIGH] = emc2301.target_registers(count)
    update_ms = p['update_time_ms'] or c1['update_time_ms']
    want[emc2301.FAN_CONFIGURATION_1] = emc2301.config1(rpm_control, range_bits, p['poles'], update_ms)
    if p['mode'] == 'pwm':
        want[emc2301.FAN_SETTING] = emc2301.setting_from_percent(p['duty_percent'])
    if p['min_drive_percent'] is not None:
        want[emc2301.FAN_MINIMUM_DRIVE] = emc2301.setting_from_percent(p['min_drive_percent'])
    if p['spin_up_level_percent'] is not None or p['spin_up_time_ms'] is not None:
        want[emc2301.FAN_SPIN_UP_CONFIGURATION] = emc2301.spin_up(current[emc2301.FAN_SPIN_UP_CONFIGURATION],
                                                                  p['spin_up_level_percent'], p['spin_up_time_ms'])
    if p['pwm_frequency'] is not None:
        want[emc2301.PWM_BASE_FREQUENCY] = ((current[emc2301.PWM_BASE_FREQUENCY] & ~emc2301.PWM_BASE_MASK & 0xFF)
                                            | emc2301.pwm_base_bits(p['pwm_frequency']))
    for reg, value in raw.items():
        if reg in want:
            raise ValueError('registers: 0x%02x is also set by the named options (mode, poles, target_rpm, '
                             'duty_percent, ...); set it one way only' % reg)
        want[reg] = value
    return want


def changes(current, want):
    """The part of want that differs from current."""
    out = dict((reg, value) for reg, value in want.items() if current.get(reg) != value)
    # The target takes effect when the high byte is written: a new low byte needs the high byte too.
    if emc2301.TACH_TARGET_LOW in out and emc2301.TACH_TARGET_HIGH in want:
        out[emc2301.TACH_TARGET_HIGH] = want[emc2301.TACH_TARGET_HIGH]
    # Fan Setting is read-only while RPM control runs; leaving RPM mode, write it even if it reads the same.
    if emc2301.FAN_CONFIGURATION_1 in out and emc2301.FAN_SETTING in want:
        out[emc2301.FAN_SETTING] = want[emc2301.FAN_SETTING]
    return out


def main():
    module = validate.ansible_module(
        AnsibleModule,
        argument_spec=dict(
            i2c_bus=dict(type='raw', default='1'),
            address=dict(type='int', default=emc2301.ADDRESS),
            mode=dict(type='str', choices=['pwm', 'rpm']),
            duty_percent=dict(type='float'),
            target_rpm=dict(type='int'),
            poles=dict(type='int', default=2, choices=list(emc2301.POLES)),
            min_drive_percent=dict(type='float'),
            spin_up_level_percent=dict(type='int', choices=list(emc2301.SPIN_UP_LEVELS_PERCENT)),
            spin_up_time_ms=dict(type='int', choices=list(emc2301.SPIN_UP_TIMES_MS)),
            update_time_ms=dict(type='int', choices=list(emc2301.UPDATE_TIMES_MS)),
            pwm_frequency=dict(type='int', choices=list(emc2301.PWM_BASE_FREQUENCIES_HZ)),
            registers=dict(type='dict', default={}),
            lock_dir=dict(type='path', default='/run/lock'),
        ),
        required_if=[('mode', 'pwm', ['duty_percent']), ('mode', 'rpm', ['target_rpm'])],
        supports_check_mode=True,
    )
    p = module.params
    try:
        raw = check_input(p)
    except (ValueError, emc2301.EMC2301Error) as exc:
        module.fail_json(msg=to_native(exc))

    owner = FanOwner(owner_path(p['i2c_bus'], p['lock_dir']), 'the minicluster.cm4.fan module')
    try:
        owner.acquire()
    except FanOwned as exc:
        module.fail_json(msg='%s: stop minicluster-cm4-telemetry or set its fan curve off (telemetry_fan_curve), '
                             'then retry; nothing was written' % to_native(exc))
    except OSError as exc:
        module.fail_json(msg='cannot take the fan owner file in %s: %s' % (p['lock_dir'], to_native(exc)))

    try:
        bus = i2c.open_bus(p['i2c_bus'])
    except (i2c.I2CError, ValueError) as exc:
        owner.release()
        module.fail_json(msg=to_native(exc))

    where = 'I2C bus %s address 0x%02x' % (bus.name, p['address'])
    try:
        chip = emc2301.EMC2301(bus, p['address'])
        try:
            product, manufacturer = chip.identity()
        except OSError as exc:
            if not i2c.is_nack(exc):
                raise
            module.fail_json(msg='no EMC2301 fan controller answers at %s: check that the hat is seated and I2C is '
                                 'enabled (dtparam=i2c_arm=on)' % where)
        if (product, manufacturer) != (emc2301.PRODUCT_ID_EMC2301, emc2301.MANUFACTURER_ID_SMSC):
            module.fail_json(msg='the chip at %s is not an EMC2301 (product ID 0x%02x, manufacturer ID 0x%02x; '
                                 'expected 0x37, 0x5d): check i2c_bus and address; nothing was written'
                                 % (where, product, manufacturer))
        current = chip.read_state(extra=raw)
        try:
            want = plan(p, current, raw)
        except (ValueError, emc2301.EMC2301Error) as exc:
            module.fail_json(msg=to_native(exc))
        todo = changes(current, want)
        order = [r for r in emc2301.WRITE_ORDER if r in todo]
        if todo and not module.check_mode:
            if chip.read_u8(emc2301.SOFTWARE_LOCK) & 0x01:
                module.fail_json(msg='the EMC2301 at %s has its software lock set, so its configuration cannot change '
                                     'until the hat is power-cycled; nothing was written' % where)
            chip.write_registers(todo)
            after = chip.read_state(extra=raw)
            rpm_mode = after[emc2301.FAN_CONFIGURATION_1] & emc2301.CONFIG1_EN_ALGO
            wrong = [r for r in order if after[r] != todo[r] and not (r == emc2301.FAN_SETTING and rpm_mode)]
            if wrong:
                reg = wrong[0]
                module.fail_json(msg='EMC2301 at %s: register 0x%02x reads back 0x%02x after writing 0x%02x: check the '
                                     'value (reserved bits) and the chip' % (where, reg, after[reg], todo[reg]),
                                 changed=True)
        else:
            after = dict(current)
            after.update(todo)
        rpm = chip.rpm(after[emc2301.FAN_CONFIGURATION_1])
    except (i2c.I2CError, OSError) as exc:
        module.fail_json(msg='I2C transfer with the EMC2301 at %s failed: %s' % (where, to_native(exc)))
    finally:
        bus.close()
        owner.release()

    before_settings = emc2301.describe(current)
    settings = emc2301.describe(after)
    result = dict(changed=bool(todo), rpm=rpm, mode=settings['mode'], settings=settings,
                  registers=dict(('0x%02x' % r, todo[r]) for r in order))
    if module._diff and todo:
        names = [k for k in settings if settings[k] != before_settings[k]
                 and not (k == 'duty_percent' and emc2301.FAN_SETTING not in todo)]
        result['diff'] = dict(before=dict((k, before_settings[k]) for k in names),
                              after=dict((k, settings[k]) for k in names))
        if not names:
            result['diff'] = dict(before=dict(('0x%02x' % r, current.get(r)) for r in order),
                                  after=dict(('0x%02x' % r, todo[r]) for r in order))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
