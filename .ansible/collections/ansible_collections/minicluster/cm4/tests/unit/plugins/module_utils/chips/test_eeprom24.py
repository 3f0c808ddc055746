# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.chips import eeprom24
from ansible_collections.minicluster.cm4.plugins.module_utils.transports import i2c
from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.chips.fake_i2c import (
    FakeBus, Fake24LC08, nack_is_enxio)


def make(data=None, **kwargs):
    chip = Fake24LC08(data, **kwargs)
    bus = FakeBus(dict((0x50 + b, chip) for b in range(4)))
    clock = [0.0]

    def sleep(seconds):
        clock[0] += seconds
    eeprom = eeprom24.Eeprom24(bus, clock=lambda: clock[0], sleep=sleep)
    return chip, bus, eeprom


def test_doubles_nack_like_the_transport():
    assert nack_is_enxio()


@pytest.mark.parametrize('offset, length, expected', [
    (0, 16, [(0, 16)]),
    (0, 32, [(0, 16), (16, 16)]),
    (5, 16, [(5, 11), (16, 5)]),
    (14, 2, [(14, 2)]),
    (15, 2, [(15, 1), (16, 1)]),
    (250, 12, [(250, 6), (256, 6)]),   # across a block boundary too
    (3, 0, []),
])
def test_split_pages(offset, length, expected):
    chunks = eeprom24.split_pages(offset, bytes(range(length)))
    assert [(start, len(chunk)) for start, chunk in chunks] == expected
    assert b''.join(chunk for _start, chunk in chunks) == bytes(range(length))
    assert all(start // 16 == (start + len(chunk) - 1) // 16 for start, chunk in chunks)


def test_differing_pages():
    current = bytes(64)
    desired = bytearray(current)
    desired[17] = 1
    desired[63] = 2
    assert [s for s, _c in eeprom24.differing_pages(0, current, bytes(desired))] == [16, 48]
    assert eeprom24.differing_pages(0, current, current) == []


def test_the_fake_wraps_a_page_crossing_write():
    # What the driver avoids: 20 bytes at offset 8 wrap to the start of the same page.
    chip, bus, _eeprom = make(bytes(1024))
    bus.transfer([i2c.write(0x50, bytes([8]) + bytes(range(1, 21)))])
    # offsets 8..15 take 1..8, then the address wraps: 0..11 take 9..20 (8..11 overwritten)
    assert chip.data[0:16] == bytes(range(9, 21)) + bytes([5, 6, 7, 8])
    assert chip.data[16:32] == bytes(16)


def test_read_spans_blocks():
    data = bytes(i & 0xFF for i in range(1024))
    chip, bus, eeprom = make(data)
    assert eeprom.read(250, 12) == data[250:262]
    assert [t[0].addr for t in bus.log] == [0x50, 0x51]
    assert eeprom.read() == data


def test_update_writes_only_differing_pages_split_on_boundaries():
    chip, bus, eeprom = make(bytes(1024))
    desired = bytearray(256)
    desired[0x95] = 0x31            # one character of the serial string
    written = eeprom.update(0, bytes(desired))
    assert written == [0x90]
    assert chip.page_writes == [0x90]
    assert chip.data[:256] == desired
    assert all(len(m.data) <= 17 for m in bus.writes())
    assert eeprom.update(0, bytes(desired)) == []
    assert chip.page_writes == [0x90]


def test_update_unaligned_range_and_other_block():
    chip, bus, eeprom = make(bytes(1024))
    data = bytes(range(1, 41))
    written = eeprom.update(0x1F8, data)   # 0x1F8..0x21F: block 1 then block 2
    assert written == [0x1F0, 0x200, 0x210]
    assert chip.data[0x1F8:0x220] == data
    addrs = [m.addr for m in bus.writes()]
    assert addrs == [0x51, 0x52, 0x52]
    assert bus.writes()[0].data[0] == 0xF8


def test_ack_polling_waits_out_the_write_cycle():
    chip, bus, eeprom = make(bytes(1024), busy_polls=5)
    eeprom.update(0, bytes([1] * 48))
    assert chip.nacks >= 15
    assert chip.data[:48] == bytes([1] * 48)


def test_ack_polling_times_out_naming_the_page():
    chip, bus, eeprom = make(bytes(1024), busy_polls=10 ** 6)
    with pytest.raises(eeprom24.EepromError) as err:
        eeprom.update(0, bytes(16) + bytes([7]) + bytes(15))
    assert err.value.page == 0x10
    assert 'offset 0x010' in str(err.value)


def test_a_failed_page_is_retried_once():
    chip, bus, eeprom = make(bytes(1024), flaky_pages=[0x20])
    desired = bytearray(64)
    desired[0x21] = 9
    assert eeprom.update(0, bytes(desired)) == [0x20]
    assert chip.page_writes == [0x20, 0x20]
    assert chip.data[0x21] == 9


def test_a_page_that_fails_twice_is_named():
    chip, bus, eeprom = make(bytes(1024), stuck_pages=[0x30])
    desired = bytearray(64)
    desired[0x05] = 1
    desired[0x35] = 1
    with pytest.raises(eeprom24.EepromError) as err:
        eeprom.update(0, bytes(desired))
    assert err.value.page == 0x30
    assert 'page at offset 0x030 (I2C address 0x50, byte 0x30)' in str(err.value)
    assert chip.page_writes == [0x00, 0x30, 0x30]


def test_absent_chip():
    bus = FakeBus({})
    eeprom = eeprom24.Eeprom24(bus)
    with pytest.raises(eeprom24.EepromNotResponding) as err:
        eeprom.read(0, 256)
    assert err.value.addr == 0x50


def test_range_checks():
    _chip, _bus, eeprom = make()
    with pytest.raises(ValueError):
        eeprom.read(1000, 30)
    with pytest.raises(ValueError):
        eeprom.write_page(8, bytes(9))
