#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: hat_info
short_description: Read the cluster hat's node power, currents, temperatures, input power and fan
version_added: 0.1.0
description:
  - Reads, and never changes, the state of the hat. Each node's power and current (RP2040), its
    temperature (the TMP117 under its SoC), the 12 V input (INA226) and the fan (EMC2301).
  - A sensor that does not answer (an empty slot, a missing chip) gives null and a warning.
author:
  - minicluster.cm4 developers (@minicluster)
extends_documentation_fragment:
  - minicluster.cm4.hat
  - minicluster.cm4.i2c
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Read-only.
  diff_mode:
    support: N/A
    details: Read-only.
  platform:
    platforms: posix
options:
  tmp117_addresses:
    description:
      - I2C address of the TMP117 under each node, node number to address. The hat sets them per slot.
    type: dict
    default: {"1": 0x48, "2": 0x49, "3": 0x4A, "4": 0x4B}
  ina226_address:
    description:
      - I2C address of the input power monitor (its A0/A1 straps).
    type: int
    default: 0x40
  ina226_shunt_ohm:
    description:
      - Resistance of the input current shunt, in ohms.
    type: float
    default: 0.002
  sensors:
    description:
      - Read the I2C sensors. V(false) reads only node power and current from the RP2040.
    type: bool
    default: true
'''

EXAMPLES = r'''
- name: Read the hat
  minicluster.cm4.hat_info:
    port: /dev/cm4hat
  register: hat

- name: Show node temperatures
  ansible.builtin.debug:
    msg: "{{ hat.nodes | map(attribute='temperature_c') | list }}"
'''

RETURN = r'''
nodes:
  description: Each node.
  returned: always
  type: list
  elements: dict
  contains:
    node:
      description: Node number, 1 to 4.
      type: int
    power:
      description: V(on) or V(off), from the current the node draws.
      type: str
    boot_mode:
      description: V(normal) or V(usb) as last set by this controller, null when unknown.
      type: str
    current_ma:
      description: Current the node draws.
      type: float
    temperature_c:
      description: Temperature under the node's SoC; null when its sensor does not answer or has not converted yet.
      type: float
  sample:
    - {node: 1, power: "on", boot_mode: normal, current_ma: 512.3, temperature_c: 41.2}
input:
  description: The hat's 12 V input; values null when the INA226 does not answer.
  returned: always
  type: dict
  contains:
    voltage_v:
      description: Bus voltage.
      type: float
    current_a:
      description: Input current.
      type: float
    power_w:
      description: Input power.
      type: float
  sample: {voltage_v: 11.98, current_a: 1.42, power_w: 17.0}
fan:
  description: The fan; values null when the EMC2301 does not answer.
  returned: always
  type: dict
  contains:
    rpm:
      description: Measured speed; 0 when stalled or stopped.
      type: int
    duty_percent:
      description: PWM drive, percent.
      type: float
    mode:
      description: V(pwm) (direct drive) or V(rpm) (closed-loop speed control).
      type: str
  sample: {rpm: 2950, duty_percent: 49.8, mode: pwm}
'''


from ansible.module_utils.basic import AnsibleModule
from ansible_collections.minicluster.cm4.plugins.module_utils.board.hat import HatError, NODES
from ansible_collections.minicluster.cm4.plugins.module_utils.board.options import check_hat_options, hat_argument_spec, hat_from_module
from ansible_collections.minicluster.cm4.plugins.module_utils.common import validate
from ansible_collections.minicluster.cm4.plugins.module_utils.chips import emc2301, ina226, tmp117
from ansible_collections.minicluster.cm4.plugins.module_utils.transports import i2c
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.lock import LockTimeout
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.rp2040 import ConsoleError


def addresses(raw):
    """{node: address} from a dict whose keys may arrive as strings."""
    out = dict(tmp117.DEFAULT_ADDRESSES)
    for node, value in validate.node_keyed('tmp117_addresses', raw).items():
        # The TMP117's ADD0 pin selects one of four addresses, 0x48 to 0x4B.
        out[node] = validate.number('tmp117_addresses node %d' % node, value, 0x48, 0x4B, integer=True)
    return out


def read_sensor(warnings, what, bus, fn):
    """fn() or None with a warning when the chip does not answer."""
    try:
        return fn()
    except OSError as exc:
        if not i2c.is_nack(exc):
            raise
        warnings.append('%s does not answer on I2C bus %s; reported as null' % (what, bus.name))
        return None


def main():
    argument_spec = hat_argument_spec()
    argument_spec.update(
        i2c_bus=dict(type='raw', default='1'),
        tmp117_addresses=dict(type='dict', default={'1': 0x48, '2': 0x49, '3': 0x4A, '4': 0x4B}),
        ina226_address=dict(type='int', default=0x40),
        ina226_shunt_ohm=dict(type='float', default=0.002),
        sensors=dict(type='bool', default=True),
    )
    module = validate.ansible_module(
        AnsibleModule, argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    warnings = []
    try:
        check_hat_options(p)
        temp_addr = addresses(p['tmp117_addresses'])
        # The INA226's A0/A1 straps select 0x40 to 0x4F.
        validate.number('ina226_address', p['ina226_address'], 0x40, 0x4F, integer=True)
        validate.number('ina226_shunt_ohm', p['ina226_shunt_ohm'], 0, 10, low_open=True, unit='ohm')
        if p['sensors']:
            i2c.parse_bus(p['i2c_bus'])
    except ValueError as exc:
        module.fail_json(msg=str(exc))

    try:
        status = hat_from_module(module).status()
    except (HatError, ConsoleError, LockTimeout) as exc:
        module.fail_json(msg=str(exc), port=p['port'])

    nodes = [dict(node=n, power=status[n]['power'], boot_mode=status[n]['boot_mode'],
                  current_ma=status[n]['current_ma'], temperature_c=None) for n in NODES]
    inp = dict(voltage_v=None, current_a=None, power_w=None)
    fan = dict(rpm=None, duty_percent=None, mode=None)
    if p['sensors']:
        try:
            bus = i2c.open_bus(p['i2c_bus'])
        except (i2c.I2CError, ValueError) as exc:
            module.fail_json(msg=str(exc))
        try:
            for entry in nodes:
                sensor = tmp117.TMP117(bus, temp_addr[entry['node']])
                entry['temperature_c'] = read_sensor(warnings, 'the TMP117 of node %d at 0x%02x' % (entry['node'], sensor.addr),
                                                     bus, sensor.temperature)
            monitor = ina226.INA226(bus, p['ina226_address'], p['ina226_shunt_ohm'])
            inp.update(read_sensor(warnings, 'the INA226 at 0x%02x' % monitor.addr, bus, monitor.read) or {})
            fan.update(read_sensor(warnings, 'the EMC2301 fan controller at 0x%02x' % emc2301.ADDRESS, bus,
                                   emc2301.EMC2301(bus).status) or {})
        except (i2c.I2CError, OSError) as exc:
            module.fail_json(msg='reading the hat sensors on I2C bus %s failed: %s' % (bus.name, exc))
        finally:
            bus.close()
    for w in warnings:
        module.warn(w)
    module.exit_json(changed=False, nodes=nodes, input=inp, fan=fan)


if __name__ == '__main__':
    main()
