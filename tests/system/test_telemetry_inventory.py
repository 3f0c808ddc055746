# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hats inventory plugin through ansible-inventory: many hats -> controllers, nodes, groups."""

from __future__ import annotations

import json
import os
import subprocess
import sys

INVENTORY = '''
plugin: minicluster.cm4.hats
hats:
  - name: alpha
    controller: 192.0.2.10
    nodes: {1: 192.0.2.11, 4: 192.0.2.14}
  - name: beta.two
    controller: beta-pi.local
    slots: [1, 2]
    vars:
      hat_port: /dev/cm4hat
'''


def inventory(tmp_path, text, name='cluster.hats.yml'):
    path = tmp_path / name
    path.write_text(text)
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_INVENTORY_UNPARSED_FAILED='1')
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-inventory'), '-i', str(path), '--list'],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_hats_become_controllers_nodes_and_groups(tmp_path):
    out = inventory(tmp_path, INVENTORY)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    hostvars = data['_meta']['hostvars']
    assert sorted(data['controller']['hosts']) == ['alpha-controller', 'beta.two-controller']
    assert sorted(data['nodes']['hosts']) == ['alpha-node1', 'alpha-node2', 'alpha-node3', 'alpha-node4',
                                              'beta.two-node1', 'beta.two-node2']
    assert sorted(data['hat_beta_two']['hosts']) == ['beta.two-controller', 'beta.two-node1', 'beta.two-node2']
    assert hostvars['alpha-controller'] == {'ansible_host': '192.0.2.10', 'hat_name': 'alpha'}
    assert hostvars['beta.two-controller']['hat_port'] == '/dev/cm4hat'
    node = hostvars['alpha-node4']
    assert node['hat_node'] == 4 and node['ansible_host'] == '192.0.2.14' and node['hat_name'] == 'alpha'
    controller = node['hat_controller']
    assert (controller.get('__ansible_unsafe') if isinstance(controller, dict) else controller) == 'alpha-controller'
    assert 'ansible_host' not in hostvars['alpha-node2']


def test_bad_hats_fail_with_one_line(tmp_path):
    # Every check has its unit test; this one shows the message reaches the operator.
    out = inventory(tmp_path, 'plugin: minicluster.cm4.hats\nhats:\n  - {name: a, controller: x}\n  - {name: a, controller: y}\n')
    assert out.returncode != 0 and 'cluster.hats.yml: hats: name a given twice' in out.stderr, out.stderr
