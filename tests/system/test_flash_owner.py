# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One owner per node, and stopping a flash: SIGTERM, abort=true, SIGKILL (the guardian), Ctrl-C on
the play. Every way of stopping must leave the nodes off with USB boot released, no record saying
they were flashed, and a rerun that completes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from hatsim.testing import running_hat

import moduletest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = os.path.join(REPO, 'plugins', 'modules')

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in ('mcopy', 'mkfs.vfat', 'sfdisk', 'mke2fs', 'xz')),
                                reason='needs mtools, dosfstools, fdisk, e2fsprogs and xz')


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('owner-images') / 'slow.img')
    # Enough mapped data that a flash written 4 KiB at a time is still running when it is stopped.
    subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'mkimage.py'), '-o', path, '--compress', 'xz',
                    '--size-mib', '64', '--boot-mib', '16', '--text-kib', '16384', '--xz-level', '1'],
                   check=True, stdout=subprocess.DEVNULL)
    return path


@pytest.fixture
def hat(tmp_path):
    with running_hat(tmp_path / 'hat', disk_delay=0.3, rpiboot_timeout=2, boot_delay=0.1) as h:
        yield h


def args(hat, image, **extra):
    out = dict(nodes=[1, 2], image=image + '.xz', bmap=image + '.bmap', rpiboot=hat.rpiboot,
               rpiboot_payload=hat.path('usbboot', 'mass-storage-gadget64'), root=hat.dir, port=hat.rp2040,
               lock_dir=hat.path('lock'), state_dir=hat.path('state'), stagger=0.02, restart_delay=0.1,
               rpiboot_timeout=10, disk_timeout=10, progress_file=hat.path('state', 'flash', 'progress-a.json'))
    out.update(extra)
    return out


