# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""site.yml on three test nodes (tests/fleet): check mode against the real run, refused input,
a disk with someone else's data, a node lost in the middle of a run.

node1 serves the pool (nfs-ganesha), node2 mounts it, node3 is kept for the foreign disk.
The kernel NFS backend, which this kernel cannot run, is covered by check mode on a node and by
rendering its configuration into a scratch root.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet import nodes as fleet_nodes
from fleet.testing import running_fleet, ssh

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / 'playbooks' / 'site.yml'
PREFIX, SUBNET = 'tf', '10.231.19.0/24'

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason='test nodes need root')

GROUPS = {
    'all': {
        'vars': {'cluster_network': '10.231.19.0/27', 'site_hat': False, 'site_wait_timeout': 30},
        'children': {
            'nfs_servers': {
                'hosts': {'node1': {}},
                'vars': {'nfs_server_backend': 'ganesha', 'nfs_server_ganesha_grace_period': 5,
                         'nfs_server_ganesha_lease_lifetime': 5}},
            'nodes': {'vars': {
                'nfs_client_state': 'present',
                'nfs_client_mounts': [{'server': 'node1', 'export': '/srv/data/pool',
                                       'path': '/mnt/pool'}]}},
        }}}


@pytest.fixture(scope='module')
def fleet(tmp_path_factory):
    directory = tmp_path_factory.mktemp('fleet')
    with running_fleet(directory / 'nodes', PREFIX, SUBNET, 3, disk_size=256 << 20) as state:
        extra = directory / 'groups.json'
        extra.write_text(json.dumps(GROUPS))
        state['inventories'] = [state['inventory'], str(extra)]
        yield state


def play(state, *args, check=False, limit='node1,node2', extra=None, playbook=SITE, timeout=900):
    """ansible-playbook with the JSON callback: (returncode, parsed output)."""
    argv = [str(Path(sys.executable).parent / 'ansible-playbook'), str(playbook), '--limit', limit]
    for inv in state['inventories']:
        argv += ['-i', inv]
    if check:
        argv += ['--check', '--diff']
    if extra:
        argv += ['-e', json.dumps(extra)]
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK='ansible.posix.json', ANSIBLE_NOCOLOR='1',
               ANSIBLE_HOST_KEY_CHECKING='true', ANSIBLE_PIPELINING='true')
    proc = subprocess.run(argv + list(args), capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)
    try:
        out = json.loads(proc.stdout[proc.stdout.index('{'):])
    except ValueError:
        raise AssertionError(f'no JSON from ansible-playbook: {proc.stdout[-2000:]} {proc.stderr[-2000:]}')
    return proc.returncode, out


def changed_tasks(out):
    """Per host, the names of the tasks that reported a change, in order."""
    per_host = {}
    for p in out['plays']:
        for t in p['tasks']:
            for host, res in t['hosts'].items():
                if res.get('changed'):
                    per_host.setdefault(host, []).append(t['task']['name'])
    return per_host


def failures(out):
    """Per host, the message of its failed or unreachable task."""
    found = {}
    for p in out['plays']:
        for t in p['tasks']:
            for host, res in t['hosts'].items():
                if res.get('failed') or res.get('unreachable'):
                    msg = res.get('msg') or ''
                    for item in res.get('results', []):
                        if item.get('failed'):
                            msg = item.get('msg') or msg
                    found[host] = msg
    return found


def disk_digest(state, name):
    node = next(n for n in state['nodes'] if n['name'] == name)
    return hashlib.sha256(Path(node['disk']).read_bytes()).hexdigest()


def test_check_mode_predicts_the_real_run(fleet):
    rc, predicted = play(fleet, check=True)
    assert rc == 0, failures(predicted)
    rc, real = play(fleet)
    assert rc == 0, failures(real)
    for host in ('node1', 'node2'):
        assert changed_tasks(predicted)[host] == changed_tasks(real)[host], host
    assert 'minicluster.cm4.nvme : Make the GPT data partition' in changed_tasks(real)['node1']
    assert 'minicluster.cm4.nfs_client : Mount the shares' in changed_tasks(real)['node2']
    # A second run changing nothing and restarting nothing is the fleet scenario's idempotence and
    # verify; the lost-node test below reruns site.yml on these nodes as well.


def test_a_disk_with_someone_elses_filesystem_is_left_intact(fleet):
    node3 = next(n for n in fleet['nodes'] if n['name'] == 'node3')
    subprocess.run(['mkfs.ext4', '-q', '-F', '-L', 'photos', node3['loop']], check=True)
    before = disk_digest(fleet, 'node3')
    for check in (True, False):
        rc, out = play(fleet, limit='node3', check=check, playbook=SITE)
        assert rc != 0
        msg = failures(out)['node3']
        assert msg.startswith('node3: /dev/disk/by-id/nvme-Fleet_NVMe_Disk_FLTF0003 holds a ext4 '
                              "labelled 'photos' on the whole disk; nothing was written.")
        assert 'nvme_wipe=true' in msg and '\n' not in msg
        assert out['stats']['node3']['changed'] == 0
    assert disk_digest(fleet, 'node3') == before
    # told to, it takes the disk, and a rerun leaves it alone
    rc, out = play(fleet, limit='node3', extra={'nvme_wipe': True})
    assert rc == 0, failures(out)
    assert 'minicluster.cm4.nvme : Erase the foreign signatures (nvme_wipe)' in changed_tasks(out)['node3']
    assert ssh(fleet, 'node3', 'findmnt -n -o FSTYPE,LABEL /srv/data').stdout.split() == ['ext4', 'cm4data']


