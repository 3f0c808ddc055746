# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.board import hat as hatmod
from ansible_collections.minicluster.cm4.plugins.module_utils.transports import rp2040
from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.transports.fake_serial import FirmwareSerial


@pytest.fixture
def board(tmp_path, monkeypatch):
    fw = FirmwareSerial()
    monkeypatch.setattr(rp2040.serial, 'serial_for_url', lambda *a, **kw: fw)
    sleeps = []
    h = hatmod.Hat('/dev/ttyACM0', lock_dir=str(tmp_path / 'lock'), state_dir=str(tmp_path / 'state'),
                   sleep=sleeps.append)
    h.fw = fw
    h.sleeps = sleeps
    return h


def pin_commands(fw):
    return [x for x in fw.log if x[0] not in ('a', 'c')]


def test_plan_table():
    off = {'power': 'off', 'boot_mode': 'normal'}
    on = {'power': 'on', 'boot_mode': 'normal'}
    plan = hatmod.Hat.plan
    assert plan(off, 'on', None) == ['on']
    assert plan(on, 'on', None) == []
    assert plan(on, 'on', 'normal') == []
    assert plan(on, 'on', 'usb') == ['usb', 'off', 'wait', 'on']
    assert plan(off, 'on', 'usb') == ['usb', 'on']
    assert plan(on, 'off', None) == ['off']
    assert plan(off, 'off', None) == []
    assert plan(on, 'restarted', None) == ['off', 'wait', 'on']
    assert plan(off, 'restarted', None) == ['on']
    assert plan(on, 'reset', None) == ['reset']
    # Unknown pin (None) is set when a mode is asked for.
    assert plan({'power': 'off', 'boot_mode': None}, 'off', 'normal') == ['normal']


def test_on_is_idempotent(board):
    first = board.ensure([1, 3], 'on')
    assert all(r['changed'] for r in first.values())
    assert board.fw.en == [True, False, True, False]
    n = len(board.fw.log)
    second = board.ensure([1, 3], 'on')
    assert not any(r['changed'] for r in second.values())
    # Only the current read went to the hat.
    assert [x[0] for x in board.fw.log[n:]] == ['a']


def test_usb_boot_applied_before_power(board):
    board.ensure([2], 'on', boot_mode='usb')
    assert pin_commands(board.fw) == [('U', 1), ('e', 1)]
    again = board.ensure([2], 'on', boot_mode='usb')
    assert not again[2]['changed']


def test_boot_mode_change_on_running_node_cycles_it(board):
    board.ensure([4], 'on', boot_mode='normal')
    board.fw.log[:] = []
    r = board.ensure([4], 'on', boot_mode='usb')
    assert r[4]['actions'] == ['usb', 'off', 'wait', 'on']
    assert pin_commands(board.fw) == [('U', 3), ('d', 3), ('e', 3)]
    assert 2.0 in board.sleeps


def test_check_mode_sends_no_pin_command(board):
    r = board.ensure([1, 2, 3, 4], 'on', boot_mode='usb', check_mode=True)
    assert all(x['changed'] and x['after']['power'] == 'on' for x in r.values())
    assert pin_commands(board.fw) == []
    assert board.fw.en == [False] * 4


def test_reset_of_an_off_node_fails_before_any_pin(board):
    with pytest.raises(hatmod.HatError, match='node 3 is off'):
        board.ensure([3], 'reset')
    assert pin_commands(board.fw) == []


def test_reset_pulses_run(board):
    board.ensure([3], 'on')
    board.ensure([3], 'reset')
    assert board.fw.resets == [0, 0, 1, 0]


def test_restarted_always_changes(board):
    board.ensure([1], 'on')
    r = board.ensure([1], 'restarted')
    assert r[1]['changed'] and r[1]['actions'] == ['off', 'wait', 'on']
    assert board.fw.en[0]


@pytest.mark.parametrize('nodes', [[0], [5], [1, 5], []])
def test_bad_nodes_send_nothing(board, nodes):
    with pytest.raises(hatmod.HatError, match='/dev/ttyACM0'):
        board.ensure(nodes, 'on')
    assert board.fw.log == []


def test_memory_persists_boot_mode(board, tmp_path):
    board.ensure([2], 'off', boot_mode='usb')
    files = list((tmp_path / 'state').iterdir())
    data = json.loads(files[0].read_text())
    assert data['nodes']['2']['boot_mode'] == 'usb'
    assert board.status()[2]['boot_mode'] == 'usb'