def start_module(name, module_args, tmp_path):
    """A module running in the background, as async_wrapper runs it: its own process."""
    path = str(tmp_path / ('args-%s-%d.json' % (name, time.monotonic_ns())))
    with open(path, 'w') as f:
        json.dump({'ANSIBLE_MODULE_ARGS': module_args}, f)
    return subprocess.Popen([sys.executable, os.path.join(MODULES, name + '.py'), path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def result_of(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert 'Traceback' not in out + err, out + err
    return json.loads(out)


def progress(hat, name='progress-a.json'):
    try:
        with open(hat.path('state', 'flash', name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def wait_writing(hat, proc, node=1, name='progress-a.json', timeout=120):
    """Until the node's eMMC has taken some bytes of this flash."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, 'the flash ended before it was stopped: %s' % (proc.communicate(),)
        entry = progress(hat, name).get('nodes', {}).get(str(node), {})
        if entry.get('phase') == 'writing' and os.stat(hat.emmc(node)).st_blocks * 512 >= 1 << 20:
            return
        time.sleep(0.05)
    raise AssertionError('node %d never started writing' % node)


def pins(hat):
    return dict((int(k), v) for k, v in hat.state()['nodes'].items())


def assert_off_and_released(hat, nodes, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        p = pins(hat)
        bad = [n for n in nodes if p[n]['en'] or not p[n]['nrpiboot']]
        if not bad or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not bad, 'nodes %s left on or in USB boot: %r' % (bad, dict((n, p[n]) for n in bad))
    for n in nodes:
        assert not os.path.exists(hat.path('state', 'flash', 'node%d.json' % n)), 'node %d has a record' % n


def test_sigterm_mid_write_and_one_owner_per_node(hat, image, tmp_path):
    flash = start_module('node_flash', args(hat, image, write_chunk_size=4096), tmp_path)
    wait_writing(hat, flash)
    run = progress(hat)['run']

    # node_power refuses to switch a node under the flash, and says which flash and how to stop it.
    before = pins(hat)
    refused = moduletest.run_module('node_power', dict(node=1, state='off', port=hat.rp2040, lock_dir=hat.path('lock'),
                                                       state_dir=hat.path('state')), tmp_path)
    assert refused['failed'] and '\n' not in refused['msg'], refused
    assert 'node 1 is being flashed by run %s' % run in refused['msg'] and 'abort=true' in refused['msg'], refused['msg']
    assert 'force=true' in refused['msg']
    assert pins(hat)[1]['en'] == before[1]['en'] and pins(hat)[1]['nrpiboot'] == before[1]['nrpiboot']

    # A second flash neither shares the progress file nor takes the node.
    same_file = moduletest.run_module('node_flash', args(hat, image, nodes=[3]), tmp_path)
    assert same_file['failed'] and 'belongs to run %s' % run in same_file['msg'], same_file['msg']
    second = moduletest.run_module('node_flash', args(hat, image, nodes=[1], progress_file=hat.path('p2.json')), tmp_path)
    assert second['failed'], second
    assert second['msg'].startswith('node1: another run holds it: node 1 is being flashed by run %s' % run), second['msg']
    assert 'progress in %s' % hat.path('state', 'flash', 'progress-a.json') in second['msg']

    flash.send_signal(signal.SIGTERM)
    result = result_of(flash)
    assert result['failed']
    lines = result['msg'].splitlines()
    assert [line.split(':')[0] for line in lines] == ['node1', 'node2'], result['msg']
    assert all('flash stopped (SIGTERM received)' in line and 'nothing is recorded as flashed' in line for line in lines)
    assert_off_and_released(hat, [1, 2])
    assert progress(hat)['finished'] is True and progress(hat)['ok'] is False

    again = moduletest.run_module('node_flash', args(hat, image), tmp_path)
    assert not again.get('failed') and [n['action'] for n in again['nodes']] == ['flashed', 'flashed'], again.get('msg')
    assert not any('interrupted_run' in n for n in again['nodes']), 'a clean stop left owner files'


def test_abort_and_kill(hat, image, tmp_path):
    # abort=true from another process stops the flash and waits for it.
    flash = start_module('node_flash', args(hat, image, nodes=[1], write_chunk_size=4096), tmp_path)
    wait_writing(hat, flash)
    common = dict(port=hat.rp2040, lock_dir=hat.path('lock'), state_dir=hat.path('state'))
    plan = moduletest.run_module('node_flash', dict(common, nodes=[1, 2], abort=True), tmp_path, check_mode=True)
    assert plan['changed'] is True and [n['action'] for n in plan['nodes']] == ['aborted', 'idle'], plan
    stopped = moduletest.run_module('node_flash', dict(common, nodes=[1, 2], abort=True), tmp_path)
    assert not stopped.get('failed') and stopped['changed'] is True, stopped
    assert stopped['msg'] == 'stopped: node1 (aborted)'
    result = result_of(flash)
    assert result['failed'] and 'flash stopped (SIGTERM received)' in result['msg']
    assert_off_and_released(hat, [1])
    idle = moduletest.run_module('node_flash', dict(common, nodes=[1, 2], abort=True), tmp_path)
    assert idle['changed'] is False and idle['msg'] == 'no flash holds node 1, 2'

    # SIGKILL cannot be caught: the guardian switches the nodes off once the flash is gone.
    flash = start_module('node_flash', args(hat, image, write_chunk_size=4096), tmp_path)
    wait_writing(hat, flash)
    run = progress(hat)['run']
    flash.kill()
    flash.communicate()
    assert_off_and_released(hat, [1, 2])
    deadline = time.monotonic() + 30
    while True:
        owner = json.load(open(hat.path('state', 'flash', 'node1.owner.json')))
        if owner['phase'] == 'released' or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert owner['run'] == run and owner['phase'] == 'released' and owner['interrupted_phase'] == 'writing', owner
    assert progress(hat)['finished'] is True and progress(hat)['ok'] is False
    # node_power is not blocked by a dead run, and says what it left.
    power = moduletest.run_module('node_power', dict(common, node=1, state='off'), tmp_path)
    assert not power.get('failed') and 'died at writing' in json.dumps(power.get('warnings')), power
    # The next flash finds it, reports it and completes.
    again = moduletest.run_module('node_flash', args(hat, image), tmp_path)
    assert not again.get('failed'), again.get('msg')
    nodes = dict((n['node'], n) for n in again['nodes'])
    assert nodes[1]['action'] == 'flashed' and nodes[1]['interrupted_run']['run'] == run
    assert 'died while flashing it' in json.dumps(again.get('warnings'))
    assert not os.path.exists(hat.path('state', 'flash', 'node1.owner.json'))


def test_ctrl_c_on_the_play_stops_the_flash(hat, image, tmp_path):
    inventory = tmp_path / 'inventory.json'
    inventory.write_text(json.dumps({'controller': {'hosts': {'localhost': {
        'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable,
        'hat_port': hat.rp2040, 'hat_lock_dir': hat.path('lock'), 'hat_state_dir': hat.path('state'),
        'hat_root': hat.dir, 'hat_rpiboot': hat.rpiboot,
        'hat_rpiboot_payload': hat.path('usbboot', 'mass-storage-gadget64')}}}}))
    cmd = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(inventory),
           os.path.join(REPO, 'playbooks', 'reflash.yml'), '-e', 'image=%s.xz' % image, '-e', 'bmap=%s.bmap' % image,
           '-e', 'nodes=1,2', '-e', 'reflash_poll_interval=1', '-e', 'reflash_stagger=0.05',
           '-e', 'reflash_restart_delay=0.2']
    env = dict(os.environ, ANSIBLE_NOCOLOR='1')
    play = subprocess.Popen(cmd + ['-e', 'reflash_write_chunk_size=4096', '-e', 'reflash_watchdog=15'], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 180
    files = []
    while time.monotonic() < deadline and play.poll() is None:
        files = [f for f in os.listdir(hat.path('state', 'flash')) if f.startswith('progress-')
                 and f.endswith('.json')] if os.path.isdir(hat.path('state', 'flash')) else []
        if files and os.stat(hat.emmc(1)).st_blocks * 512 >= 1 << 20:
            break
        time.sleep(0.1)
    assert play.poll() is None and files, 'the play ended or never wrote: %s' % (play.communicate()[0],)
    play.send_signal(signal.SIGINT)
    out = play.communicate(timeout=120)[0]
    assert play.returncode != 0, out
    # The follow task tells the flash to stop as it goes; should that be lost with the worker, the
    # watchdog stops it once the polls have stopped. Either way the nodes end off and unrecorded.
    assert_off_and_released(hat, [1, 2], timeout=60)
    deadline = time.monotonic() + 60
    while True:
        with open(hat.path('state', 'flash', files[0])) as f:
            data = json.load(f)
        if data['finished'] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert data['finished'] is True and data['ok'] is False, data
    error = data['nodes']['1'].get('error', '')
    assert 'flash stopped (SIGTERM received)' in error or 'flash stopped (nobody has followed its progress' in error, error

    rc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert rc.returncode == 0, rc.stdout + rc.stderr
    assert '"msg": "node1: flashed, ' in rc.stdout and '"msg": "node2: flashed, ' in rc.stdout
