# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.minicluster.cm4.plugins.module_utils.chips import usb2517


def utf16(text):
    return text.encode('utf-16-le')


def stock_image_by_hand(manufacturer):
    """The stock image laid out from the hardware notes, byte by byte, independently of the codec."""
    image = bytearray(256)
    image[0x00:0x06] = bytes([0x24, 0x04, 0x17, 0x25, 0x00, 0x00])   # VID 0x0424, PID 0x2517, DID 0
    image[0x06:0x09] = bytes([0x95, 0x20, 0x01])                     # CFG1..3
    image[0x0C:0x11] = bytes([0x01, 0x32, 0x01, 0x32, 0x32])         # MAXPS MAXPB HCMCS HCMCB PWRT
    image[0x13] = len(manufacturer)
    image[0x14] = len('RaspberryPiCluster')
    image[0x15] = len('00000000')
    image[0x16:0x16 + 2 * len(manufacturer)] = utf16(manufacturer)
    image[0x54:0x54 + 36] = utf16('RaspberryPiCluster')
    image[0x92:0x92 + 16] = utf16('00000000')
    image[0xFA] = 0xFE                                               # D+/D- swapped on ports 1..7
    return bytes(image)


@pytest.mark.parametrize('manufacturer', ['minicluster', 'Will Whang', 'will127534', 'x' * 31])
def test_stock_fields_give_the_published_layout(manufacturer):
    image = usb2517.encode(usb2517.stock_fields(manufacturer=manufacturer))
    assert image == stock_image_by_hand(manufacturer)


def test_stock_default_manufacturer():
    assert usb2517.decode(usb2517.encode(usb2517.stock_fields()))['manufacturer'] == usb2517.DEFAULT_MANUFACTURER


def test_offsets_match_the_memory_map():
    assert (usb2517.MFR_STR, usb2517.PRD_STR, usb2517.SER_STR) == (0x16, 0x54, 0x92)
    assert usb2517.PRD_STR - usb2517.MFR_STR == usb2517.STRING_SIZE == 62
    assert (usb2517.BOOSTUP, usb2517.PRTSP, usb2517.PRTR7, usb2517.STCD) == (0xF6, 0xFA, 0xFE, 0xFF)


@pytest.mark.parametrize('override, field, words', [
    (dict(vid=0x10000), 'vid', 'outside'),
    (dict(pid=-1), 'pid', 'outside'),
    (dict(did=True), 'did', 'integer'),
    (dict(serial=''), 'serial', 'empty'),
    (dict(product='p' * 32), 'product', 'at most 31'),
    (dict(manufacturer='\U0001F600' * 16), 'manufacturer', 'at most 31'),   # 32 UTF-16 units
    (dict(port_swap=[8]), 'port_swap', 'port 8'),
    (dict(non_removable_ports=[0]), 'non_removable_ports', 'port 0'),
    (dict(disabled_ports_self=['2']), 'disabled_ports_self', 'port'),
    (dict(max_power_bus_ma=101), 'max_power_bus_ma', 'multiple of 2'),
    (dict(power_on_time_ms=512), 'power_on_time_ms', 'outside'),
    (dict(boost={8: 1}), 'boost', 'port 8'),
    (dict(boost={1: 4}), 'boost[1]', 'outside'),
    (dict(port_remap={3: 8}), 'port_remap[3]', 'outside'),
    (dict(cfg1=256), 'cfg1', 'outside'),
])
def test_bad_values_name_the_field(override, field, words):
    with pytest.raises(usb2517.FieldError) as err:
        usb2517.encode(usb2517.stock_fields(**override))
    assert str(err.value).startswith(field + ':')
    assert words in str(err.value)


def test_unknown_and_missing_fields():
    with pytest.raises(usb2517.FieldError, match='^colour: not a USB2517'):
        usb2517.stock_fields(colour='red')
    fields = usb2517.stock_fields()
    del fields['serial']
    with pytest.raises(usb2517.FieldError, match='^serial: missing'):
        usb2517.encode(fields)


