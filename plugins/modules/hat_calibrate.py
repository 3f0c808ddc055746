#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: hat_calibrate
short_description: Calibrate each node's current reading against the hat's input power monitor
version_added: 0.2.0
description:
  - The RP2040 reports each node's eFuse IMON voltage (millivolts labelled mA); the true current
    depends on the eFuse's IMON gain. This module switches the nodes it may switch one at a time
    and compares the step of the node's IMON reading with the step of the 12 V input current the
    INA226 measures, which gives that node's mA per unit. It also measures each node's off
    baseline (an off node keeps drawing a little, as its card's converters and NVMe drive stay powered).
  - The result is stored on the controller, in O(state_dir) (JSON, replaced atomically), and used by
    M(minicluster.cm4.node_power), M(minicluster.cm4.hat_info) and the telemetry afterwards.
  - A node is powered with its USB-boot pin asserted, so its SoC waits in the boot ROM and never
    touches its eMMC; it is switched off again right after, and its USB-boot pin restored.
  - Only nodes listed in O(nodes) are switched, and only those found off; a listed node that is on is
    skipped with a warning. With no node to switch the module fails and changes nothing.
  - Holds the hat lock for the whole calibration, so nothing else switches a node meanwhile.
author:
  - minicluster.cm4 developers (@minicluster)
extends_documentation_fragment:
  - minicluster.cm4.hat
  - minicluster.cm4.i2c
attributes:
  check_mode:
    support: full
    description: Reads the node currents and the INA226 and reports which nodes would be calibrated; switches nothing.
  diff_mode:
    support: full
    description: Shows each calibrated node's mA per unit and baseline before and after.
options:
  nodes:
    description:
      - The nodes this calibration may switch on and off, 1 to 4. Nodes found on are skipped.
    type: list
    elements: int
    required: true
  recalibrate:
    description:
      - Measure nodes that already have a calibration again. V(false) calibrates only the nodes that
        have none, so a second run changes nothing.
    type: bool
    default: false
  samples:
    description:
      - Paired readings (IMON and input current) taken with the node off, and again with it on.
    type: int
    default: 5
  settle:
    description:
      - Seconds to wait after switching a node before reading, for its eFuse soft-start and boot ROM.
    type: float
    default: 1.0
  ina226_address:
    description:
      - I2C address of the input power monitor (its A0/A1 straps), 0x40 to 0x4F.
    type: int
    default: 0x40
  ina226_shunt_ohm:
    description:
      - Resistance of the input current shunt, in ohms (the schematic's R173 is 0.1 ohm).
      - With 0.1 ohm the INA226 saturates above 0.82 A; a calibration that would read a saturated
        value fails instead and names this option.
    type: float
    default: 0.1
'''

EXAMPLES = r'''
- name: Calibrate the current readings of nodes 2 to 4 (node 1 keeps running)
  minicluster.cm4.hat_calibrate:
    nodes: [2, 3, 4]
    i2c_bus: 1

- name: Measure again after changing a card
  minicluster.cm4.hat_calibrate:
    nodes: [3]
    recalibrate: true
'''

RETURN = r'''
calibration:
  description: The hat's calibration as stored after the run, one entry per calibrated node.
  returned: success
  type: list
  elements: dict
  contains:
    node:
      description: Node number.
      type: int
    ma_per_unit:
      description: Milliamps of input current per unit the RP2040 reports for this node.
      type: float
    baseline_units:
      description: The node's reading while off.
      type: float
    step_units:
      description: The IMON step measured when the node was switched on.
      type: float
    step_ma:
      description: The input-current step measured at the same time.
      type: float
    calibrated_at:
      description: When the node was measured (UTC, ISO 8601).
      type: str
  sample:
    - {node: 2, ma_per_unit: 1.93, baseline_units: 11.2, step_units: 371.0, step_ma: 716.0, calibrated_at: "2026-12-01T20:30:00Z"}
calibrated:
  description: Nodes measured by this run (that would be, in check mode).
  returned: success
  type: list
  elements: int
  sample: [2, 3]
skipped:
  description: Listed nodes left alone, with the reason.
  returned: success
  type: dict
  sample: {"1": "on"}
path:
  description: The calibration file on the controller.
  returned: success
  type: str
  sample: /var/lib/minicluster-cm4/minicluster-cm4.hat0.calibration.json
console:
  description: The port that answered and its path, V(usb) or V(uart).
  returned: success
  type: dict
  sample: {port: /dev/ttyACM0, path: usb}
'''

import math
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.minicluster.cm4.plugins.module_utils.board import calibration
from ansible_collections.minicluster.cm4.plugins.module_utils.board.hat import HatError, channel_of, check_nodes
from ansible_collections.minicluster.cm4.plugins.module_utils.board.options import hat_argument_spec, hat_from_module
from ansible_collections.minicluster.cm4.plugins.module_utils.chips import ina226
from ansible_collections.minicluster.cm4.plugins.module_utils.common import validate
from ansible_collections.minicluster.cm4.plugins.module_utils.transports import i2c, rp2040
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.lock import LockTimeout

# The INA226's shunt register at either end of its range: the true current is beyond it.
SHUNT_LIMITS = (0x7FFF, 0x8000)


class Monitor(object):
    """The INA226 as calibration reads it: input current in mA, refusing a saturated reading."""

    def __init__(self, bus, addr, shunt_ohm):
        self.chip = ina226.INA226(bus, addr, shunt_ohm)
        self.where = 'the INA226 at 0x%02x on I2C bus %s' % (addr, bus.name)

    def check(self):
        try:
            found = self.chip.identify()
        except OSError as exc:
            if i2c.is_nack(exc):
                raise HatError('%s does not answer: check ina226_address and i2c_bus' % self.where)
            raise
        if not found:
            raise HatError('%s is not an INA226 (wrong manufacturer or die ID): check ina226_address' % self.where)

    def milliamps(self):
        raw = self.chip.read_u16_be(ina226.INA226_SHUNT_VOLTAGE)
        if raw in SHUNT_LIMITS:
            limit = 81.92e-3 / self.chip.shunt_ohm
            raise HatError('%s is saturated (shunt register at its limit, above %.2f A with ina226_shunt_ohm=%s): '
                           'calibrate with fewer nodes running, or set ina226_shunt_ohm to the shunt fitted'
                           % (self.where, limit, self.chip.shunt_ohm))
        return ina226.shunt_volts(raw) / self.chip.shunt_ohm * 1000.0


def read_pairs(console, monitor, node, count):
    """count readings of (the node's IMON units, input mA), the input read around each IMON average."""
    pairs = []
    for dummy in range(count):
        before = monitor.milliamps()
        units = console.averages()[node - 1]
        after = monitor.milliamps()
        pairs.append((units, (before + after) / 2.0))
    return pairs


def measure(hat, console, monitor, memory, node, samples, settle, sleep=time.sleep):
    """Switch node on in USB boot and off again; its calibration entry."""
    channel = channel_of(node)
    remembered = memory.node(node)
    off = read_pairs(console, monitor, node, samples)
    try:
        # The boot ROM waits for rpiboot and never reads the eMMC: a safe load to measure.
        console.pin(channel, rp2040.USB_BOOT_ASSERT)
        remembered['boot_mode'] = 'usb'
        console.pin(channel, rp2040.ENABLE)
        remembered['en'] = True
        sleep(settle)
        on = read_pairs(console, monitor, node, samples)
    finally:
        console.pin(channel, rp2040.DISABLE)
        remembered['en'] = False
        if remembered.get('restore_boot_mode') != 'usb':
            console.pin(channel, rp2040.USB_BOOT_DEASSERT)
            remembered['boot_mode'] = 'normal'
        remembered.pop('restore_boot_mode', None)
        memory.save()
        sleep(settle)
    try:
        entry = calibration.fit_step(node, off, on)
    except calibration.CalibrationError as exc:
        raise HatError(str(exc))
    entry['calibrated_at'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
    remembered['off_units'] = entry['baseline_units']
    return entry


def main():
    argument_spec = hat_argument_spec()
    argument_spec.update(
        nodes=dict(type='list', elements='int', required=True),
        recalibrate=dict(type='bool', default=False),
        samples=dict(type='int', default=5),
        settle=dict(type='float', default=1.0),
        i2c_bus=dict(type='raw', default='1'),
        ina226_address=dict(type='int', default=0x40),
        ina226_shunt_ohm=dict(type='float', default=0.1),
    )
    module = validate.ansible_module(AnsibleModule, argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    try:
        if not p['nodes']:
            raise HatError('no node to switch: list in nodes the nodes (1 to 4) the calibration may switch on and off')
        nodes = check_nodes(p['nodes'], p['port'])
        if not 1 <= p['samples'] <= 100:
            raise HatError('samples must be 1 to 100, not %d' % p['samples'])
        if not math.isfinite(p['settle']) or not 0 <= p['settle'] <= 60:
            raise HatError('settle must be 0 to 60 seconds, not %s' % p['settle'])
        if not 0x40 <= p['ina226_address'] <= 0x4F:
            raise HatError('ina226_address 0x%x is not an INA226 address (0x40 to 0x4f)' % p['ina226_address'])
        if not math.isfinite(p['ina226_shunt_ohm']) or p['ina226_shunt_ohm'] <= 0:
            raise HatError('ina226_shunt_ohm must be a positive resistance, not %s' % p['ina226_shunt_ohm'])
        i2c.parse_bus(p['i2c_bus'])
        hat = hat_from_module(module)
        before = hat.calibration
    except (HatError, ValueError) as exc:
        module.fail_json(msg=str(exc))

    skipped = {}
    result = dict(changed=False, skipped=skipped, path=calibration.calibration_path(p['state_dir'], p['hat']))
    bus = None
    try:
        with hat.console() as console:
            memory = hat.memory()
            units = dict(zip((1, 2, 3, 4), console.averages()))
            todo = []
            for node in nodes:
                view = hat.view(node, units[node], memory)
                if view['power'] == 'on' or memory.node(node).get('en'):
                    skipped[str(node)] = 'on'
                elif node in before and not p['recalibrate']:
                    skipped[str(node)] = 'calibrated'
                else:
                    todo.append(node)
            result['console'] = dict(port=hat.used_port, path=hat.path_name)
            if not todo and any(reason == 'on' for reason in skipped.values()):
                raise HatError('no node to switch: node%s %s %s on; switch off a node the calibration may use, '
                               'or list another' % ('s' if len(skipped) > 1 else '', ', '.join(sorted(skipped)),
                                                    'are' if len(skipped) > 1 else 'is'))
            if todo:
                bus = i2c.open_bus(p['i2c_bus'])
                monitor = Monitor(bus, p['ina226_address'], p['ina226_shunt_ohm'])
                monitor.check()
                monitor.milliamps()
            measured = {}
            if todo and not module.check_mode:
                for node in todo:
                    memory.node(node)['restore_boot_mode'] = memory.node(node).get('boot_mode')
                    measured[node] = measure(hat, console, monitor, memory, node, p['samples'], p['settle'])
                    memory.save()
                    # Node by node: a failure on a later node keeps what was measured before it.
                    calibration.save(p['state_dir'], p['hat'], {node: measured[node]})
                    result['changed'] = True
    except (HatError, rp2040.ConsoleError, LockTimeout, i2c.I2CError, ValueError) as exc:
        module.fail_json(msg=str(exc), **result)
    except OSError as exc:
        module.fail_json(msg='reading the INA226 on I2C bus %s failed: %s' % (p['i2c_bus'], exc), **result)
    finally:
        if bus is not None:
            bus.close()

    after = calibration.load(p['state_dir'], p['hat']) if not module.check_mode else before
    for node in skipped:
        if skipped[node] == 'on':
            module.warn('node %s is on and was not calibrated: switch it off first (calibration powers it in USB '
                        'boot and off again)' % node)
    result.update(
        changed=bool(todo),
        calibrated=todo,
        calibration=[dict(after[n], node=n) for n in sorted(after)],
        diff=dict(before=dict(('node%d' % n, before.get(n)) for n in todo),
                  after=dict(('node%d' % n, after.get(n, 'measured on a real run')) for n in todo)),
    )
    module.exit_json(**result)


if __name__ == '__main__':
    main()