# Each round gives nodes their own mistake (inventory host variables), so one run shows several
# refusals. A failed storage node ends the run (no host left in its play), so the client-side
# mistake has a round of its own.
BAD_ROUNDS = [
    {'node1': ({'cluster_network': '10.231.19.300/24'},
               "node1: nfs_server_network '10.231.19.300/24' is not a network in CIDR form"),
     'node2': ({'nvme_device': '/dev/disk/by-id/nvme-Nowhere_0000'},
               'data disk /dev/disk/by-id/nvme-Nowhere_0000 does not exist; check nvme_device')},
    {'node1': ({'nfs_server_exports': [{'name': 'etc', 'path': '/etc'}]},
               "node1: export etc: path '/etc' must lie beneath the data mount /srv/data"),
     'node2': ({'nvme_mount_path': '/srv/../etc'}, "node2: bad data disk settings")},
    {'node3': ({'nfs_client_mounts': [{'server': 'node9', 'export': '/srv/data/pool', 'path': '/mnt/p'}]},
               "node3: storage node 'node9' of /mnt/p is not in the inventory")},
]


@pytest.mark.parametrize('round_', BAD_ROUNDS, ids=['network-disk', 'export-mountpath', 'storage-node'])
def test_bad_input_is_refused_in_one_line_before_anything_changes(fleet, round_, tmp_path):
    inventory = tmp_path / 'bad.json'
    inventory.write_text(json.dumps({'all': {'hosts': {h: v for h, (v, dummy) in round_.items()}}}))
    state = dict(fleet, inventories=fleet['inventories'] + [str(inventory)])
    rc, out = play(state, limit='node1,node2,node3')
    assert rc != 0
    found = failures(out)
    for host, (dummy, words) in round_.items():
        assert words in found[host] and '\n' not in found[host].strip(), found[host]
        assert out['stats'][host]['changed'] == 0


def test_kernel_backend_and_kernel_client_in_check_mode(fleet):
    rc, out = play(fleet, check=True, extra={'nfs_server_backend': 'kernel', 'nfs_client_state': 'mounted',
                                             'nfs_client_automount': True})
    assert rc == 0, failures(out)
    diffs = {}
    for p in out['plays']:
        for t in p['tasks']:
            for host, res in t['hosts'].items():
                for d in ([res.get('diff')] if isinstance(res.get('diff'), dict) else res.get('diff') or []):
                    diffs.setdefault((host, t['task']['name']), []).append(d.get('after', ''))
                for item in res.get('results', []):
                    for d in ([item.get('diff')] if isinstance(item.get('diff'), dict) else item.get('diff') or []):
                        diffs.setdefault((host, t['task']['name']), []).append(d.get('after', ''))
    exports = ''.join(diffs[('node1', 'minicluster.cm4.nfs_server : Write the exports of this collection')])
    assert ('/srv/data/pool 10.231.19.0/27(rw,sync,no_subtree_check,root_squash,anonuid=65534,'
            'anongid=65534)') in exports
    assert 'minicluster.cm4.nfs_server : Install the NFS server' in changed_tasks(out)['node1']
    # ganesha stays as it is: check mode changed nothing on the node
    assert ssh(fleet, 'node1', 'test ! -e /etc/exports.d/minicluster.exports').returncode == 0
    mounts = [item for p in out['plays'] for t in p['tasks']
              if t['task']['name'] == 'minicluster.cm4.nfs_client : Mount the shares'
              for item in t['hosts'].get('node2', {}).get('results', [])]
    assert [(m['src'], m['fstype'], m['opts'], m['changed']) for m in mounts] == [
        ('10.231.19.11:/srv/data/pool', 'nfs4',
         'nfsvers=4.1,hard,noatime,_netdev,x-systemd.automount,x-systemd.idle-timeout=600', True)]


def test_a_node_lost_mid_play_leaves_the_others_done_and_a_rerun_finishes(fleet):
    argv = [str(Path(sys.executable).parent / 'ansible-playbook'), str(SITE), '--limit', 'node1,node2']
    for inv in fleet['inventories']:
        argv += ['-i', inv]
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_HOST_KEY_CHECKING='true', ANSIBLE_PIPELINING='true',
               ANSIBLE_FORCE_COLOR='0')
    node2 = next(n for n in fleet['nodes'] if n['name'] == 'node2')
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith('PLAY [Data disks]'):
                # node2 drops off the switch between plays
                fleet_nodes.run('ip', '-n', node2['netns'], 'link', 'set', 'eth0', 'down')
        proc.wait(timeout=600)
    finally:
        fleet_nodes.run('ip', '-n', node2['netns'], 'link', 'set', 'eth0', 'up')
    text = ''.join(lines)
    assert proc.returncode != 0
    recap = text[text.index('PLAY RECAP'):]
    assert 'unreachable=1' in [l.split() for l in recap.splitlines() if l.startswith('node2')][0]
    node1 = [l.split() for l in recap.splitlines() if l.startswith('node1')][0]
    assert 'failed=0' in node1 and 'unreachable=0' in node1
    time.sleep(1)
    rc, out = play(fleet)
    assert rc == 0, failures(out)
    assert out['stats']['node2']['unreachable'] == 0
    # node1 finished in the interrupted run: the rerun has nothing left to do there
    assert out['stats']['node1']['changed'] == 0, changed_tasks(out).get('node1')