def test_thirty_one_characters_fit():
    image = usb2517.encode(usb2517.stock_fields(serial='s' * 31))
    assert image[usb2517.SER_STR_LEN] == 31
    assert image[0xD0:0xF6] == bytes(0x26)   # nothing spills past the serial's 62 bytes


def test_bit_fields():
    image = usb2517.encode(usb2517.stock_fields(non_removable_ports=[1, 7], disabled_ports_self=[3, 3],
                                                disabled_ports_bus=[2], port_swap=[0, 1], boost_upstream=2,
                                                boost={1: 1, 4: 3, 5: 2, 7: 1},
                                                port_remap={1: 2, 2: 1, 7: 5}, langid=0x0409))
    assert image[usb2517.NRD] == 0x82
    assert image[usb2517.PDS] == 0x08
    assert image[usb2517.PDB] == 0x04
    assert image[usb2517.PRTSP] == 0x03
    assert image[usb2517.BOOSTUP] == 2
    assert image[usb2517.BOOST_4_1] == 0b11000001
    assert image[usb2517.BOOST_7_5] == 0b00010010
    assert image[usb2517.PRTR12] == 0x12
    assert image[usb2517.PRTR7] == 0x05
    assert (image[usb2517.LANG_ID_H], image[usb2517.LANG_ID_L]) == (0x04, 0x09)


def test_self_powered_flag():
    fields = usb2517.stock_fields()
    assert usb2517.with_self_powered(fields, False)['cfg1'] == 0x15
    assert usb2517.with_self_powered(dict(fields, cfg1=0x15), True)['cfg1'] == 0x95
    assert usb2517.with_self_powered(fields, None)['cfg1'] == 0x95


def test_decode_never_fails_on_256_bytes():
    fields = usb2517.decode(b'\xff' * 256)
    assert fields['vid'] == 0xFFFF
    assert len(fields['serial']) == 31
    with pytest.raises(usb2517.FieldError, match='^image:'):
        usb2517.decode(b'\x00' * 255)


def test_diff_names_only_changed_fields():
    a = usb2517.normalize(usb2517.stock_fields())
    b = usb2517.normalize(usb2517.stock_fields(serial='00000001', port_swap=[1, 2]))
    before, after = usb2517.diff_fields(a, b)
    assert list(before) == ['serial', 'port_swap']
    assert after == {'serial': '00000001', 'port_swap': [1, 2]}


ports = st.lists(st.integers(1, 7), max_size=7)
port_maps = st.dictionaries(st.integers(1, 7), st.integers(0, 3))
text = st.text(st.characters(blacklist_categories=('Cs',)), max_size=31).filter(
    lambda s: len(s.encode('utf-16-le')) <= 62)
even = st.integers(0, 255).map(lambda n: 2 * n)

fields_strategy = st.fixed_dictionaries({
    'vid': st.integers(0, 0xFFFF), 'pid': st.integers(0, 0xFFFF), 'did': st.integers(0, 0xFFFF),
    'cfg1': st.integers(0, 255), 'cfg2': st.integers(0, 255), 'cfg3': st.integers(0, 255),
    'non_removable_ports': ports, 'disabled_ports_self': ports, 'disabled_ports_bus': ports,
    'max_power_self_ma': even, 'max_power_bus_ma': even, 'hub_current_self_ma': even,
    'hub_current_bus_ma': even, 'power_on_time_ms': even, 'langid': st.integers(0, 0xFFFF),
    'manufacturer': text, 'product': text, 'serial': text.filter(bool),
    'boost_upstream': st.integers(0, 3), 'boost': port_maps,
    'port_swap': st.lists(st.integers(0, 7), max_size=8),
    'port_remap': st.dictionaries(st.integers(1, 7), st.integers(0, 7)), 'stcd': st.integers(0, 255),
})


@settings(max_examples=300, deadline=None)
@given(fields_strategy)
def test_round_trip(fields):
    image = usb2517.encode(fields)
    assert len(image) == 256
    decoded = usb2517.decode(image)
    assert decoded == usb2517.normalize(fields)
    assert usb2517.encode(decoded) == image
    assert usb2517.diff_fields(decoded, usb2517.normalize(fields)) == ({}, {})
