# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""usb2517_eeprom, fan and the chip drivers under them, against the simulated hat's I2C buses."""

from __future__ import annotations

import time

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.chips import eeprom24, emc2301, usb2517
from ansible_collections.minicluster.cm4.plugins.module_utils.transports import i2c
from hatsim.client import Control
from moduletest import run_module, sim_state, start_sim, stop_sim


def hub_bus(hat):
    return 'unix:%s' % (hat / 'i2c-hub.sock')


def host_bus(hat):
    return 'unix:%s' % (hat / 'i2c-1.sock')


def page_writes(hat):
    return sim_state(hat)['eeprom']['page_writes']


def test_driver_writes_only_differing_pages(hat):
    bus = i2c.open_bus(hub_bus(hat))
    try:
        chip = eeprom24.Eeprom24(bus)
        image = usb2517.encode(usb2517.stock_fields())
        assert chip.update(0, image) == list(range(0, 256, 16))   # blank chip: every page
        assert chip.read(0, 256) == image
        assert chip.update(0, image) == []
        changed = bytearray(image)
        changed[0xF0:0xF4] = b'\x01\x02\x03\x04'
        changed[0x100 - 1] = 0x55                                   # STCD, last byte of the block
        assert chip.update(0, bytes(changed)) == [0xF0]
        # Block 1 (I2C address 0x51), across a page boundary.
        assert chip.update(0x1FA, b'0123456789') == [0x1F0, 0x200]
        assert chip.read(0x1FA, 10) == b'0123456789'
    finally:
        bus.close()
    state = sim_state(hat)
    assert bytes.fromhex(state['eeprom']['hex'])[:256] == bytes(changed)
    assert state['eeprom']['page_writes'] == 16 + 1 + 2
    assert all(w['bytes'] <= 16 for w in state['eeprom']['writes'])


def test_module_stock_rerun_one_character_check_mode(hat, tmp_path):
    args = dict(i2c_bus=hub_bus(hat), manufacturer='Will Whang')
    first = run_module('usb2517_eeprom', args, tmp_path)
    assert first['changed'] is True, first
    assert first['pages_written'] == 16
    image = bytes.fromhex(sim_state(hat)['eeprom']['hex'])[:256]
    assert image == usb2517.encode(usb2517.stock_fields(manufacturer='Will Whang'))

    again = run_module('usb2517_eeprom', args, tmp_path)
    assert again['changed'] is False and again['pages_written'] == 0
    assert page_writes(hat) == 16

    one = run_module('usb2517_eeprom', dict(args, serial='00000001'), tmp_path, diff=True)
    assert one['changed'] is True and one['pages_written'] == 1 and one['pages'] == [0xA0]  # 8th character: 0x92 + 14
    assert one['diff'] == {'before': {'serial': '00000000'}, 'after': {'serial': '00000001'}}
    assert page_writes(hat) == 17

    check = run_module('usb2517_eeprom', dict(args, serial='00000002', product='Other'), tmp_path, check_mode=True)
    assert check['changed'] is True and check['fields']['serial'] == '00000002'
    assert page_writes(hat) == 17


@pytest.mark.parametrize('bad', [dict(product='p' * 32), dict(serial=''), dict(vid=0x10000), dict(port_swap=[8]),
                                 dict(non_removable_ports=[8])])
def test_module_bad_input_writes_nothing(hat, tmp_path, bad):
    before = sim_state(hat)['i2c']['i2c-hub']['transactions']
    out = run_module('usb2517_eeprom', dict(bad, i2c_bus=hub_bus(hat)), tmp_path)
    assert out.get('failed') is True
    assert sim_state(hat)['i2c']['i2c-hub']['transactions'] == before
    assert page_writes(hat) == 0


def test_module_src_not_256_bytes(hat, tmp_path):
    src = tmp_path / 'short.bin'
    src.write_bytes(bytes(200))
    out = run_module('usb2517_eeprom', dict(i2c_bus=hub_bus(hat), src=str(src)), tmp_path)
    assert out.get('failed') is True and '200 bytes' in out['msg']
    assert page_writes(hat) == 0


