# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Chip models: one module per part, register names from its datasheet.

Every model is an I2C target driven by hatsim.i2c.Bus with these calls, one per bus event:
acks(now) when its address is sent (False = NACK), write(data, now) / read(count, now) for a
message's payload, repeated_start() when another message follows in the same transaction, and
stop(now) when the transaction ends.
"""
