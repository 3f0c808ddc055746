#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: rp2040_firmware
short_description: Check, and install, the firmware of the cluster hat's RP2040
version_added: 0.2.0
description:
  - Checks whether the RP2040's stock console firmware answers (on its USB console, or on the Pi's
    UART5 when the USB console is absent).
  - When asked, installs a given C(.uf2) image, normally the board's published C(adc_console.uf2),
    through the RP2040's boot ROM, from the controller alone. Pi GPIO21 (to the RP2040's QSPI_SS)
    is held low across a reset pulse on Pi GPIO25 (its RUN), so the boot ROM starts and shows its
    RPI-RP2 drive behind the hub's port 1. BOOTSEL is released as soon as the boot ROM runs (it
    samples the line again when it reboots after the image). The drive is proven to be that one
    (USB 2e8a:0003 under the hub's port 1, SCSI RPI RP2, a FAT volume labelled RPI-RP2), the UF2
    blocks are written to its raw sectors without mounting it, and the module waits for the console.
  - The UF2 is validated before anything happens (UF2 magic numbers in every block, the RP2040
    family ID 0xE48BFF56, one complete flash image).
  - Resetting the RP2040 drops the power of every node. The module refuses while any node draws
    current above its off baseline, or when the node currents cannot be read, unless O(force) is set.
  - The UF2 drive sits behind the hat's USB hub. A board whose hub is not yet configured (blank
    EEPROM) or held in reset (EEPROM jumpers fitted) cannot show it; program such a board over SWD
    instead, with OpenOCD's C(linuxgpiod) or C(bcm2835gpio) adapter on Pi GPIO19 (SWCLK) and GPIO26
    (SWDIO), as docs/rp2040.md shows.
  - Holds the hat lock throughout, so no other process talks to the RP2040 meanwhile.
author:
  - minicluster.cm4 developers (@minicluster)
extends_documentation_fragment:
  - minicluster.cm4.hat
attributes:
  check_mode:
    support: full
    description: Checks the console, the UF2 and the nodes, and reports whether an install would happen; touches no line.
  diff_mode:
    support: full
    description: Shows whether the console answered before and after.
