# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The K3s double (tests/doubles/k3s/k3s) behaves as K3s documents, on this machine's loopback:
config.yaml and config.yaml.d merged with K3s's rules, unknown keys warned about and recorded, the
token files of a new cluster, joiners refused on a wrong token, kubectl's table and JSON, cordon,
the auto-deploy directory, sd_notify readiness."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

DOUBLE = Path(__file__).resolve().parents[1] / 'doubles' / 'k3s' / 'k3s'


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class Node:
    def __init__(self, base: Path, name: str):
        self.dir = base / name
        self.dir.mkdir()
        self.name = name
        self.port = free_port()
        self.config = self.dir / 'config.yaml'
        self.data = self.dir / 'data'
        self.kubeconfig = self.dir / 'k3s.yaml'
        self.proc = None

    def args(self, role):
        argv = [sys.executable, str(DOUBLE), role, '--config', str(self.config), '--data-dir', str(self.data),
                '--node-name', self.name]
        if role == 'server':
            argv += ['--write-kubeconfig', str(self.kubeconfig), '--https-listen-port', str(self.port),
                     '--bind-address', '127.0.0.1']
        return argv

    def start(self, role, env=None, notify=None):
        environ = dict(os.environ, **(env or {}))
        if notify:
            environ['NOTIFY_SOCKET'] = notify
        self.proc = subprocess.Popen(self.args(role), env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        return self.proc

    def run(self, role, env=None):
        return subprocess.run(self.args(role), env=dict(os.environ, **(env or {})), capture_output=True, text=True,
                              timeout=60)

    def kubectl(self, *args):
        return subprocess.run([sys.executable, str(DOUBLE), 'kubectl', '--kubeconfig', str(self.kubeconfig)] + list(args),
                              capture_output=True, text=True, timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def nodes(tmp_path):
    made = []

    def make(name):
        node = Node(tmp_path, name)
        made.append(node)
        return node
    yield make
    for node in made:
        node.stop()


def wait_ready(notify_sock, proc):
    notify_sock.settimeout(30)
    try:
        return notify_sock.recv(64)
    except socket.timeout:
        proc.kill()
        raise AssertionError('no READY=1; stderr: %s' % proc.communicate()[1])


@pytest.fixture
def notify(tmp_path):
    path = str(tmp_path / 'notify.sock')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield path, sock
    sock.close()


def until(check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_version():
    out = subprocess.run([sys.executable, str(DOUBLE), '--version'], capture_output=True, text=True, check=True).stdout
    assert out.startswith('k3s version v1.') and 'go version' in out


def test_cluster_of_three_servers_and_an_agent(nodes, notify):
    path, sock = notify
    first, second, agent = nodes('s1'), nodes('s2'), nodes('a1')
    first.config.write_text('cluster-init: true\nnode-label: [zone=a]\nnode-lable: [typo=1]\n')
    (first.dir / 'config.yaml.d').mkdir()
    (first.dir / 'config.yaml.d' / '10-more.yaml').write_text('node-label+: [disk=nvme]\n')
    proc = first.start('server', notify=path)
    assert wait_ready(sock, proc) == b'READY=1'
    token = (first.data / 'server' / 'token').read_text().strip()
    assert token.startswith('K10') and '::server:' in token
    assert os.readlink(first.data / 'server' / 'node-token') == 'token'
    assert oct(first.kubeconfig.stat().st_mode & 0o777) == '0o600'
    assert oct((first.data / 'server' / 'token').stat().st_mode & 0o777) == '0o600'
    unknown = [json.loads(line) for line in (first.data / 'double' / 'unknown-keys.log').read_text().splitlines()]
    assert [u['key'] for u in unknown] == ['node-lable']

    url = 'server: https://127.0.0.1:%d\n' % first.port
    second.config.write_text(url)
    refused = second.run('server', env={'K3S_TOKEN': token[:-1] + 'x'})
    assert refused.returncode == 1 and '401 Unauthorized' in refused.stderr
    no_token = second.run('server')
    assert no_token.returncode == 1 and 'token is required' in no_token.stderr

    proc = second.start('server', env={'K3S_TOKEN': token}, notify=path)
    assert wait_ready(sock, proc) == b'READY=1'
    agent.config.write_text(url)
    proc = agent.start('agent', env={'K3S_TOKEN': token.rsplit(':', 1)[1]}, notify=path)
    assert wait_ready(sock, proc) == b'READY=1'

    def listed():
        result = second.kubectl('get', 'nodes', '-o', 'json')
        items = json.loads(result.stdout)['items'] if result.returncode == 0 else []
        ready = [i for i in items if i['status']['conditions'][0]['status'] == 'True']
        return items if len(ready) == 3 else None
    items = until(listed)
    assert items, 'three Ready nodes expected'
    labels = dict((i['metadata']['name'], i['metadata']['labels']) for i in items)
    assert labels['s1']['zone'] == 'a' and labels['s1']['disk'] == 'nvme' and 'typo' not in labels['s1']
    assert 'node-role.kubernetes.io/etcd' in labels['s2'] and not any(k.startswith('node-role') for k in labels['a1'])
    table = first.kubectl('get', 'nodes').stdout.splitlines()
    assert table[0].split() == ['NAME', 'STATUS', 'ROLES', 'AGE', 'VERSION']
    assert table[1].split()[:3] == ['a1', 'Ready', '<none>']
    assert table[2].split()[:3] == ['s1', 'Ready', 'control-plane,etcd,master']

    assert first.kubectl('cordon', 'a1').stdout.strip() == 'node/a1 cordoned'
    assert first.kubectl('cordon', 'a1').stdout.strip() == 'node/a1 already cordoned'
    assert 'Ready,SchedulingDisabled' in first.kubectl('get', 'nodes', 'a1').stdout
    agent.stop()
    assert until(lambda: 'NotReady' in first.kubectl('get', 'nodes', 'a1').stdout)

    manifests = first.data / 'server' / 'manifests'
    (manifests / 'sc.yaml').write_text('apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: nfs}\n'
                                       'provisioner: nfs.csi.k8s.io\n')
    (manifests / 'broken.yaml').write_text('kind: [\n')
    assert until(lambda: 'nfs' in first.kubectl('get', 'storageclass').stdout.split())
    names = first.kubectl('get', 'sc', '-o', 'name').stdout.split()
    assert names == ['storageclass/local-path', 'storageclass/nfs']
    assert until(lambda: 'broken.yaml' in manifest_errors(first))


def manifest_errors(node):
    events = json.loads((node.data / 'server' / 'db' / 'etcd' / 'member.json').read_text())['events']
    return ' '.join(e.get('file', '') for e in events if e['kind'] == 'manifest-error')


def test_one_server_uses_sqlite_and_refuses_a_joining_server(nodes, notify):
    path, sock = notify
    solo, other = nodes('solo'), nodes('other')
    solo.config.write_text('disable: [local-storage]\n')
    proc = solo.start('server', env={'K3S_TOKEN': 'passphrase1'}, notify=path)
    assert wait_ready(sock, proc) == b'READY=1'
    assert (solo.data / 'server' / 'db' / 'state.db').exists()
    assert not (solo.data / 'server' / 'manifests' / 'local-storage.yaml').exists()
    assert (solo.data / 'server' / 'token').read_text().strip().endswith('::server:passphrase1')
    other.config.write_text('server: https://127.0.0.1:%d\n' % solo.port)
    joined = other.run('server', env={'K3S_TOKEN': 'passphrase1'})
    assert joined.returncode == 1 and 'SQLite' in joined.stderr
    solo.stop()
    restart = solo.run('server', env={'K3S_TOKEN': 'another-token'})
    assert restart.returncode == 1 and 'different token' in restart.stderr
    starts = (solo.data / 'double' / 'starts.log').read_text()
    assert len(starts.splitlines()) == 2
    assert 'passphrase1' not in starts and 'another-token' not in starts
