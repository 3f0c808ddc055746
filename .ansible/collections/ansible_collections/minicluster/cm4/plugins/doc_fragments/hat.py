# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    # Options of every module that talks to the hat's RP2040 console.
    DOCUMENTATION = r'''
options:
  port:
    description:
      - The RP2040's console on the controller.
      - A device path (C(/dev/ttyACM0), the udev name C(/dev/cm4hat)) or any pyserial URL.
    type: str
    default: /dev/ttyACM0
  lock_timeout:
    description:
      - Seconds to wait for the hat lock that every process on the controller takes for each whole
        exchange with the RP2040 (its selected channel is global state).
    type: float
    default: 60.0
  lock_dir:
    description:
      - Directory of the hat lock file. Every user of the hat on the controller must use the same one.
    type: path
    default: /run/lock
  state_dir:
    description:
      - Directory where the controller remembers what the firmware cannot report (the USB-boot pin).
    type: path
    default: /var/lib/minicluster-cm4
  command_timeout:
    description:
      - Seconds to wait for the RP2040's reply to one command.
    type: float
    default: 2.0
  on_threshold_ma:
    description:
      - A node drawing at least this current counts as powered on.
      - The firmware cannot report its EN pin, so power state is read back from the node's eFuse current.
    type: float
    default: 50.0
  ma_per_unit:
    description:
      - Milliamps per unit the firmware reports. Its C(a) command prints the IMON voltage in millivolts
        labelled mA; the true current depends on the eFuse's IMON resistor.
    type: float
    default: 1.0
requirements:
  - pyserial >= 3.5 on the controller
notes:
  - Runs on the controller Pi that carries the hat; delegate to it from plays about nodes.
'''
