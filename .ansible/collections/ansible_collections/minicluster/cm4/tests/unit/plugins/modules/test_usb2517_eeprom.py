# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.minicluster.cm4.plugins.modules import usb2517_eeprom
from ansible_collections.minicluster.cm4.plugins.module_utils.chips import eeprom24, usb2517
from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.chips.fake_i2c import FakeBus, Fake24LC08


@pytest.fixture
def hub(monkeypatch):
    """A 24LC08 fresh from the factory (all 0xFF) on a fake bus, with the jumpers fitted."""
    chip = Fake24LC08()
    bus = FakeBus(dict((0x50 + b, chip) for b in range(4)))
    opened = []

    def open_bus(spec, *args, **kwargs):
        opened.append(spec)
        return bus
    monkeypatch.setattr(usb2517_eeprom.i2c, 'open_bus', open_bus)
    monkeypatch.setattr(eeprom24, 'POLL_INTERVAL', 0)
    chip.bus = bus
    chip.opened = opened
    return chip


def run(capsys, **args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            usb2517_eeprom.main()
    return json.loads(capsys.readouterr().out)


def test_stock_then_idempotent(hub, capsys):
    first = run(capsys)
    assert first['changed'] is True
    assert hub.data[:256] == usb2517.encode(usb2517.stock_fields())
    assert first['pages_written'] == 16 == len(set(hub.page_writes))
    assert first['fields']['port_swap'] == [1, 2, 3, 4, 5, 6, 7]
    second = run(capsys)
    assert second['changed'] is False
    assert second['pages_written'] == 0
    assert len(hub.page_writes) == 16


def test_one_character_costs_one_page(hub, capsys):
    run(capsys)
    out = run(capsys, serial='00000010', _ansible_diff=True)
    assert out['changed'] is True
    assert out['pages'] == [0x90]
    assert out['pages_written'] == 1
    assert out['diff'] == {'before': {'serial': '00000000'}, 'after': {'serial': '00000010'}}
    assert hub.page_writes[-1] == 0x90 and len(hub.page_writes) == 17


def test_check_mode_writes_nothing(hub, capsys):
    out = run(capsys, manufacturer='Example Lab', _ansible_check_mode=True, _ansible_diff=True)
    assert out['changed'] is True
    assert out['pages_written'] == 16
    assert out['fields']['manufacturer'] == 'Example Lab'
    assert out['diff']['after']['vid'] == 0x0424
    assert hub.page_writes == []
    assert hub.bus.writes() == []


@pytest.mark.parametrize('args, msg', [
    (dict(product='p' * 32), 'product: '),
    (dict(serial=''), 'serial: must not be empty'),
    (dict(vid=0x10000), 'vid: 65536 is outside'),
    (dict(port_swap=[1, 8]), 'port_swap: port 8'),
    (dict(disabled_ports_self=[9]), 'disabled_ports_self: port 9'),
    (dict(i2c_bus='i2c1'), 'i2c_bus must be'),
])
def test_bad_input_writes_nothing(hub, capsys, args, msg):
    out = run(capsys, **args)
    assert out['failed'] is True
    assert msg in out['msg']
    assert hub.opened == []
    assert hub.bus.log == []


def test_src_of_wrong_size_writes_nothing(hub, capsys, tmp_path):
    src = tmp_path / 'image.bin'
    src.write_bytes(bytes(255))
    out = run(capsys, src=str(src))
    assert out['failed'] is True
    assert 'is 255 bytes' in out['msg']
    assert hub.opened == []


def test_src_and_fields_are_exclusive(hub, capsys, tmp_path):
    out = run(capsys, src=str(tmp_path / 'x'), serial='1')
    assert out['failed'] is True
    assert 'mutually exclusive' in out['msg']
    assert hub.opened == []


def test_src_raw_image_and_backup(hub, capsys, tmp_path):
    run(capsys)
    image = bytearray(usb2517.encode(usb2517.stock_fields(manufacturer='Will Whang')))
    image[0xE0] = 0x5A          # a byte no field covers is written too
    src = tmp_path / 'image.bin'
    src.write_bytes(bytes(image))
    backup = tmp_path / 'previous.bin'
    out = run(capsys, src=str(src), backup=str(backup), _ansible_diff=True)
    assert out['changed'] is True
    assert hub.data[:256] == image
    assert backup.read_bytes() == usb2517.encode(usb2517.stock_fields())
    assert out['backup_file'] == str(backup)
    assert out['diff']['after'] == {'manufacturer': 'Will Whang'}
    assert out['image'] == bytes(image).hex()
    again = run(capsys, src=str(src))
    assert again['changed'] is False


def test_missing_eeprom_gets_the_jumper_message(capsys, monkeypatch):
    bus = FakeBus({})
    bus.name = '/dev/i2c-1'
    monkeypatch.setattr(usb2517_eeprom.i2c, 'open_bus', lambda spec, *a, **k: bus)
    out = run(capsys, i2c_bus='/dev/i2c-1')
    assert out['failed'] is True
    assert out['msg'].startswith('the USB hub EEPROM at I2C bus /dev/i2c-1 address 0x50 is unreachable')
    assert 'fit the three jumpers on the back of the hat' in out['msg']
    assert bus.writes() == []


def test_a_failing_page_is_named(hub, capsys):
    hub.stuck_pages.add(0x50)
    out = run(capsys)
    assert out['failed'] is True
    assert out['page'] == 0x50
    assert 'page at offset 0x050' in out['msg']


def test_friendly_fields(hub, capsys):
    out = run(capsys, self_powered=False, non_removable_ports=[1, 2, 3, 4], boost={'2': 1}, port_swap=[4, 3, 2, 1, 5, 6, 7])
    assert out['fields']['cfg1'] == 0x15
    assert out['fields']['non_removable_ports'] == [1, 2, 3, 4]
    assert out['fields']['boost'] == {'2': 1}
    assert out['fields']['port_swap'] == [1, 2, 3, 4, 5, 6, 7]
