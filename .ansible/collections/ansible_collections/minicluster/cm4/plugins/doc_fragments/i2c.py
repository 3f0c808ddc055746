# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    # The I2C bus option of every module that reads or writes the hat's I2C chips.
    DOCUMENTATION = r'''
options:
  i2c_bus:
    description:
      - The I2C bus the hat's chips are on.
      - A bus number (V(1)) or C(/dev/i2c-N) opens the kernel bus with smbus2.
      - C(unix:PATH) talks to a simulated hat over its socket.
    type: raw
    default: "1"
requirements:
  - smbus2 on the controller, for a kernel bus
'''
