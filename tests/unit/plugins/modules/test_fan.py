# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.minicluster.cm4.plugins.modules import fan
from ansible_collections.minicluster.cm4.plugins.module_utils.chips import emc2301
from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.chips.fake_i2c import FakeBus, FakeEMC2301


@pytest.fixture
def chip(monkeypatch):
    dev = FakeEMC2301(tach_count=5243)
    bus = FakeBus({0x2F: dev})
    opened = []

    def open_bus(spec, *args, **kwargs):
        opened.append(spec)
        return bus
    monkeypatch.setattr(fan.i2c, 'open_bus', open_bus)
    dev.bus = bus
    dev.opened = opened
    return dev


def run(capsys, **args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            fan.main()
    return json.loads(capsys.readouterr().out)


def test_rpm_mode_then_idempotent(chip, capsys):
    out = run(capsys, mode='rpm', target_rpm=3000, spin_up_level_percent=50, spin_up_time_ms=500,
              min_drive_percent=20, update_time_ms=400, _ansible_diff=True)
    assert out['changed'] is True
    assert chip.regs[0x32] == 0xCB                       # RPM control, range 2000 RPM (m = 4), 5 edges, 400 ms
    assert (chip.regs[0x3C], chip.regs[0x3D]) == emc2301.target_registers(5243)
    assert chip.regs[0x36] == (4 << 2) | 1
    assert chip.regs[0x38] == 51
    assert out['mode'] == 'rpm'
    assert out['rpm'] == 3000
    assert out['settings']['target_rpm'] == 3000
    assert out['diff']['before']['mode'] == 'pwm' and out['diff']['after']['mode'] == 'rpm'
    written = [reg for reg, _v in chip.written]
    assert written.index(0x3C) < written.index(0x3D) < written.index(0x32)
    chip.written[:] = []
    again = run(capsys, mode='rpm', target_rpm=3000, spin_up_level_percent=50, spin_up_time_ms=500,
                min_drive_percent=20, update_time_ms=400)
    assert again['changed'] is False
    assert chip.written == []


def test_pwm_mode_from_rpm_mode(chip, capsys):
    run(capsys, mode='rpm', target_rpm=2500)
    out = run(capsys, mode='pwm', duty_percent=40)
    assert out['changed'] is True
    assert chip.regs[0x32] & 0x80 == 0
    assert chip.regs[0x30] == 0x66
    written = [reg for reg, _v in chip.written]
    assert written.index(0x32) < len(written) - 1 - written[::-1].index(0x30)
    assert run(capsys, mode='pwm', duty_percent=40)['changed'] is False


def test_check_mode_writes_nothing(chip, capsys):
    out = run(capsys, mode='pwm', duty_percent=100, pwm_frequency=2441, _ansible_check_mode=True)
    assert out['changed'] is True
    assert out['settings']['duty_percent'] == 100.0
    assert out['settings']['pwm_frequency'] == 2441
    assert chip.written == []


@pytest.mark.parametrize('args, msg', [
    (dict(mode='rpm', target_rpm=20000), 'unreachable'),
    (dict(mode='rpm', target_rpm=100), 'unreachable'),
    (dict(mode='pwm', duty_percent=120), 'duty_percent must be from 0 to 100 %, not 120'),
    (dict(mode='pwm', duty_percent=float('nan')), 'duty_percent must be a finite number'),
    (dict(mode='pwm'), 'duty_percent'),
    (dict(duty_percent=10), 'mode=pwm'),
    (dict(registers={'0xef': 1}), 'software lock'),
    (dict(registers={'0x3e': 1}), 'not a writable'),
    (dict(registers={'0x33': 300}), 'not a byte'),
    (dict(registers={'fan': 1}), 'not a register'),
    (dict(min_drive_percent=-1), 'min_drive_percent'),
])
def test_bad_input_writes_nothing(chip, capsys, args, msg):
    out = run(capsys, **args)
    assert out['failed'] is True
    assert msg in out['msg']
    assert chip.written == []
    assert chip.opened == []


def test_raw_register_conflicting_with_an_option(chip, capsys):
    out = run(capsys, mode='pwm', duty_percent=10, registers={'0x30': 5})
    assert out['failed'] is True
    assert '0x30' in out['msg']
    assert chip.written == []


def test_raw_registers(chip, capsys):
    out = run(capsys, registers={'0x35': '0x3A', 51: 0x68})
    assert out['changed'] is True
    assert chip.regs[0x35] == 0x3A and chip.regs[0x33] == 0x68
    assert out['registers'] == {'0x33': 0x68, '0x35': 0x3A}
    assert run(capsys, registers={'0x35': '0x3A', 51: 0x68})['changed'] is False


def test_identity_is_checked_first(chip, capsys):
    chip.regs[0xFD] = 0x36
    out = run(capsys, mode='pwm', duty_percent=30)
    assert out['failed'] is True
    assert 'is not an EMC2301' in out['msg'] and 'product ID 0x36' in out['msg']
    assert chip.written == []


def test_absent_chip(capsys, monkeypatch):
    bus = FakeBus({})
    monkeypatch.setattr(fan.i2c, 'open_bus', lambda spec, *a, **k: bus)
    out = run(capsys, mode='pwm', duty_percent=30)
    assert out['failed'] is True
    assert 'no EMC2301 fan controller answers at I2C bus fake address 0x2f' in out['msg']


def test_software_lock_set(chip, capsys):
    chip.regs[0xEF] = 1
    out = run(capsys, mode='pwm', duty_percent=30)
    assert out['failed'] is True
    assert 'software lock' in out['msg']
    assert chip.written == []
