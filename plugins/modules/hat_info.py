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
  - The input current is measured across the shunt R173 (0.1 ohm on the schematic). The INA226 reads at
    most +-81.92 mV across it, 0.82 A with 0.1 ohm; above that its shunt register sticks at its limit,
    and the current and power are reported as null with a warning, never as the clipped value.
  - Finds the hat's USB2517 hub in sysfs (the one with the RP2040 on its port 1) and reports what is on each
    of its ports; a hub that cannot be found gives null and a warning saying why.
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
      - I2C address of the TMP117 under each node, node number to address. Entries given replace the defaults.
      - The hat straps each slot's ADD0 (open on slot 1, GND, SCL, SDA on slots 2, 3, 4), so node 1 is at
        0x49, node 2 at 0x48, node 3 at 0x4B, node 4 at 0x4A.
    type: dict
    default: {"1": 0x49, "2": 0x48, "3": 0x4B, "4": 0x4A}
  ina226_address:
    description:
      - I2C address of the input power monitor (its A0/A1 straps).
    type: int
    default: 0x40
  ina226_shunt_ohm:
    description:
      - Resistance of the input current shunt (R173), in ohms. The schematic fits 0.1 ohm, which limits the
        measurable input current to 0.82 A; a board fitted with a smaller shunt measures more.
    type: float
    default: 0.1
  sensors:
    description:
      - Read the I2C sensors. V(false) reads only node power and current from the RP2040.
    type: bool
    default: true
  usb:
    description:
      - Find the hat's USB hub and report its ports.
    type: bool
    default: true
  usb_hub:
    description:
      - Sysfs name of the hat's USB2517 hub (for example C(1-1.3)) when more than one hat is attached.
        It must be a USB2517 with the RP2040 on its port 1; without it the hub is searched for.
    type: str
  root:
    description:
      - Root under which C(sys/bus/usb/devices) is read; C(/) on the controller.
    type: path
    default: /
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
      description: Current the node draws, in mA per the node's calibration (M(minicluster.cm4.hat_calibrate)) or O(ma_per_unit).
      type: float
    baseline_ma:
      description: The node's off current, from which O(on_threshold_ma) is counted.
      type: float
    temperature_c:
      description: Temperature under the node's SoC; null when its sensor does not answer or has not converted yet.
      type: float
  sample:
    - {node: 1, power: "on", boot_mode: normal, current_ma: 512.3, temperature_c: 41.2}
console:
  description: The port that answered and its path, V(usb) or V(uart) (the fallback O(uart_port)).
  returned: always
  type: dict
  sample: {port: /dev/ttyACM0, path: usb}
input:
  description: The hat's 12 V input; values null when the INA226 does not answer.
  returned: always
  type: dict
  contains:
    voltage_v:
      description: Bus voltage.
      type: float
    shunt_v:
      description: Voltage across the shunt.
      type: float
    current_a:
      description: Input current; null when the shunt voltage is beyond the INA226's range (saturated).
      type: float
    power_w:
      description: Input power; null when saturated.
      type: float
    saturated:
      description: The shunt voltage is at the limit of the INA226's range (+-81.92 mV), so the true current is beyond it.
      type: bool
  sample: {voltage_v: 11.98, shunt_v: 0.0612, current_a: 0.612, power_w: 7.33, saturated: false}
usb:
  description: The hat's USB hub and what is on its ports; hub null (and a warning) when it is not found.
  returned: always
  type: dict
  contains:
    hub:
      description: Sysfs name of the hat's USB2517, for example C(1-1.3).
      type: str
    rp2040:
      description: V(console) when the RP2040 runs its console firmware (2e8a:000a), V(bootsel) in its boot ROM (2e8a:0003).
      type: str
    ports:
      description: Each of the hub's seven downstream ports.
      type: list
      elements: dict
      contains:
        port:
          description: Port number, 1 to 7.
          type: int
        path:
          description: Sysfs name of a device on that port.
          type: str
        role:
          description: What the board wires there, V(rp2040), V(node1) .. V(node4) or V(unused).
          type: str
        device:
          description: The device now on the port (C(id) vendor:product, C(product), C(manufacturer), C(serial)), null when none.
          type: dict
    error:
      description: Why the hub was not found.
      type: str
  sample:
    hub: 1-1.3
    rp2040: console
    ports:
      - {port: 1, path: 1-1.3.1, role: rp2040, device: {id: "2e8a:000a", product: Pico, manufacturer: Raspberry Pi, serial: E6614C311B4A8A2C}}
      - {port: 2, path: 1-1.3.2, role: node1, device: null}
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

import math

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.minicluster.cm4.plugins.module_utils.board import usb as usbmod
from ansible_collections.minicluster.cm4.plugins.module_utils.board.hat import HatError, NODES
from ansible_collections.minicluster.cm4.plugins.module_utils.board.options import hat_argument_spec, hat_from_module
from ansible_collections.minicluster.cm4.plugins.module_utils.chips import emc2301, ina226, tmp117
from ansible_collections.minicluster.cm4.plugins.module_utils.common import validate
from ansible_collections.minicluster.cm4.plugins.module_utils.transports import i2c
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.lock import LockTimeout
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.rp2040 import ConsoleError


