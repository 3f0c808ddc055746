# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The telemetry role on localhost (scratch paths, no systemd) and the program it installs, run
against the simulated hat; its K3s manifest checked with Debian's promtool."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import yaml

from moduletest import REPO

PLAYBOOK = '''
- name: Telemetry service
  hosts: controller
  gather_facts: false
  roles:
    - role: minicluster.cm4.telemetry
- name: Monitoring stack manifest
  hosts: controller
  gather_facts: false
  tasks:
    - name: Write it
      ansible.builtin.include_role:
        name: minicluster.cm4.telemetry
        tasks_from: monitoring
'''


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def playbook(tmp_path, extra, *options):
    inventory = {'controller': {'hosts': {'ctl-alpha': {
        'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable, 'ansible_host': '192.0.2.10'}}}}
    (tmp_path / 'inventory.yml').write_text(yaml.safe_dump(inventory))
    (tmp_path / 'play.yml').write_text(PLAYBOOK)
    (tmp_path / 'extra.json').write_text(json.dumps(extra))
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_STDOUT_CALLBACK='default', ANSIBLE_RETRY_FILES_ENABLED='0')
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i',
                           str(tmp_path / 'inventory.yml'), str(tmp_path / 'play.yml'), '-e', '@' + str(tmp_path / 'extra.json')] + list(options),
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def recap(out):
    found = re.search(r'ctl-alpha\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', out.stdout)
    assert found, out.stdout + out.stderr
    return dict(zip(('ok', 'changed', 'unreachable', 'failed'), (int(g) for g in found.groups())))


def test_role_installs_a_working_service_and_the_k3s_manifest(hat, tmp_path):
    root = tmp_path / 'root'
    port = free_port()
    state = json.loads((hat / 'state.json').read_text())
    extra = {
        'telemetry_hat_name': 'alpha', 'telemetry_port': str(hat / 'rp2040'), 'telemetry_i2c_bus': 'unix:%s' % (hat / 'i2c-1.sock'),
        'telemetry_listen_address': '127.0.0.1', 'telemetry_listen_port': port,
        'telemetry_shunt_ohm': state['options']['shunt_ohms'],
        'telemetry_tmp117_addresses': dict((n, s['address']) for n, s in state['tmp117'].items()),
        'telemetry_lock_dir': str(root / 'lock'), 'telemetry_state_dir': str(root / 'state'),
        'telemetry_install_dir': str(root / 'lib'), 'telemetry_config_dir': str(root / 'etc'),
        'telemetry_unit_dir': str(root / 'systemd'), 'telemetry_python': sys.executable,
        'telemetry_manage_service': False, 'telemetry_install_packages': False, 'telemetry_sample_interval': 1.0,
        'telemetry_fan_interval': 0.5,
        'telemetry_k3s_manifest_dir': str(root), 'telemetry_k3s_grafana_admin_password': 'correct horse',
        'k3s_storage_class_name': 'nfs-pool',
    }
    first = playbook(tmp_path, extra)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert recap(first)['changed'] >= 5
    second = playbook(tmp_path, extra)
    assert second.returncode == 0, second.stdout[-3000:]
    assert recap(second)['changed'] == 0, second.stdout[-3000:]

    config_file = root / 'etc' / 'telemetry.json'
    assert oct(config_file.stat().st_mode & 0o777) == '0o600'
    written = config_file.read_text()
    config = json.loads(written)
    assert config['hats'][0]['name'] == 'alpha' and config['hats'][0]['fan']['curve'][0] == [30, 1200]
    unit = (root / 'systemd' / 'minicluster-cm4-telemetry.service').read_text()
    assert 'ExecStart=%s %s/minicluster-cm4-telemetry --config %s' % (sys.executable, root / 'lib', config_file) in unit
    assert 'RestartPreventExitStatus=2' in unit

    # A curve that falls: the service's own check refuses it, the file stays as it was. (From the
    # task that writes the file: the tasks before it were just shown to change nothing.)
    bad = playbook(tmp_path, dict(extra, telemetry_fan_points=[[30, 3000], [50, 2000]]),
                   '--start-at-task', "Write the service's configuration")
    assert bad.returncode != 0
    assert 'fan curve outputs must not fall as temperature rises: point 2 (2000 RPM) follows 3000 RPM' in bad.stdout
    assert config_file.read_text() == written

    # The installed program runs on its own, from the installed copy only.
    env = dict((k, v) for k, v in os.environ.items() if k not in ('PYTHONPATH', 'ANSIBLE_COLLECTIONS_PATH'))
    log = open(str(tmp_path / 'service.log'), 'w')
    proc = subprocess.Popen([sys.executable, str(root / 'lib' / 'minicluster-cm4-telemetry'), '--config', str(config_file)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    try:
        deadline = time.monotonic() + 60
        text = ''
        while time.monotonic() < deadline and 'minicluster_node_temperature_celsius{hat="alpha",node="4"}' not in text:
            time.sleep(0.3)
            try:
                text = urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port, timeout=5).read().decode()
            except OSError:
                pass
        assert 'minicluster_node_temperature_celsius{hat="alpha",node="4"}' in text, (tmp_path / 'service.log').read_text()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    assert proc.returncode == 0

    manifest = root / 'minicluster-monitoring.yaml'
    assert oct(manifest.stat().st_mode & 0o777) == '0o600'
    docs = list(yaml.safe_load_all(manifest.read_text()))
    by = dict(((d['kind'], d['metadata']['name']), d) for d in docs)
    assert set(by) >= {('Namespace', 'monitoring'), ('Deployment', 'prometheus'), ('Deployment', 'grafana'),
                       ('PersistentVolumeClaim', 'prometheus-data'), ('PersistentVolumeClaim', 'grafana-data'),
                       ('Service', 'grafana'), ('Secret', 'grafana-admin')}
    assert by['PersistentVolumeClaim', 'prometheus-data']['spec']['storageClassName'] == 'nfs-pool'
    assert by['Service', 'grafana']['spec']['ports'][0]['nodePort'] == 30300
    with open(os.path.join(REPO, 'roles', 'telemetry', 'files', 'dashboards', 'minicluster-cm4-hat.json')) as f:
        assert json.loads(by['ConfigMap', 'grafana-dashboards']['data']['minicluster-cm4-hat.json']) == json.load(f)
    prometheus_yml = by['ConfigMap', 'prometheus-config']['data']['prometheus.yml']
    assert yaml.safe_load(prometheus_yml)['scrape_configs'][0]['static_configs'][0]['targets'] == ['192.0.2.10:%d' % port]
    (tmp_path / 'prometheus.yml').write_text(prometheus_yml)
    check = subprocess.run(['promtool', 'check', 'config', str(tmp_path / 'prometheus.yml')], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    datasources = yaml.safe_load(by['ConfigMap', 'grafana-provisioning']['data']['datasources.yaml'])
    assert datasources['datasources'][0]['url'] == 'http://prometheus.monitoring.svc:9090'
