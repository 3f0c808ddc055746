# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.minicluster.cm4.plugins.modules import node_power
from ansible_collections.minicluster.cm4.plugins.module_utils.transports import rp2040
from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.transports.fake_serial import FirmwareSerial


@pytest.fixture
def fw(monkeypatch):
    fw = FirmwareSerial()
    opened = []

    def open_port(*args, **kwargs):
        opened.append(args[0])
        return fw
    monkeypatch.setattr(rp2040.serial, 'serial_for_url', open_port)
    fw.opened = opened
    return fw


def run(tmp_path, capsys, **args):
    args.setdefault('lock_dir', str(tmp_path / 'lock'))
    args.setdefault('state_dir', str(tmp_path / 'state'))
    args.setdefault('stagger', 0)
    args.setdefault('restart_delay', 0)
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            node_power.main()
    return json.loads(capsys.readouterr().out)


def test_on_then_idempotent(fw, tmp_path, capsys):
    first = run(tmp_path, capsys, nodes=[1, 2], state='on')
    assert first['changed'] is True
    assert [n['power'] for n in first['nodes']] == ['on', 'on']
    assert first['diff']['before']['node1']['power'] == 'off'
    second = run(tmp_path, capsys, nodes=[1, 2], state='on')
    assert second['changed'] is False


def test_check_mode_writes_no_pin(fw, tmp_path, capsys):
    out = run(tmp_path, capsys, node=3, state='on', boot_mode='usb', _ansible_check_mode=True)
    assert out['changed'] is True
    assert out['nodes'][0]['power'] == 'on' and out['nodes'][0]['boot_mode'] == 'usb'
    assert fw.en == [False] * 4 and fw.nrpiboot == [True] * 4


@pytest.mark.parametrize('args, message', [
    (dict(node=5), 'node must be a node number 1 to 4, not 5'),
    (dict(node=0), 'node must be a node number 1 to 4, not 0'),
    (dict(nodes=[1, 7]), 'nodes must be a node number 1 to 4, not 7'),
    (dict(nodes=[]), 'nodes must name at least one node'),
    (dict(node=True), 'node must be a node number 1 to 4, not True'),
    (dict(node=1, stagger=-1), 'stagger must be from 0 to 60 seconds, not -1'),
    (dict(node=1, restart_delay='inf'), 'restart_delay must be a finite number from 0 to 60 seconds, not inf'),
    (dict(node=1, restart_delay=1e9), 'restart_delay must be from 0 to 60 seconds, not 1000000000'),
    (dict(node=1, lock_timeout='nan'), 'lock_timeout must be a finite number'),
    (dict(node=1, port='/dev/tty\nACM0'), 'port must not contain control characters'),
])
def test_bad_input_fails_before_opening_the_port(fw, tmp_path, capsys, args, message):
    out = run(tmp_path, capsys, **args)
    assert out['failed'] is True
    assert message in out['msg'] and '\n' not in out['msg']
    assert fw.opened == [] and fw.log == []


def test_unknown_state_fails(fw, tmp_path, capsys):
    out = run(tmp_path, capsys, node=1, state='of')
    assert out['failed'] and 'state' in out['msg']
    assert fw.opened == []


def test_unreachable_port_names_it(tmp_path, capsys):
    out = run(tmp_path, capsys, node=1, port=str(tmp_path / 'nothere'))
    assert out['failed'] and str(tmp_path / 'nothere') in out['msg']


def test_reset_off_node_fails_clearly(fw, tmp_path, capsys):
    out = run(tmp_path, capsys, node=2, state='reset')
    assert out['failed'] and 'node 2 is off' in out['msg']
    assert fw.resets == [0] * 4
