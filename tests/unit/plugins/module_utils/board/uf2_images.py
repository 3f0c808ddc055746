# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""UF2 images built from the format's specification (microsoft/uf2), for tests."""

from __future__ import annotations

import hashlib
import struct

RP2040 = 0xE48BFF56
SAMD21 = 0x68ED2B88


def uf2_block(block_no, num_blocks, target, payload, family=RP2040, flags=0x2000, magic=(0x0A324655, 0x9E5D5157, 0x0AB16F30)):
    head = struct.pack('<8I', magic[0], magic[1], flags, target, len(payload), block_no, num_blocks, family)
    body = payload + b'\0' * (476 - len(payload))
    return head + body + struct.pack('<I', magic[2])


def make_uf2(blocks=8, family=RP2040, seed=b'adc_console'):
    """(bytes of a complete flash image for the RP2040, SHA-256 of its payload in address order)."""
    out = b''
    payload_hash = hashlib.sha256()
    for n in range(blocks):
        payload = hashlib.sha256(seed + bytes([n])).digest() * 8
        payload_hash.update(payload)
        out += uf2_block(n, blocks, 0x10000000 + 256 * n, payload, family=family)
    return out, payload_hash.hexdigest()