def test_node_found_off_forgets_boot_mode(board):
    board.ensure([2], 'on', boot_mode='usb')
    board.fw.en[1] = False  # an RP2040 reset, or someone else
    status = board.status()[2]
    assert (status['power'], status['boot_mode'], status['current_ma']) == ('off', None, 1.5)


def test_stagger_spaces_power_ons(board):
    board.ensure([1, 2, 3], 'on', stagger=0.5)
    waits = [s for s in board.sleeps if s not in (0.2,)]
    assert len(waits) == 2 and all(0 < s <= 0.5 for s in waits)


def test_ma_per_unit_scales(board):
    board.ma_per_unit = 2.0
    board.ensure([1], 'on')
    assert board.status()[1]['current_ma'] == 1000.0


def test_off_baseline_learned_when_switching_off(board):
    """A node with an NVMe drive draws 120 units while off: above the absolute threshold, yet off."""
    board.fw.currents_off[0] = 120.0
    # Never switched by this controller, no calibration: 120 above zero reads as on.
    assert board.status()[1]['power'] == 'on'
    board.ensure([1], 'off')
    assert board.fw.en[0] is False
    status = board.status()[1]
    assert (status['power'], status['baseline_ma']) == ('off', 120.0)
    # Switched on it draws 500: on, and switching on again sends nothing.
    board.ensure([1], 'on')
    assert board.status()[1]['power'] == 'on'
    n = len(board.fw.log)
    assert not board.ensure([1], 'on')[1]['changed']
    assert [x[0] for x in board.fw.log[n:]] == ['a']


def test_calibrated_baseline_and_gain_are_used(board, tmp_path):
    from ansible_collections.minicluster.cm4.plugins.module_utils.board import calibration
    calibration.save(str(tmp_path / 'state'), 'hat0', {1: {'ma_per_unit': 2.0, 'baseline_units': 100.0}})
    board.fw.currents_off[0] = 110.0
    status = board.status()
    assert (status[1]['power'], status[1]['current_ma'], status[1]['baseline_ma']) == ('off', 220.0, 200.0)
    # Other nodes keep the default of 1 mA per unit.
    assert status[2]['current_ma'] == 1.5
    board.ensure([1], 'on')
    assert board.status()[1]['current_ma'] == 1000.0


def test_two_paths_of_one_hat_share_one_lock_and_memory(tmp_path, monkeypatch):
    fw = FirmwareSerial()
    opened = []

    def open_port(port, **kwargs):
        opened.append(port)
        if port == '/dev/ttyACM0':
            raise rp2040.serial.SerialException(2, 'could not open port /dev/ttyACM0: No such file or directory')
        return fw
    monkeypatch.setattr(rp2040.serial, 'serial_for_url', open_port)
    usb = hatmod.Hat('/dev/ttyACM0', uart_port='/dev/cm4hat-uart', lock_dir=str(tmp_path / 'lock'),
                     state_dir=str(tmp_path / 'state'), sleep=lambda s: None)
    usb.ensure([3], 'off', boot_mode='usb')
    assert opened[:2] == ['/dev/ttyACM0', '/dev/cm4hat-uart']
    assert (usb.used_port, usb.path_name) == ('/dev/cm4hat-uart', 'uart')
    uart = hatmod.Hat('/dev/cm4hat-uart', lock_dir=str(tmp_path / 'lock'), state_dir=str(tmp_path / 'state'))
    assert uart.status()[3]['boot_mode'] == 'usb'
    assert uart.path_name == 'usb' or uart.used_port == '/dev/cm4hat-uart'
    assert [p.name for p in (tmp_path / 'lock').iterdir()] == ['minicluster-cm4.hat0.lock']


def test_console_on_port_that_exists_but_fails_does_not_fall_back(tmp_path, monkeypatch):
    def open_port(port, **kwargs):
        raise rp2040.serial.SerialException(13, 'could not open port: Permission denied')
    monkeypatch.setattr(rp2040.serial, 'serial_for_url', open_port)
    monkeypatch.setattr(rp2040.os.path, 'exists', lambda p: True)
    h = hatmod.Hat('/dev/ttyACM0', uart_port='/dev/cm4hat-uart', lock_dir=str(tmp_path / 'lock'),
                   state_dir=str(tmp_path / 'state'))
    with pytest.raises(rp2040.ConsoleError, match='Permission denied') as info:
        h.status()
    assert 'cm4hat-uart' not in str(info.value)
