# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The RP2040's two paths, USB CDC and the Pi's UART5, against the simulated hat."""

from __future__ import annotations

import concurrent.futures
import importlib
import multiprocessing
import os
import time

from moduletest import run_in_process, run_module, sim_state, start_sim, stop_sim

PIN_COMMANDS = ('e', 'd', 'U', 'u', 'r')


def hat_args(hat, **args):
    defaults = dict(port=str(hat / 'rp2040'), uart_port=str(hat / 'rp2040-uart'), lock_dir=str(hat / 'lock'),
                    state_dir=str(hat / 'state'), stagger=0, restart_delay=0.05)
    defaults.update(args)
    return defaults


def _restart_repeatedly(args, node, count, start_at):
    """One process on one path: power-cycle its own node count times (off, wait, on in one session)."""
    importlib.import_module('ansible_collections.minicluster.cm4.plugins.modules.node_power')  # before the start
    time.sleep(max(0.0, start_at - time.time()))
    started = time.time()
    paths = set()
    for dummy in range(count):
        result = run_in_process('node_power', dict(args, node=node, state='restarted'))
        assert not result.get('failed') and result['changed'], result
        paths.add(result['console']['path'])
    return started, time.time(), sorted(paths)


def test_two_processes_on_the_two_paths_serialise(tmp_path):
    """One process on USB power-cycles node 1, one on UART5 node 3, at the same time. Each session
    (read the currents, select the channel, switch off, wait, switch on) reaches the firmware whole:
    in the command log no command of the other path ever falls inside it."""
    hat = tmp_path / 'hat'
    start_sim(hat)
    try:
        usb = hat_args(hat, uart_port='')
        uart = hat_args(hat, port=str(hat / 'rp2040-uart'))
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context('spawn')) as pool:
            # Both start together, once their interpreters are up.
            start_at = time.time() + 3
            first = pool.submit(_restart_repeatedly, usb, 1, 8, start_at)
            second = pool.submit(_restart_repeatedly, uart, 3, 8, start_at)
            (start_a, end_a, paths_a), (start_b, end_b, paths_b) = first.result(), second.result()
        log = sim_state(hat)['rp2040']['log']
    finally:
        stop_sim(hat)
    assert (paths_a, paths_b) == (['usb'], ['uart'])
    # The two really ran at the same time.
    assert start_a < end_b and start_b < end_a
    assert sorted(set(e['path'] for e in log)) == ['uart', 'usb']
    # Each process: 'on' once (its node was off), then off + on seven times.
    assert sum(1 for e in log if e['cmd'] in PIN_COMMANDS) == 2 * (1 + 2 * 7)
    for i, entry in enumerate(log):
        around = log[max(0, i - 4):i + 2]
        if entry['cmd'].startswith('c'):
            # A session reads the currents, then selects its channel.
            assert log[i - 1]['cmd'] == 'a' and log[i - 1]['path'] == entry['path'], around
        elif entry['cmd'] in PIN_COMMANDS:
            assert log[i - 1]['cmd'][0] in ('c',) + PIN_COMMANDS and log[i - 1]['path'] == entry['path'], around
            assert entry['channel'] == (0 if entry['path'] == 'usb' else 2), around


def test_falls_back_to_uart_while_the_hub_is_in_reset(tmp_path):
    """With the hub held in reset (jumpers fitted, strict hub) there is no USB console: node_power
    reaches the RP2040 through UART5 and says so; without the fallback it fails in one line."""
    hat = tmp_path / 'hat'
    start_sim(hat, '--strict-hub')
    try:
        assert not os.path.exists(str(hat / 'rp2040'))
        result = run_module('node_power', hat_args(hat, node=2, state='on'), tmp_path)
        assert result['changed'] is True, result
        assert result['console'] == {'port': str(hat / 'rp2040-uart'), 'path': 'uart'}
        again = run_module('node_power', hat_args(hat, node=2, state='on'), tmp_path)
        assert again['changed'] is False, again
        state = sim_state(hat)
        assert state['nodes']['2']['en'] is True
        assert set(e['path'] for e in state['rp2040']['log']) == {'uart'}

        failed = run_module('node_power', hat_args(hat, node=2, state='off', uart_port=''), tmp_path)
        assert failed['failed'] is True
        assert 'cannot open the RP2040 console %s' % (hat / 'rp2040') in failed['msg']
        assert '\n' not in failed['msg']
        assert sim_state(hat)['nodes']['2']['en'] is True
    finally:
        stop_sim(hat)
