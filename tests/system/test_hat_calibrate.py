# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""hat_calibrate against a simulated hat whose nodes have different IMON gains."""

from __future__ import annotations

import json
import os

import pytest

from hatsim.client import Control
from moduletest import reset_sim, run_module, running_sim, sim_state

GAINS = (1.0, 1.6, 2.4, 1.0)


@pytest.fixture(scope='module')
def sim(tmp_path_factory):
    with running_sim(tmp_path_factory.mktemp('hatsim') / 'hat', '--imon-gains', ','.join(map(str, GAINS)), '--shunt-ohms', '0.01') as directory:
        yield directory


@pytest.fixture
def hat(sim):
    return reset_sim(sim)


def hat_args(hat, **extra):
    return dict(dict(port=str(hat / 'rp2040'), uart_port=str(hat / 'rp2040-uart'), lock_dir=str(hat / 'lock'),
                     state_dir=str(hat / 'state')), **extra)


def args(hat, **extra):
    return hat_args(hat, **dict(dict(i2c_bus='unix:%s' % (hat / 'i2c-1.sock'), ina226_shunt_ohm=0.01, samples=3,
                                     settle=0.3), **extra))


def test_calibration_recovers_each_gain_and_is_used(hat, tmp_path):
    assert run_module('node_power', dict(hat_args(hat), node=1, state='on', stagger=0), tmp_path)['changed']
    boots_of_node1 = sim_state(hat)['nodes']['1']['boots']

    checked = run_module('hat_calibrate', args(hat, nodes=[1, 2, 3]), tmp_path, check_mode=True)
    assert checked['changed'] is True and checked['calibrated'] == [2, 3], checked
    assert checked['skipped'] == {'1': 'on'}
    assert not os.path.exists(checked['path'])
    assert not [e for e in sim_state(hat)['rp2040']['log'] if e['cmd'] in 'eUdu' and e['channel'] in (1, 2)]

    done = run_module('hat_calibrate', args(hat, nodes=[1, 2, 3]), tmp_path, diff=True)
    assert done['changed'] is True and done['calibrated'] == [2, 3], done
    assert any('node 1 is on' in json.dumps(w) for w in done.get('warnings', []))
    got = dict((e['node'], e) for e in done['calibration'])
    assert sorted(got) == [2, 3]
    assert got[2]['ma_per_unit'] == pytest.approx(GAINS[1], rel=0.03)
    assert got[3]['ma_per_unit'] == pytest.approx(GAINS[2], rel=0.03)
    # An off card still draws (its converters, an NVMe drive): the baseline is what the node read while off.
    off_reading = sim_state(hat)['nodes']['2']['current_ma']
    assert got[2]['baseline_units'] > 5 and got[2]['baseline_units'] == pytest.approx(off_reading, abs=3)
    assert oct(os.stat(done['path']).st_mode & 0o777) == '0o644'
    assert set(done['diff']['after']) == {'node2', 'node3'}

    state = sim_state(hat)
    # Switched on in USB boot (the SoC never reads its eMMC), off again, USB-boot pin released.
    for n in ('2', '3'):
        assert (state['nodes'][n]['en'], state['nodes'][n]['nrpiboot'], state['nodes'][n]['boots']) == (False, True, 1)
    channel_cmds = [e['cmd'] for e in state['rp2040']['log'] if e['channel'] == 1 and e['cmd'] in 'eUdu']
    assert channel_cmds == ['U', 'e', 'd', 'u']
    assert state['nodes']['1']['en'] is True and state['nodes']['1']['boots'] == boots_of_node1

    again = run_module('hat_calibrate', args(hat, nodes=[2, 3]), tmp_path)
    assert again['changed'] is False and again['calibrated'] == [], again

    # node_power and hat_info read currents through the calibration.
    run_module('node_power', dict(hat_args(hat), node=3, state='on', stagger=0), tmp_path)
    info = run_module('hat_info', hat_args(hat, i2c_bus='unix:%s' % (hat / 'i2c-1.sock'), ina226_shunt_ohm=0.01), tmp_path)
    true_ma = sim_state(hat)['nodes']['3']['current_ma'] * GAINS[2]
    assert info['nodes'][2]['power'] == 'on'
    assert info['nodes'][2]['current_ma'] == pytest.approx(true_ma, rel=0.15)


def test_no_node_to_switch_is_one_line_error_and_changes_nothing(hat, tmp_path):
    run_module('node_power', dict(hat_args(hat), node=4, state='on', stagger=0), tmp_path)
    before = sim_state(hat)['rp2040']['log_total']
    for nodes, message in (([], 'no node to switch: list in nodes'), ([4], 'no node to switch: node 4 is on')):
        out = run_module('hat_calibrate', args(hat, nodes=nodes), tmp_path)
        assert out['failed'] is True and message in out['msg'], out
        assert '\n' not in out['msg']
    state = sim_state(hat)
    assert [e['cmd'] for e in state['rp2040']['log'][before:]] == ['a']
    assert not os.path.exists(str(hat / 'state' / 'minicluster-cm4.hat0.calibration.json'))


def test_saturated_input_monitor_stops_the_calibration(hat, tmp_path):
    """With the schematic's 0.1 ohm shunt, node 3 (2.4 mA per unit) takes the input past 0.82 A."""
    run_module('node_power', dict(hat_args(hat), node=1, state='off', stagger=0), tmp_path)
    with Control(str(hat)) as control:
        control.set(shunt_ohms=0.1)
    out = run_module('hat_calibrate', args(hat, nodes=[3], ina226_shunt_ohm=0.1), tmp_path)
    assert out['failed'] is True and 'saturated' in out['msg'] and 'ina226_shunt_ohm' in out['msg'], out
    state = sim_state(hat)
    assert state['nodes']['3']['en'] is False and state['nodes']['3']['nrpiboot'] is True
    assert not os.path.exists(str(hat / 'state' / 'minicluster-cm4.hat0.calibration.json'))