def test_hub_loads_the_configuration_when_the_jumpers_come_off(hat, tmp_path):
    out = run_module('usb2517_eeprom', dict(i2c_bus=hub_bus(hat), disabled_ports_self=[7]), tmp_path)
    assert out['changed'] is True
    with Control(str(hat)) as control:
        control.request('set', jumpers=False)
    hub = sim_state(hat)['usb_hub']
    assert hub['downstream_swapped'] and not hub['upstream_swapped']
    assert hub['port_works'] == dict((str(p), p != 7) for p in range(1, 8))
    # Jumpers off: the EEPROM is gone from the Pi's bus, and the module says what to do.
    gone = run_module('usb2517_eeprom', dict(i2c_bus=host_bus(hat)), tmp_path)
    assert gone.get('failed') is True
    assert gone['msg'].startswith('the USB hub EEPROM at I2C bus %s address 0x50 is unreachable' % host_bus(hat))
    assert 'fit the three jumpers on the back of the hat' in gone['msg']


def test_no_jumpers_from_the_start(tmp_path):
    directory = tmp_path / 'hat'
    start_sim(directory, '--no-jumpers')
    try:
        out = run_module('usb2517_eeprom', dict(i2c_bus=host_bus(directory)), tmp_path)
        assert out.get('failed') is True
        assert 'unreachable' in out['msg'] and 'three jumpers' in out['msg']
        assert sim_state(directory)['eeprom']['page_writes'] == 0
    finally:
        stop_sim(directory)


def wait_rpm(hat, tmp_path, low, high, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        out = run_module('fan', dict(i2c_bus=host_bus(hat)), tmp_path, check_mode=True)
        if low <= out['rpm'] <= high or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def test_fan_rpm_mode_reaches_the_target_and_is_idempotent(hat, tmp_path):
    args = dict(i2c_bus=host_bus(hat), mode='rpm', target_rpm=3000, spin_up_level_percent=50, spin_up_time_ms=500,
                min_drive_percent=20, update_time_ms=200)
    first = run_module('fan', args, tmp_path)
    assert first['changed'] is True, first
    regs = bytes.fromhex(sim_state(hat)['emc2301']['registers'])
    assert regs[emc2301.FAN_CONFIGURATION_1] == 0xC0 | (1 << 3) | 1   # RPM control, range 2000, 5 edges, 200 ms
    assert emc2301.count_from_registers(regs[emc2301.TACH_TARGET_HIGH], regs[emc2301.TACH_TARGET_LOW]) == 5243
    out = wait_rpm(hat, tmp_path, 2850, 3150)
    assert 2850 <= out['rpm'] <= 3150, out
    again = run_module('fan', args, tmp_path)
    assert again['changed'] is False, again
    state = sim_state(hat)['emc2301']
    assert state['lock_writes'] == 0 and not state['locked']


def test_fan_pwm_mode_and_check_mode(hat, tmp_path):
    args = dict(i2c_bus=host_bus(hat), mode='pwm', duty_percent=60, pwm_frequency=26000)
    check = run_module('fan', args, tmp_path, check_mode=True, diff=True)
    assert check['changed'] is True
    assert bytes.fromhex(sim_state(hat)['emc2301']['registers'])[emc2301.FAN_SETTING] == 0
    out = run_module('fan', args, tmp_path)
    assert out['changed'] is True and out['mode'] == 'pwm'
    assert bytes.fromhex(sim_state(hat)['emc2301']['registers'])[emc2301.FAN_SETTING] == 153
    spinning = wait_rpm(hat, tmp_path, 1000, 6000)
    assert spinning['rpm'] > 1000
    assert run_module('fan', args, tmp_path)['changed'] is False


@pytest.mark.parametrize('bad', [dict(mode='rpm', target_rpm=40000), dict(registers={'0xef': 1}),
                                 dict(mode='pwm', duty_percent=101)])
def test_fan_bad_input_writes_nothing(hat, tmp_path, bad):
    before = sim_state(hat)['i2c']['i2c-1']['transactions']
    out = run_module('fan', dict(bad, i2c_bus=host_bus(hat)), tmp_path)
    assert out.get('failed') is True
    assert sim_state(hat)['i2c']['i2c-1']['transactions'] == before
