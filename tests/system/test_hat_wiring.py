# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""hat_info and node_flash with their default options against the simulated hat wired as the schematic has it."""

from __future__ import annotations

import json
import os

import pytest

from hatsim.testing import running_hat
from moduletest import run_module


@pytest.fixture(scope='module')
def shared_hat(tmp_path_factory):
    with running_hat(tmp_path_factory.mktemp('info') / 'hat', boot_delay=0.1, emmc_size='8M') as sim:
        yield sim


@pytest.fixture
def hat(shared_hat):
    shared_hat.control.power_cycle(wipe_eeprom=True, clear_log=True)
    yield shared_hat


def args(hat, **more):
    out = dict(port=hat.rp2040, uart_port=hat.path('rp2040-uart'), lock_dir=hat.path('lock'), state_dir=hat.path('state'),
               i2c_bus=hat.i2c_bus, root=hat.dir)
    out.update(more)
    return out


def warnings(result):
    """Warning texts (ansible-core 2.19 returns them as structured events)."""
    out = []
    for w in result.get('warnings', []):
        out.append(w if isinstance(w, str) else w.get('event', {}).get('msg', json.dumps(w)))
    return out


def power(hat, tmp_path, nodes, **more):
    result = run_module('node_power', dict(port=hat.rp2040, lock_dir=hat.path('lock'), state_dir=hat.path('state'),
                                           nodes=nodes, state='on', stagger=0, **more), tmp_path)
    assert result.get('failed') is not True, result


def test_defaults_read_each_node_from_its_slots_address(hat, tmp_path):
    # Slot 2's card is out: its TMP117 (0x48) is gone. With the schematic's addresses node 1 (0x49)
    # still reads and node 2 is the one reported missing.
    hat.control.set(empty_slots=[2])
    info = run_module('hat_info', args(hat), tmp_path)
    assert info.get('failed') is not True, info
    temps = [n['temperature_c'] for n in info['nodes']]
    assert temps[1] is None and all(isinstance(t, float) for t in (temps[0], temps[2], temps[3])), temps
    assert any('node 2 at 0x48' in w for w in warnings(info))
    sim = hat.state()['tmp117']
    for n in (1, 3, 4):
        assert abs(sim[str(n)]['result'] * 0.0078125 - temps[n - 1]) < 0.5 or sim[str(n)]['result'] == 0x8000


def test_input_below_full_scale_is_a_number(hat, tmp_path):
    info = run_module('hat_info', args(hat), tmp_path)
    inp = info['input']
    assert inp['saturated'] is False and 0.2 < inp['current_a'] < 0.82, inp
    assert abs(inp['current_a'] - inp['shunt_v'] / 0.1) < 1e-3
    assert not [w for w in warnings(info) if 'INA226' in w]


def test_saturated_input_is_null_with_a_warning(hat, tmp_path):
    power(hat, tmp_path, [1, 2])
    info = run_module('hat_info', args(hat), tmp_path)
    inp = info['input']
    assert inp['saturated'] is True and inp['current_a'] is None and inp['power_w'] is None, inp
    assert 11 < inp['voltage_v'] < 13
    warning = [w for w in warnings(info) if 'INA226' in w]
    assert len(warning) == 1 and '81.92 mV' in warning[0] and 'ina226_shunt_ohm=0.1' in warning[0], warning
    # The same board with a 10 mOhm shunt: within range again, a true number.
    hat.control.set(shunt_ohms=0.01)
    info = run_module('hat_info', args(hat, ina226_shunt_ohm=0.01), tmp_path)
    assert info['input']['saturated'] is False and info['input']['current_a'] > 0.82


def test_usb_hub_and_its_ports(hat, tmp_path):
    power(hat, tmp_path, [3], boot_mode='usb')
    usb = run_module('hat_info', args(hat, sensors=False), tmp_path)['usb']
    assert usb['hub'] == '1-1.3' and usb['rp2040'] == 'console' and usb['error'] is None
    ports = dict((p['port'], p) for p in usb['ports'])
    assert ports[1]['role'] == 'rp2040' and ports[1]['device']['id'] == '2e8a:000a'
    assert ports[4]['role'] == 'node3' and ports[4]['path'] == '1-1.3.4' and ports[4]['device']['id'] == '0a5c:2711'
    assert ports[2]['device'] is None and ports[7]['role'] == 'unused'