def _integer(value, what):
    if isinstance(value, bool):
        raise ValueError('%s must be a number, not %r' % (what, value))
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text, 16) if text.lower().startswith('0x') else int(text)
    except ValueError:
        raise ValueError('%s must be an integer (for example 73 or 0x49), not %r' % (what, value))


def addresses(raw):
    """{node: address} from a dict whose keys may arrive as strings; entries given replace the defaults."""
    out = dict(tmp117.DEFAULT_ADDRESSES)
    for key, value in (raw or {}).items():
        node = _integer(key, 'a tmp117_addresses key')
        if node not in NODES:
            raise ValueError('tmp117_addresses names node %s: nodes are 1 to 4' % (key,))
        addr = _integer(value, 'the tmp117_addresses entry of node %d' % node)
        if not 0x08 <= addr <= 0x77:
            raise ValueError('tmp117_addresses gives node %d the address %r, outside 0x08..0x77' % (node, value))
        out[node] = addr
    taken = {}
    for node, addr in sorted(out.items()):
        if addr in taken:
            raise ValueError('tmp117_addresses gives nodes %d and %d the same address 0x%02x: each slot has its own'
                             % (taken[addr], node, addr))
        taken[addr] = node
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


def read_input(warnings, bus, monitor):
    """The INA226's reading, with a warning (and null current and power) when its shunt is saturated."""
    reading = read_sensor(warnings, 'the INA226 at 0x%02x' % monitor.addr, bus, monitor.read)
    if reading and reading['saturated']:
        warnings.append('the INA226 at 0x%02x is saturated: the shunt voltage is at its +-81.92 mV limit, so the input '
                        'current is above %.3g A with ina226_shunt_ohm=%g; current and power are reported as null. '
                        'Set ina226_shunt_ohm to the shunt fitted on the board (R173)'
                        % (monitor.addr, monitor.saturation_current(), monitor.shunt_ohm))
    return reading


def usb_report(warnings, root, hub_path):
    """The hat's hub and its ports; a hub given by path must be the hat's (UsbError), a searched one may be missing."""
    try:
        hub = usbmod.find_hub(root, hub_path)
    except usbmod.UsbError as exc:
        if hub_path is not None:
            raise
        warnings.append('USB: %s' % exc)
        return dict(hub=None, rp2040=None, ports=[], error=str(exc))
    return dict(hub.as_dict(), hub=hub.path, error=None)


def main():
    argument_spec = hat_argument_spec()
    argument_spec.update(
        i2c_bus=dict(type='raw', default='1'),
        tmp117_addresses=dict(type='dict', default=dict((str(n), a) for n, a in tmp117.DEFAULT_ADDRESSES.items())),
        ina226_address=dict(type='int', default=ina226.DEFAULT_ADDRESS),
        ina226_shunt_ohm=dict(type='float', default=ina226.DEFAULT_SHUNT_OHM),
        sensors=dict(type='bool', default=True),
        usb=dict(type='bool', default=True),
        usb_hub=dict(type='str'),
        root=dict(type='path', default='/'),
    )
    module = validate.ansible_module(AnsibleModule, argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    warnings = []
    try:
        temp_addr = addresses(p['tmp117_addresses'])
        shunt = p['ina226_shunt_ohm']
        if not (math.isfinite(shunt) and 0 < shunt <= 100):
            raise ValueError('ina226_shunt_ohm must be a resistance above 0 and at most 100 ohm (the schematic fits 0.1), '
                             'not %s' % shunt)
        if not 0x08 <= p['ina226_address'] <= 0x77:
            raise ValueError('ina226_address 0x%x is outside 0x08..0x77 (the INA226 straps give 0x40..0x4F)' % p['ina226_address'])
        if p['usb_hub'] is not None:
            usbmod.check_usb_path(p['usb_hub'], 'usb_hub')
        if p['sensors']:
            i2c.parse_bus(p['i2c_bus'])
        usb_info = dict(hub=None, rp2040=None, ports=[], error=None)
        if p['usb']:
            usb_info = usb_report(warnings, p['root'], p['usb_hub'])
    except (ValueError, usbmod.UsbError) as exc:
        module.fail_json(msg=str(exc))

    try:
        hat = hat_from_module(module)
        status = hat.status()
    except (HatError, ConsoleError, LockTimeout) as exc:
        module.fail_json(msg=str(exc), port=p['port'])

    nodes = [dict(node=n, power=status[n]['power'], boot_mode=status[n]['boot_mode'],
                  current_ma=status[n]['current_ma'], baseline_ma=status[n]['baseline_ma'], temperature_c=None)
             for n in NODES]
    inp = dict(voltage_v=None, shunt_v=None, current_a=None, power_w=None, saturated=None)
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
            inp.update(read_input(warnings, bus, ina226.INA226(bus, p['ina226_address'], shunt)) or {})
            fan.update(read_sensor(warnings, 'the EMC2301 fan controller at 0x%02x' % emc2301.ADDRESS, bus,
                                   emc2301.EMC2301(bus).status) or {})
        except (i2c.I2CError, OSError) as exc:
            module.fail_json(msg='reading the hat sensors on I2C bus %s failed: %s' % (bus.name, exc))
        finally:
            bus.close()
    for w in warnings:
        module.warn(w)
    module.exit_json(changed=False, nodes=nodes, input=inp, fan=fan, usb=usb_info,
                     console=dict(port=hat.used_port, path=hat.path_name))


if __name__ == '__main__':
    main()
