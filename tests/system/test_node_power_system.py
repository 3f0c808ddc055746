# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""node_power and hat_info as Ansible runs them (module processes) against the simulated hat."""

from __future__ import annotations

import collections
import concurrent.futures
import json
import multiprocessing
import random

from moduletest import run_in_process, run_module, sim_state, start_sim, stop_sim

PIN_COMMAND = {'usb': 'U', 'normal': 'u', 'on': 'e', 'off': 'd', 'reset': 'r'}


def console_args(hat, **args):
    args.update(port=str(hat / 'rp2040'), lock_dir=str(hat / 'lock'), state_dir=str(hat / 'state'))
    return args


def test_four_nodes_at_once_then_idempotent(hat, tmp_path):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: run_module('node_power', console_args(hat, node=n, state='on', stagger=0.1), tmp_path),
                                [1, 2, 3, 4]))
    assert [r.get('changed') for r in results] == [True] * 4, results
    assert all(sim_state(hat)['nodes'][str(n)]['en'] for n in (1, 2, 3, 4))
    again = run_module('node_power', console_args(hat, nodes=[1, 2, 3, 4], state='on'), tmp_path)
    assert again['changed'] is False
    assert [n['power'] for n in again['nodes']] == ['on'] * 4


def test_hat_info_reports_the_hat(hat, tmp_path):
    run_module('node_power', console_args(hat, nodes=[2], state='on', boot_mode='usb'), tmp_path)
    info = run_module('hat_info', console_args(hat, i2c_bus='unix:%s' % (hat / 'i2c-1.sock')), tmp_path)
    assert info['changed'] is False
    assert [n['power'] for n in info['nodes']] == ['off', 'on', 'off', 'off']
    assert info['nodes'][1]['boot_mode'] == 'usb'
    assert all(isinstance(n['temperature_c'], float) for n in info['nodes'])
    assert 11.0 < info['input']['voltage_v'] < 13.0
    assert info['input']['saturated'] or info['input']['current_a'] > 0
    assert info['fan']['mode'] in ('pwm', 'rpm')


def test_hat_info_empty_slot_is_null_with_warning(tmp_path):
    directory = tmp_path / 'hat'
    start_sim(directory, '--empty-slots', '4')
    try:
        info = run_module('hat_info', console_args(directory, i2c_bus='unix:%s' % (directory / 'i2c-1.sock')), tmp_path)
    finally:
        stop_sim(directory)
    assert info['nodes'][3]['temperature_c'] is None
    assert any('node 4' in json.dumps(w) for w in info.get('warnings', []))


def test_bare_lf_firmware(tmp_path):
    directory = tmp_path / 'hat'
    start_sim(directory, '--line-ending', 'lf')
    try:
        out = run_module('node_power', console_args(directory, nodes=[1, 4], state='on', stagger=0), tmp_path)
        assert out['changed'] is True, out
        out = run_module('node_power', console_args(directory, node=4, state='reset'), tmp_path)
        assert out['changed'] is True, out
        state = sim_state(directory)
    finally:
        stop_sim(directory)
    assert state['nodes']['1']['en'] and state['nodes']['4']['en']


def _worker(hat, seed, count):
    rng = random.Random(seed)
    done = []
    for dummy in range(count):
        node = rng.randint(1, 4)
        args = dict(node=node, state=rng.choice(['on', 'off']), stagger=0.02, restart_delay=0.05)
        if rng.random() < 0.4:
            args['boot_mode'] = rng.choice(['normal', 'usb'])
        result = run_in_process('node_power', console_args(hat, **args))
        assert not result.get('failed'), result
        done.append((node, args, result))
    return done


def test_concurrent_processes_keep_every_node_consistent(hat, tmp_path):
    """8 processes x 25 random operations at once: the last operation on a node wins, and every pin
    command the clients sent reached the simulator on the channel of the node it was meant for."""
    with concurrent.futures.ProcessPoolExecutor(8, mp_context=multiprocessing.get_context('spawn')) as pool:
        futures = [pool.submit(_worker, hat, seed, 25) for seed in range(8)]
        ops = [op for f in futures for op in f.result()]
    assert len(ops) == 200

    sent = collections.Counter()
    last = {}
    for node, args, result in ops:
        entry = result['nodes'][0]
        for action in entry['actions']:
            if action != 'wait':
                sent[(node - 1, PIN_COMMAND[action])] += 1
        if result['changed']:
            # generation orders changes exactly: it is counted under the hat lock.
            if node not in last or result['generation'] > last[node][0]:
                last[node] = (result['generation'], entry)

    state = sim_state(hat)
    seen = collections.Counter((e['channel'], e['cmd']) for e in state['rp2040']['log'] if e['cmd'] in 'eduUr')
    assert seen == sent
    for node, (dummy, entry) in last.items():
        pins = state['nodes'][str(node)]
        assert pins['en'] == (entry['power'] == 'on'), (node, entry, pins)
        if entry['boot_mode'] is not None:
            assert pins['nrpiboot'] == (entry['boot_mode'] == 'normal'), (node, entry, pins)
