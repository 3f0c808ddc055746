#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: node_power
short_description: Power, reset and USB-boot control of the cluster hat's CM4 nodes
version_added: 0.1.0
description:
  - Switches a node's power (EN), pulses its SoC reset (RUN) and sets its USB-boot pin (nRPIBOOT)
    through the hat's RP2040.
  - Knows whether a node is on from the current it draws, and remembers on the controller the USB-boot
    pin, which the firmware cannot report. Sends nothing when a node already is as asked.
  - Every exchange with the RP2040 holds a lock shared by all processes on the controller that
    reach the same hat, by its USB console or by the Pi's UART5.
  - A node counts as on when it draws O(on_threshold_ma) more than its own off baseline, since an
    off node keeps drawing a little (its card's converters and NVMe drive stay powered).
author:
  - minicluster.cm4 developers (@minicluster)
extends_documentation_fragment:
  - minicluster.cm4.hat
attributes:
  check_mode:
    support: full
    description: Reads the current draw and reports what would change; sends no pin command.
  diff_mode:
    support: full
    description: Shows each node's power and boot mode before and after.
options:
  node:
    description:
      - One node, 1 to 4. Mutually exclusive with O(nodes).
    type: int
  nodes:
    description:
      - Several nodes, 1 to 4, handled in order.
    type: list
    elements: int
  state:
    description:
      - V(on) and V(off) switch power, and do nothing when the node already is so.
      - V(restarted) switches the node off (when on), waits O(restart_delay) seconds and switches it on. Always changes.
      - V(reset) pulses RUN low for 100 ms, a SoC reset without cutting power. Fails on a node that is off. Always changes.
    type: str
    choices: ["on", "off", restarted, reset]
    default: "on"
  boot_mode:
    description:
      - V(usb) asserts nRPIBOOT so the node boots as a USB device (for rpiboot); V(normal) releases it.
      - Set before power rises. The SoC samples the pin only as it boots, so changing the boot mode of
        a node that is on with O(state=on) power-cycles it.
      - Unset leaves the pin alone.
    type: str
    choices: [normal, usb]
  stagger:
    description:
      - Seconds between successive power-ons, across every caller on the controller, to spread the inrush current.
    type: float
    default: 1.0
  restart_delay:
    description:
      - Seconds a node stays off during O(state=restarted) or a boot-mode change, 0 to 60.
    type: float
    default: 2.0
  force:
    description:
      - Switch a node even while a M(minicluster.cm4.node_flash) run holds it. That spoils the flash; without
        it the task fails naming the flash and how to stop it.
    type: bool
    default: false
'''

EXAMPLES = r'''
- name: Power every node on
  minicluster.cm4.node_power:
    nodes: [1, 2, 3, 4]
    state: "on"

- name: Put node 3 in USB boot for rpiboot
  minicluster.cm4.node_power:
    node: 3
    state: "on"
    boot_mode: usb

- name: Reset a hung node without cutting its power
  minicluster.cm4.node_power:
    node: 2
    state: reset
    port: /dev/cm4hat

- name: Power node 1 on through the Pi's UART5 (the hub not configured yet)
  minicluster.cm4.node_power:
    node: 1
    state: "on"
    port: /dev/cm4hat-uart

- name: Power a node off from a play about the nodes
  minicluster.cm4.node_power:
    node: "{{ cm4_slot }}"
    state: "off"
  delegate_to: "{{ groups['controller'][0] }}"
'''

RETURN = r'''
nodes:
  description: Each node asked for, as it is after the task (as it would be, in check mode).
  returned: success
  type: list
  elements: dict
  contains:
    node:
      description: Node number, 1 to 4.
      type: int
      sample: 3
    power:
      description: V(on) or V(off).
      type: str
      sample: "on"
    boot_mode:
      description: V(normal), V(usb), or null when the controller does not know the pin.
      type: str
      sample: usb
    current_ma:
      description: Current the node draws, read back after any change.
      type: float
      sample: 512.4
    baseline_ma:
      description: The node's off current that O(on_threshold_ma) is counted from.
      type: float
      sample: 12.1
    actions:
      description: Pin actions taken (or that would be taken), in order.
      type: list
      elements: str
      sample: [usb, "on"]
console:
  description: The port that answered and its path, V(usb) or V(uart) (the fallback O(uart_port)).
  returned: success
  type: dict
  sample: {port: /dev/cm4hat-uart, path: uart}
generation:
  description: Counter of changes the controller has made to this hat's pins, for ordering concurrent runs.
  returned: when something changed
  type: int
  sample: 42
'''


from ansible.module_utils.basic import AnsibleModule
from ansible_collections.minicluster.cm4.plugins.module_utils.board import owner
from ansible_collections.minicluster.cm4.plugins.module_utils.board.hat import HatError, check_nodes
from ansible_collections.minicluster.cm4.plugins.module_utils.board.options import check_hat_options, hat_argument_spec, hat_from_module
from ansible_collections.minicluster.cm4.plugins.module_utils.common import validate
from ansible_collections.minicluster.cm4.plugins.module_utils.common.validate import InvalidOption, node_list
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.lock import LockTimeout
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.rp2040 import ConsoleError


def main():
    argument_spec = hat_argument_spec()
    argument_spec.update(
        node=dict(type='int'),
        nodes=dict(type='list', elements='int'),
        state=dict(type='str', default='on', choices=['on', 'off', 'restarted', 'reset']),
        boot_mode=dict(type='str', choices=['normal', 'usb']),
        stagger=dict(type='float', default=1.0),
        restart_delay=dict(type='float', default=2.0),
        force=dict(type='bool', default=False),
    )
    module = validate.ansible_module(
        AnsibleModule, argument_spec=argument_spec, supports_check_mode=True,
        mutually_exclusive=[('node', 'nodes')], required_one_of=[('node', 'nodes')])
    p = module.params
    port = p['port']
    try:
        # Validated before the port is opened: bad input sends nothing to the hat.
        nodes = check_nodes(node_list('node' if p['node'] is not None else 'nodes',
                                      [p['node']] if p['node'] is not None else p['nodes']), port)
        check_hat_options(p)
        hat = hat_from_module(module, restart_delay=p['restart_delay'])
        # One owner per node: a node being flashed is not switched under the flash.
        with owner.Guard(p['state_dir'], nodes, force=p['force']) as guard:
            results = hat.ensure(nodes, p['state'], boot_mode=p['boot_mode'], stagger=p['stagger'],
                                 check_mode=module.check_mode)
        for node, info in sorted(guard.forced.items()):
            module.warn('forced: %s; that flash will fail' % owner.describe(node, info))
        for node, info in sorted(guard.dead.items()):
            module.warn('node %d: flash run %s (pid %s) died at %s and left its eMMC partly written: reflash it'
                        % (node, info.get('run'), info.get('pid'), info.get('interrupted_phase') or info.get('phase')))
    except (HatError, ConsoleError, LockTimeout, InvalidOption, owner.NodeBusy) as exc:
        module.fail_json(msg=str(exc), port=port)

    changed = any(r['changed'] for r in results.values())
    nodes_out = []
    warnings = []
    for node in nodes:
        r = results[node]
        after = r['after']
        nodes_out.append(dict(node=node, power=after['power'], boot_mode=after['boot_mode'],
                              current_ma=after['current_ma'], baseline_ma=after['baseline_ma'], actions=r['actions']))
        if not module.check_mode and after['power'] == 'on' and after['current_ma'] - after['baseline_ma'] < p['on_threshold_ma']:
            warnings.append('node %d was switched on but draws only %.1f mA, %.1f above its off baseline (threshold %.1f): '
                            'is a card in slot %d?' % (node, after['current_ma'], after['current_ma'] - after['baseline_ma'],
                                                       p['on_threshold_ma'], node))
    for w in warnings:
        module.warn(w)
    diff = dict(
        before=dict(('node%d' % n, dict(power=results[n]['before']['power'], boot_mode=results[n]['before']['boot_mode']))
                    for n in nodes),
        after=dict(('node%d' % n, dict(power=results[n]['after']['power'], boot_mode=results[n]['after']['boot_mode']))
                   for n in nodes),
    )
    result = dict(changed=changed, nodes=nodes_out, diff=diff, console=dict(port=hat.used_port, path=hat.path_name))
    generations = [r['generation'] for r in results.values() if 'generation' in r]
    if generations:
        result['generation'] = max(generations)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
