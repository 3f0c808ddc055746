# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Microchip USB2517 hub: its 256-byte configuration image, as the hub loads it from an I2C EEPROM.

A pure codec, no I/O: named fields <-> image. Offsets and register names follow the USB2517
datasheet's "EEPROM/SMBus register memory map". Units are made human where the chip uses a scale:
currents in mA (the chip counts 2 mA), the power-on time in ms (the chip counts 2 ms).

encode() fills every byte it does not know with zero, so an image made from fields is canonical:
decode(encode(f)) == normalize(f) and encode(decode(image)) == image for such an image.
decode() never fails on 256 bytes (a blank 0xFF EEPROM decodes to nonsense, not an exception).
"""

from __future__ import annotations

import copy

IMAGE_SIZE = 256
STRING_MAX_CHARS = 31
STRING_SIZE = 2 * STRING_MAX_CHARS
PORTS = tuple(range(1, 8))  # downstream ports 1..7; port 0 is the upstream port where a register has it

# Register offsets (datasheet names)
VID_LSB = 0x00
VID_MSB = 0x01
PID_LSB = 0x02
PID_MSB = 0x03
DID_LSB = 0x04
DID_MSB = 0x05
CFG_DATA_BYTE_1 = 0x06
CFG_DATA_BYTE_2 = 0x07
CFG_DATA_BYTE_3 = 0x08
NRD = 0x09      # non-removable devices, bit N = port N
PDS = 0x0A      # port disable, self-powered
PDB = 0x0B      # port disable, bus-powered
MAXPS = 0x0C    # max power, self-powered (2 mA units)
MAXPB = 0x0D    # max power, bus-powered (2 mA units)
HCMCS = 0x0E    # hub controller max current, self-powered (2 mA units)
HCMCB = 0x0F    # hub controller max current, bus-powered (2 mA units)
PWRT = 0x10     # power-on time (2 ms units)
LANG_ID_H = 0x11
LANG_ID_L = 0x12
MFR_STR_LEN = 0x13
PRD_STR_LEN = 0x14
SER_STR_LEN = 0x15
MFR_STR = 0x16
PRD_STR = 0x54
SER_STR = 0x92
BOOSTUP = 0xF6
BOOST_7_5 = 0xF7
BOOST_4_1 = 0xF8
PRTSP = 0xFA    # port swap (D+/D-): bit 0 upstream, bit N downstream port N
PRTR12 = 0xFB   # port remap: low nibble physical port 1, high nibble physical port 2
PRTR34 = 0xFC
PRTR56 = 0xFD
PRTR7 = 0xFE
STCD = 0xFF

# CFG_DATA_BYTE_1 bits
CFG1_SELF_BUS_PWR = 0x80   # 1 = self-powered
CFG1_HS_DISABLE = 0x20
CFG1_MTT_ENABLE = 0x10
CFG1_EOP_DISABLE = 0x08
CFG1_CURRENT_SNS_MASK = 0x06
CFG1_PORT_PWR = 0x01       # 1 = individual port power switching
# CFG_DATA_BYTE_2 bits
CFG2_DYNAMIC = 0x80
CFG2_OC_TIMER_MASK = 0x30
CFG2_COMPOUND = 0x08
# CFG_DATA_BYTE_3 bits
CFG3_PRTMAP_EN = 0x08
CFG3_LED_MODE_MASK = 0x06
CFG3_STRING_EN = 0x01

_STRINGS = (('manufacturer', MFR_STR_LEN, MFR_STR),
            ('product', PRD_STR_LEN, PRD_STR),
            ('serial', SER_STR_LEN, SER_STR))
_WORDS = (('vid', VID_LSB), ('pid', PID_LSB), ('did', DID_LSB))
_BYTES = (('cfg1', CFG_DATA_BYTE_1), ('cfg2', CFG_DATA_BYTE_2), ('cfg3', CFG_DATA_BYTE_3), ('stcd', STCD))
_PORT_MASKS = (('non_removable_ports', NRD), ('disabled_ports_self', PDS), ('disabled_ports_bus', PDB))
_TWO_MA = (('max_power_self_ma', MAXPS), ('max_power_bus_ma', MAXPB),
           ('hub_current_self_ma', HCMCS), ('hub_current_bus_ma', HCMCB), ('power_on_time_ms', PWRT))
_PRTR = (PRTR12, PRTR12, PRTR34, PRTR34, PRTR56, PRTR56, PRTR7)

# Every field, in image order: diffs and documentation list them so.
FIELDS = ('vid', 'pid', 'did', 'cfg1', 'cfg2', 'cfg3', 'non_removable_ports', 'disabled_ports_self',
          'disabled_ports_bus', 'max_power_self_ma', 'max_power_bus_ma', 'hub_current_self_ma',
          'hub_current_bus_ma', 'power_on_time_ms', 'langid', 'manufacturer', 'product', 'serial',
          'boost_upstream', 'boost', 'port_swap', 'port_remap', 'stcd')

DEFAULT_MANUFACTURER = 'minicluster'

# The hat's stock configuration (what ships on the boards); the manufacturer string is ours.
STOCK = {
    'vid': 0x0424,
    'pid': 0x2517,
    'did': 0x0000,
    'cfg1': 0x95,
    'cfg2': 0x20,
    'cfg3': 0x01,
    'non_removable_ports': [],
    'disabled_ports_self': [],
    'disabled_ports_bus': [],
    'max_power_self_ma': 2,      # MAXPS 0x01
    'max_power_bus_ma': 100,     # MAXPB 0x32
    'hub_current_self_ma': 2,    # HCMCS 0x01
    'hub_current_bus_ma': 100,   # HCMCB 0x32
    'power_on_time_ms': 100,     # PWRT 0x32
    'langid': 0x0000,
    'manufacturer': DEFAULT_MANUFACTURER,
    'product': 'RaspberryPiCluster',
    'serial': '00000000',
    'boost_upstream': 0,
    'boost': {},
    # The board routes every downstream D+/D- pair reversed: without this no node's USB works.
    'port_swap': [1, 2, 3, 4, 5, 6, 7],
    'port_remap': {},
    'stcd': 0x00,
}


class FieldError(ValueError):
    """A field value the image cannot hold. str() names the field."""

    def __init__(self, field, problem):
        super(FieldError, self).__init__('%s: %s' % (field, problem))
        self.field = field
        self.problem = problem


def stock_fields(**overrides):
    """The stock configuration with some fields replaced."""
    fields = copy.deepcopy(STOCK)
    for name, value in overrides.items():
        if name not in STOCK:
            raise FieldError(name, 'not a USB2517 configuration field')
        fields[name] = value
    return fields


def _int(field, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(field, 'must be an integer, not %r' % (value,))
    if not low <= value <= high:
        raise FieldError(field, '%d is outside %s..%s' % (value, _num(low), _num(high)))
    return value


def _num(value):
    return '0x%X' % value if value > 255 else str(value)


def _ports(field, value, low=1):
    if value is None:
        value = []
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, '__iter__'):
        raise FieldError(field, 'must be a list of ports, not %r' % (value,))
    ports = set()
    for port in value:
        if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= 7:
            raise FieldError(field, 'port %r is not a port of the hub (%d..7)' % (port, low))
        ports.add(port)
    return sorted(ports)


def _port_map(field, value, check_value):
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise FieldError(field, 'must be a mapping of port to value, not %r' % (value,))
    result = {}
    for key, item in value.items():
        port = key
        if isinstance(key, str) and key.strip().isdigit():
            port = int(key)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 7:
            raise FieldError(field, 'port %r is not a downstream port of the hub (1..7)' % (key,))
        item = check_value('%s[%d]' % (field, port), item)
        if item:
            result[port] = item
    return result


def _string(field, value, required=False):
    if value is None:
        value = ''
    if not isinstance(value, str):
        raise FieldError(field, 'must be a string, not %r' % (value,))
    try:
        raw = value.encode('utf-16-le')
    except UnicodeEncodeError:
        raise FieldError(field, 'cannot be encoded as UTF-16')
    if len(raw) > STRING_SIZE:
        raise FieldError(field, '%r is %d UTF-16 characters long, at most %d fit'
                         % (value, len(raw) // 2, STRING_MAX_CHARS))
    if required and not value:
        raise FieldError(field, 'must not be empty')
    return value


def _two_units(field, value):
    _int(field, value, 0, 510)
    if value % 2:
        raise FieldError(field, '%d is not a multiple of 2 (the hub counts in steps of 2)' % value)
    return value


def normalize(fields):
    """Validate every field and return them in canonical form (sorted ports, int keys, no zero entries).

    Missing fields are an error: start from stock_fields() to get a full set.
    """
    missing = [name for name in FIELDS if name not in fields]
    if missing:
        raise FieldError(missing[0], 'missing')
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise FieldError(unknown[0], 'not a USB2517 configuration field')
    out = {}
    for name, _offset in _WORDS:
        out[name] = _int(name, fields[name], 0, 0xFFFF)
    out['langid'] = _int('langid', fields['langid'], 0, 0xFFFF)
    for name, _offset in _BYTES:
        out[name] = _int(name, fields[name], 0, 0xFF)
    for name, _offset in _PORT_MASKS:
        out[name] = _ports(name, fields[name])
    for name, _offset in _TWO_MA:
        out[name] = _two_units(name, fields[name])
    out['manufacturer'] = _string('manufacturer', fields['manufacturer'])
    out['product'] = _string('product', fields['product'])
    out['serial'] = _string('serial', fields['serial'], required=True)
    out['boost_upstream'] = _int('boost_upstream', fields['boost_upstream'], 0, 3)
    out['boost'] = _port_map('boost', fields['boost'], lambda f, v: _int(f, v, 0, 3))
    out['port_swap'] = _ports('port_swap', fields['port_swap'], low=0)
    out['port_remap'] = _port_map('port_remap', fields['port_remap'], lambda f, v: _int(f, v, 0, 7))
    return dict((name, out[name]) for name in FIELDS)


def _mask(ports):
    value = 0
    for port in ports:
        value |= 1 << port
    return value


def _unmask(value, low=1):
    return [port for port in range(low, 8) if value & (1 << port)]


def encode(fields):
    """Fields (a full set, see stock_fields) -> the 256-byte image. Raises FieldError naming the field."""
    f = normalize(fields)
    image = bytearray(IMAGE_SIZE)
    for name, offset in _WORDS:
        image[offset] = f[name] & 0xFF
        image[offset + 1] = f[name] >> 8
    for name, offset in _BYTES:
        image[offset] = f[name]
    for name, offset in _PORT_MASKS:
        image[offset] = _mask(f[name])
    for name, offset in _TWO_MA:
        image[offset] = f[name] // 2
    image[LANG_ID_H] = f['langid'] >> 8
    image[LANG_ID_L] = f['langid'] & 0xFF
    for name, len_offset, offset in _STRINGS:
        raw = f[name].encode('utf-16-le')
        image[len_offset] = len(raw) // 2
        image[offset:offset + len(raw)] = raw
    image[BOOSTUP] = f['boost_upstream']
    for port, level in f['boost'].items():
        if port <= 4:
            image[BOOST_4_1] |= level << (2 * (port - 1))
        else:
            image[BOOST_7_5] |= level << (2 * (port - 5))
    image[PRTSP] = _mask(f['port_swap'])
    for port, logical in f['port_remap'].items():
        image[_PRTR[port - 1]] |= logical << (0 if port % 2 else 4)
    return bytes(image)


def decode(image):
    """The 256-byte image -> fields. Never fails on 256 bytes; string lengths over 31 are clipped."""
    image = bytes(image)
    if len(image) != IMAGE_SIZE:
        raise FieldError('image', 'is %d bytes long, a USB2517 configuration is %d' % (len(image), IMAGE_SIZE))
    f = {}
    for name, offset in _WORDS:
        f[name] = image[offset] | (image[offset + 1] << 8)
    for name, offset in _BYTES:
        f[name] = image[offset]
    for name, offset in _PORT_MASKS:
        f[name] = _unmask(image[offset])
    for name, offset in _TWO_MA:
        f[name] = image[offset] * 2
    f['langid'] = (image[LANG_ID_H] << 8) | image[LANG_ID_L]
    for name, len_offset, offset in _STRINGS:
        length = min(image[len_offset], STRING_MAX_CHARS)
        f[name] = image[offset:offset + 2 * length].decode('utf-16-le', 'replace')
    f['boost_upstream'] = image[BOOSTUP] & 0x03
    boost = {}
    for port in PORTS:
        level = (image[BOOST_4_1] >> (2 * (port - 1))) if port <= 4 else (image[BOOST_7_5] >> (2 * (port - 5)))
        if level & 0x03:
            boost[port] = level & 0x03
    f['boost'] = boost
    f['port_swap'] = _unmask(image[PRTSP], low=0)
    remap = {}
    for port in PORTS:
        logical = (image[_PRTR[port - 1]] >> (0 if port % 2 else 4)) & 0x0F
        if logical:
            remap[port] = logical
    f['port_remap'] = remap
    return dict((name, f[name]) for name in FIELDS)


def with_self_powered(fields, self_powered):
    """Fields with CFG_DATA_BYTE_1's SELF_BUS_PWR bit set (True) or cleared (False); None keeps it."""
    out = dict(fields)
    if self_powered is not None:
        out['cfg1'] = (fields['cfg1'] | CFG1_SELF_BUS_PWR) if self_powered else (fields['cfg1'] & ~CFG1_SELF_BUS_PWR & 0xFF)
    return out


def diff_fields(before, after):
    """(before, after) restricted to the fields that differ, in image order."""
    names = [name for name in FIELDS if before.get(name) != after.get(name)]
    return dict((n, before.get(n)) for n in names), dict((n, after.get(n)) for n in names)


def for_json(fields):
    """Fields (all or some) with string keys in the port maps, as Ansible returns them."""
    out = dict(fields)
    for name in ('boost', 'port_remap'):
        if isinstance(out.get(name), dict):
            out[name] = dict((str(k), v) for k, v in sorted(out[name].items()))
    return out