def test_hub_not_enumerated_is_null_with_the_reasons(hat, tmp_path):
    hat.control.set(strict_hub=True)  # jumpers fitted: the hub is held in reset
    info = run_module('hat_info', args(hat, sensors=False), tmp_path)  # the RP2040 answers on its UART
    assert info.get('failed') is not True and info['usb']['hub'] is None, info
    assert 'jumpers' in info['usb']['error'] and 'EEPROM' in info['usb']['error']
    assert [n['power'] for n in info['nodes']] == ['off'] * 4


@pytest.mark.parametrize('hub, words', [
    ('1-1.3.1', "is 2e8a:000a"),
    ('1-1', "not the hat's USB2517 hub"),
    ('1-1.3:1.0', 'not a sysfs USB device name'),
    ('1-1.3\nX', 'not a sysfs USB device name'),
])
def test_a_hub_path_that_is_not_the_hats_hub_is_refused_before_the_rp2040(hat, tmp_path, hub, words):
    before = hat.state()['rp2040']['log_total']
    info = run_module('hat_info', args(hat, usb_hub=hub), tmp_path)
    assert info['failed'] is True and words in info['msg'] and '\n' not in info['msg'], info
    assert hat.state()['rp2040']['log_total'] == before


@pytest.mark.parametrize('bad, words', [
    (dict(ina226_shunt_ohm=0), 'ina226_shunt_ohm'),
    (dict(ina226_shunt_ohm='nan'), 'ina226_shunt_ohm'),
    (dict(tmp117_addresses={'1': 0x48}), 'nodes 1 and 2 the same address 0x48'),
    (dict(tmp117_addresses={'5': 0x48}), 'node 5'),
    (dict(tmp117_addresses={'1': 'x'}), 'must be an integer'),
])
def test_bad_options_fail_in_one_line(hat, tmp_path, bad, words):
    info = run_module('hat_info', args(hat, **bad), tmp_path)
    assert info['failed'] is True and words in info['msg'] and '\n' not in info['msg'], json.dumps(info)
    assert os.path.exists(hat.rp2040)


def test_node_flash_refuses_a_hub_that_is_not_the_hats_before_touching_anything(hat, tmp_path):
    image = tmp_path / 'x.img'
    image.write_bytes(b'\0' * 4096)
    before = hat.state()['rp2040']['log_total']
    base = dict(nodes=[1, 2], image=str(image), rpiboot=hat.rpiboot, root=hat.dir, port=hat.rp2040,
                uart_port=hat.path('rp2040-uart'), lock_dir=hat.path('lock'), state_dir=hat.path('state'))
    for extra, words in ((dict(usb_hub='1-1.3.1'), "USB device 1-1.3.1 is 2e8a:000a"),
                         (dict(usb_paths={'2': '1-1.3.2'}), "which is node 1's port on the hat's hub")):
        result = run_module('node_flash', dict(base, **extra), tmp_path)
        assert result['failed'] is True, result
        assert result['msg'].startswith('node1, node2: ') and words in result['msg'] and '\n' not in result['msg'], result
        assert [n['failed_step'] for n in result['nodes']] == ['preflight', 'preflight']
    hat.control.set(strict_hub=True)  # jumpers fitted: no hub on the bus, so no node can be found
    result = run_module('node_flash', dict(base, nodes=[3], _ansible_check_mode=True), tmp_path)
    assert result['failed'] is True and 'no USB2517 hub (0424:2517)' in result['msg'] and 'jumpers' in result['msg']
    assert hat.state()['rp2040']['log_total'] == before
    assert all(not n['en'] and n['nrpiboot'] for n in hat.state()['nodes'].values())
