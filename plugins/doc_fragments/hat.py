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
      - The RP2040's console on the controller, normally its USB serial port behind the hat's hub.
      - A device path (C(/dev/ttyACM0), the udev name C(/dev/cm4hat)) or any pyserial URL.
      - The Pi's UART5 (O(uart_port)) reaches the same console and may be given here too.
    type: str
    default: /dev/ttyACM0
  uart_port:
    description:
      - The RP2040's second path, its UART1 wired to the Pi's UART5, as named by the hat role.
      - Used when O(port) does not exist, as while the hub is held in reset by the EEPROM jumpers or
        runs no configuration yet. Results say which path answered.
      - An empty string disables the fallback.
    type: str
    default: /dev/cm4hat-uart
  hat:
    description:
      - Name of the hat on this controller. It names the lock and the files under O(state_dir), so
        that every process reaching the same RP2040, by USB or by UART, takes turns with the others.
      - Letters, digits, V(_), V(.) and V(-).
    type: str
    default: hat0
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
      - Directory where the controller remembers what the firmware cannot report (the USB-boot pin,
        each node's off current) and keeps the current calibration (M(minicluster.cm4.hat_calibrate)).
    type: path
    default: /var/lib/minicluster-cm4
  command_timeout:
    description:
      - Seconds to wait for the RP2040's reply to one command.
    type: float
    default: 2.0
  on_threshold_ma:
    description:
      - A node drawing at least this much more than its own off baseline counts as powered on.
      - The firmware cannot report its EN pin, so power state is read back from the node's eFuse current.
        An off node is not at zero (its card's converters and an NVMe drive stay powered), so the
        baseline is the current seen right after this controller last switched the node off, else
        the calibrated one, else 0.
    type: float
    default: 50.0
  ma_per_unit:
    description:
      - Milliamps per unit the firmware reports, for every node. Its C(a) command prints the IMON
        voltage in millivolts labelled mA; the true current depends on the eFuse's IMON gain.
      - Unset, each node uses its calibrated value (M(minicluster.cm4.hat_calibrate)), or 1 when it has none.
    type: float
requirements:
  - pyserial >= 3.5 on the controller
notes:
  - Runs on the controller Pi that carries the hat; delegate to it from plays about nodes.
'''
