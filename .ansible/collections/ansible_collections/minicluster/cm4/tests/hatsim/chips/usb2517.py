# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Microchip USB2517 hub: what it makes of the 256-byte configuration image it loads at reset.

Only what decides whether the nodes' USB works is decoded: identity, port disables and the D+/D-
swap (the board routes every downstream pair reversed, so a port works only with its PRTSP bit
set, and the upstream port only with bit 0 clear).
"""

from __future__ import annotations

VID = 0x00
PID = 0x02
DID = 0x04
CFG1 = 0x06
CFG2 = 0x07
CFG3 = 0x08
NRD = 0x09
PDS = 0x0A
PDB = 0x0B
MANUFACTURER_LEN = 0x13
PRODUCT_LEN = 0x14
SERIAL_LEN = 0x15
MANUFACTURER_STRING = 0x16
PRODUCT_STRING = 0x54
SERIAL_STRING = 0x92
PRTSP = 0xFA

CFG1_SELF_BUS_PWR = 0x80
CFG3_STRING_EN = 0x01
CFG3_PRTMAP_EN = 0x08
DOWNSTREAM_PORTS = range(1, 8)


def _string(image, offset, length):
    length = min(length, 31)
    raw = bytes(image[offset:offset + 2 * length])
    try:
        return raw.decode('utf-16-le')
    except UnicodeDecodeError:
        return None


def decode(image):
    """The configuration the hub runs with after loading `image` (256 bytes)."""
    image = bytes(image)
    if len(image) != 256:
        raise ValueError('a USB2517 configuration image is 256 bytes')
    vid = image[VID] | image[VID + 1] << 8
    pid = image[PID] | image[PID + 1] << 8
    if image == b'\xff' * 256:
        kind = 'blank'
    elif (vid, pid) == (0x0424, 0x2517):
        kind = 'usb2517'
    else:
        kind = 'custom'
    self_powered = bool(image[CFG1] & CFG1_SELF_BUS_PWR)
    disabled = image[PDS] if self_powered else image[PDB]
    prtsp = image[PRTSP]
    upstream_ok = not prtsp & 0x01
    ports = {}
    for port in DOWNSTREAM_PORTS:
        ports[str(port)] = bool(upstream_ok and prtsp & (1 << port) and not disabled & (1 << port))
    strings = None
    if image[CFG3] & CFG3_STRING_EN:
        strings = {
            'manufacturer': _string(image, MANUFACTURER_STRING, image[MANUFACTURER_LEN]),
            'product': _string(image, PRODUCT_STRING, image[PRODUCT_LEN]),
            'serial': _string(image, SERIAL_STRING, image[SERIAL_LEN]),
        }
    return {
        'image': kind, 'vid': '%04x' % vid, 'pid': '%04x' % pid, 'did': '%04x' % (image[DID] | image[DID + 1] << 8),
        'self_powered': self_powered, 'prtsp': prtsp, 'upstream_swapped': not upstream_ok,
        'downstream_swapped': all(prtsp & (1 << p) for p in DOWNSTREAM_PORTS),
        'port_remap': bool(image[CFG3] & CFG3_PRTMAP_EN), 'ports_disabled': disabled,
        'port_works': ports, 'strings': strings,
    }