options:
  install:
    description:
      - V(never) only checks whether the console firmware answers.
      - V(missing) installs O(uf2) when the console does not answer.
      - V(always) installs O(uf2) in any case.
    type: str
    choices: [never, missing, always]
    default: never
  uf2:
    description:
      - Path, on the controller, of the firmware image to install (the board's C(adc_console.uf2)).
      - Required unless O(install=never).
    type: path
  force:
    description:
      - Reset the RP2040 even though nodes are on (they lose power) or their currents cannot be read.
    type: bool
    default: false
  gpio:
    description:
      - The GPIO chip carrying the Pi's header lines (C(gpiochip0) on a Raspberry Pi 4), or
        C(unix:PATH) for a simulated hat.
    type: str
    default: gpiochip0
  usb_hub:
    description:
      - sysfs name of the hat's USB2517 hub (for example C(1-1.3)). Unset, the only USB2517 with an
        RP2040 on its port 1 is used (or the only USB2517 at all, when its port 1 is empty, as an RP2040
        without firmware does not enumerate).
    type: str
  root:
    description:
      - The system root below which C(sys/) and C(dev/) are read to find the drive. Only tests and the
        simulator set this.
    type: path
    default: /
  drive_timeout:
    description:
      - Seconds to wait for the RPI-RP2 drive after the reset.
    type: float
    default: 20.0
  console_timeout:
    description:
      - Seconds to wait for the console to answer after the image is written.
    type: float
    default: 30.0
requirements:
  - python3-libgpiod (the gpiod Python bindings, 1.x or 2.x) on the controller, for a real GPIO chip
'''

EXAMPLES = r'''
- name: Does the hat's RP2040 run its console firmware?
  minicluster.cm4.rp2040_firmware:
  register: rp2040

- name: Install the published console firmware if it does not answer
  minicluster.cm4.rp2040_firmware:
    install: missing
    uf2: /opt/cm4hat/adc_console.uf2

- name: Reinstall it even with nodes running (they lose power)
  minicluster.cm4.rp2040_firmware:
    install: always
    uf2: /opt/cm4hat/adc_console.uf2
    force: true
'''

RETURN = r'''
answers:
  description: Whether the console firmware answers after the task (before it, in check mode).
  returned: always
  type: bool
  sample: true
installed:
  description: Whether an image was written (would be, in check mode).
  returned: always
  type: bool
  sample: false
console:
  description: The port that answered and its path, V(usb) or V(uart); null when nothing answered.
  returned: always
  type: dict
  sample: {port: /dev/ttyACM0, path: usb}
uf2:
  description: The validated image.
  returned: when O(uf2) is given
  type: dict
  sample: {path: /opt/cm4hat/adc_console.uf2, blocks: 96, size: 49152, sha256: "3f1c...", flash_start: "0x10000000", flash_end: "0x10006000"}
drive:
  description: The RPI-RP2 drive the image was written to.
  returned: when an image was written
  type: dict
  sample: {usb_path: 1-1.3.1, name: sdb, path: /dev/sdb}
nodes_on:
  description: Nodes found drawing current above their off baseline before the install.
  returned: always
  type: list
  elements: int
  sample: []
'''

import math
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.minicluster.cm4.plugins.module_utils.board import bootsel
from ansible_collections.minicluster.cm4.plugins.module_utils.board import usb
from ansible_collections.minicluster.cm4.plugins.module_utils.board.hat import NODES, HatError
from ansible_collections.minicluster.cm4.plugins.module_utils.board.options import hat_argument_spec, hat_from_module
from ansible_collections.minicluster.cm4.plugins.module_utils.common import validate
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.disk import DiskError
from ansible_collections.minicluster.cm4.plugins.module_utils.transports import gpio
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.lock import DeviceLock, LockTimeout, hat_lock_path
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.rp2040 import ConsoleError

RESET_PULSE_S = 0.05
BOOTSEL_HOLD_S = 0.2
POLL_S = 0.25


def read_hat(hat):
    """(status or None, the error that kept the console from answering)."""
    try:
        return hat.status(), None
    except ConsoleError as exc:
        return None, exc


def reset_rp2040(lines, into_bootsel, sleep=time.sleep):
    """Pulse RUN low, with BOOTSEL held low across it when into_bootsel; then release both lines."""
    try:
        lines.output({bootsel.BOOTSEL_LINE: 0 if into_bootsel else 1, bootsel.RUN_LINE: 1})
        lines.output({bootsel.RUN_LINE: 0})
        sleep(RESET_PULSE_S)
        lines.output({bootsel.RUN_LINE: 1})
        sleep(BOOTSEL_HOLD_S)
    finally:
        lines.release([bootsel.BOOTSEL_LINE, bootsel.RUN_LINE])


def wait_for(what, timeout, probe, sleep=time.sleep):
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() >= deadline:
            return None
        sleep(POLL_S)


def forget_pins(hat):
    """An RP2040 reset returns every node pin to its power-up level: EN low, nRPIBOOT released."""
    memory = hat.memory()
    for node in NODES:
        remembered = memory.node(node)
        remembered['en'] = False
        remembered['boot_mode'] = 'normal'
    memory.save()


def install(module, hat, image, data, result):
    p = module.params
    root = p['root']
    hub = bootsel.find_hub(root, p['usb_hub'])
    lines = gpio.open_lines(p['gpio'])
    try:
        reset_rp2040(lines, into_bootsel=True)
        forget_pins(hat)
        try:
            found = wait_for('drive', p['drive_timeout'], lambda: bootsel.probe_drive(root, hub))
        except (DiskError, bootsel.BootselError):
            # Never leave the boot ROM running on a drive we refused: back to the flash's firmware.
            reset_rp2040(lines, into_bootsel=False)
            raise
        if not found:
            reset_rp2040(lines, into_bootsel=False)
            raise bootsel.BootselError('no RPI-RP2 drive appeared behind the hub\'s port 1 (%s.1) within %ss of the '
                                       'BOOTSEL reset; the RP2040 was reset again into its flash: check the hub runs '
                                       'its configuration, or program the RP2040 over SWD' % (hub, p['drive_timeout']))
    finally:
        lines.close()
    info, geometry = found
    result['drive'] = dict(usb_path=info.usb_path, name=info.name, path=info.path)
    late_error = bootsel.write_uf2(info, geometry, data, root)
    result['installed'] = True
    result['changed'] = True
    status = wait_for('console', p['console_timeout'], lambda: read_hat(hat)[0])
    if status is None:
        raise bootsel.BootselError('the image %s (%d blocks) was written to %s but no console answers within %ss%s: '
                                   'is it the console firmware? the RP2040 now runs it, or its boot ROM again'
                                   % (image['path'], image['blocks'], info.path, p['console_timeout'],
                                      ' (write ended with: %s)' % late_error if late_error else ''))
    return status


def main():
    argument_spec = hat_argument_spec()
    argument_spec.update(
        install=dict(type='str', default='never', choices=['never', 'missing', 'always']),
        uf2=dict(type='path'),
        force=dict(type='bool', default=False),
        gpio=dict(type='str', default=gpio.DEFAULT_CHIP),
        usb_hub=dict(type='str'),
        root=dict(type='path', default='/'),
        drive_timeout=dict(type='float', default=20.0),
        console_timeout=dict(type='float', default=30.0),
    )
    module = validate.ansible_module(AnsibleModule, argument_spec=argument_spec, supports_check_mode=True,
                                     required_if=[('install', 'missing', ('uf2',)), ('install', 'always', ('uf2',))])
    p = module.params
    result = dict(changed=False, installed=False, answers=False, console=None, nodes_on=[])
    image = data = None
    try:
        for name in ('drive_timeout', 'console_timeout'):
            if not math.isfinite(p[name]) or not 0 < p[name] <= 600:
                raise HatError('%s must be more than 0 and at most 600 seconds, not %s' % (name, p[name]))
        gpio.parse_spec(p['gpio'])
        if p['usb_hub']:
            usb.check_usb_path(p['usb_hub'], 'usb_hub')
        if p['uf2']:
            image, data = bootsel.check_uf2(p['uf2'])
            result['uf2'] = image
        hat = hat_from_module(module)
    except (HatError, ValueError, DiskError, usb.UsbError, bootsel.BootselError) as exc:
        module.fail_json(msg=str(exc), **result)

    lock = DeviceLock(hat_lock_path(p['hat'], p['lock_dir']), p['lock_timeout'])
    try:
        with lock:
            hat.held_lock = lock
            status, silent = read_hat(hat)
            result['answers'] = status is not None
            if status is not None:
                result['console'] = dict(port=hat.used_port, path=hat.path_name)
                result['nodes_on'] = [n for n in NODES if status[n]['power'] == 'on']
            wanted = p['install'] == 'always' or (p['install'] == 'missing' and status is None)
            if wanted and not p['force']:
                if status is None:
                    raise HatError('the RP2040 console does not answer (%s), so the node currents cannot be read; '
                                   'resetting the RP2040 drops the power of every node: set force: true once every '
                                   'node is known to be off' % silent)
                if result['nodes_on']:
                    raise HatError('node%s %s %s on (%s); resetting the RP2040 to install firmware drops the power of '
                                   'every node: power them off first (node_power state=off) or set force: true'
                                   % ('s' if len(result['nodes_on']) > 1 else '',
                                      ', '.join(str(n) for n in result['nodes_on']),
                                      'are' if len(result['nodes_on']) > 1 else 'is',
                                      ', '.join('%.0f mA' % status[n]['current_ma'] for n in result['nodes_on'])))
            before = result['answers']
            if wanted and module.check_mode:
                result.update(changed=True, installed=True)
            elif wanted:
                if result['nodes_on']:
                    module.warn('nodes %s lose power as the RP2040 resets (force: true)'
                                % ', '.join(str(n) for n in result['nodes_on']))
                status = install(module, hat, image, data, result)
                result['answers'] = True
                result['console'] = dict(port=hat.used_port, path=hat.path_name)
            elif status is None and p['install'] == 'never':
                module.warn('the RP2040 console does not answer (%s): install its firmware (install: missing, uf2: '
                            'adc_console.uf2)' % silent)
    except (HatError, ConsoleError, LockTimeout, gpio.GpioError, bootsel.BootselError, DiskError) as exc:
        module.fail_json(msg=str(exc), **result)
    except OSError as exc:
        module.fail_json(msg='installing the RP2040 firmware failed: %s' % exc, **result)
    result['diff'] = dict(before=dict(answers=before), after=dict(answers=result['answers'] or result['installed']))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
