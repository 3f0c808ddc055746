# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""`make demo-fleet`: the simulated hat plus four test nodes, taken to a storage pool by site.yml.

Starts the simulated hat (.build/demo-fleet/hat) and four test nodes (tests/fleet, prefix "df",
10.231.29.0/24), writes one inventory holding both (inventory.yml there), runs playbooks/site.yml
twice (the second run changes nothing), shows each node's data disk, writes a file into the pool
from node2 and reads it on node3 with the user-space NFS client, shows the hat, and removes it all
whatever happens. Needs root (network namespaces, loop devices).
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(REPO, '.build', 'demo-fleet')
HAT = os.path.join(WORK, 'hat')
NODES = os.path.join(WORK, 'nodes')
PREFIX, SUBNET, CLUSTER = 'df', '10.231.29.0/24', '10.231.29.0/27'
sys.path.insert(0, os.path.join(REPO, 'tests'))

from fleet import nodes as fleet  # noqa: E402  (test helper, found through the path above)
from fleet.testing import ssh  # noqa: E402


def inventory(state):
    hosts = {n['name']: {'ansible_host': n['address'], 'hat_node': n['hat_node']} for n in state['nodes']}
    return {'all': {
        'vars': {'cluster_network': CLUSTER, 'site_hat': False},
        'children': {
            'controller': {'hosts': {'simulated-controller': {
                'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable,
                'hat_port': f'{HAT}/rp2040', 'hat_i2c_bus': f'unix:{HAT}/i2c-1.sock',
                'hat_lock_dir': f'{HAT}/lock', 'hat_state_dir': f'{HAT}/state'}}},
            'nodes': {
                'vars': {
                    'ansible_user': 'root', 'ansible_python_interpreter': '/usr/bin/python3',
                    'ansible_ssh_private_key_file': state['key'],
                    'ansible_ssh_common_args': f'-o UserKnownHostsFile={state["known_hosts"]} '
                                               '-o StrictHostKeyChecking=yes -o ServerAliveInterval=5',
                    'hat_controller': 'simulated-controller',
                    # this kernel has no NFS client: fstab only; the pool is used through libnfs below
                    'nfs_client_state': 'present',
                    'nfs_client_mounts': [{'server': 'node1', 'export': '/srv/data/pool', 'path': '/mnt/pool'}]},
                'hosts': hosts},
            'nfs_servers': {
                'vars': {'nfs_server_backend': 'ganesha', 'nfs_server_ganesha_grace_period': 5,
                         'nfs_server_ganesha_lease_lifetime': 5,
                         'nfs_server_exports': [{'name': 'pool', 'path': '/srv/data/pool', 'mode': '0777'}]},
                'hosts': {'node1': {}}}}}}


def step(text):
    print('\n=== %s' % text, flush=True)


def playbook(inv, name, *args):
    bin_dir = os.path.dirname(sys.executable)
    subprocess.run([os.path.join(bin_dir, 'ansible-playbook'), '-i', inv, os.path.join(REPO, 'playbooks', name)]
                   + list(args), check=True, env=dict(os.environ, ANSIBLE_HOST_KEY_CHECKING='true',
                                                      ANSIBLE_PIPELINING='true'))


def main():
    os.makedirs(WORK, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, 'tests'))
    try:
        step('simulated hat and four test nodes')
        subprocess.run([sys.executable, '-m', 'hatsim', 'start', '--dir', HAT], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        state = fleet.create(NODES, PREFIX, SUBNET, 4)
        inv = os.path.join(WORK, 'inventory.yml')
        with open(inv, 'w') as f:
            json.dump(inventory(state), f, indent=1)
        print('inventory: %s' % inv)
        step('site.yml: data disks and the storage pool')
        playbook(inv, 'site.yml')
        step('site.yml again: nothing to change')
        playbook(inv, 'site.yml')
        step('the pool at work: node2 writes as root, node3 reads, node1 shows the squashed owner')
        url = 'nfs://%s/srv/data/pool' % state['nodes'][0]['address']
        for name in ('node2', 'node3'):
            ssh(state, name, 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnfs-utils >/dev/null')
        ssh(state, 'node2', "echo 'hello from node2' > /tmp/hello && nfs-cp /tmp/hello '%s/hello.txt?version=4'" % url)
        print('node3 reads: ' + ssh(state, 'node3', "nfs-cat '%s/hello.txt?version=4'" % url).stdout.strip())
        print('node1 sees:  ' + ssh(state, 'node1', 'ls -ln /srv/data/pool/hello.txt').stdout.strip())
        step('the hat those nodes sit on (simulated)')
        playbook(inv, 'status.yml')
    finally:
        step('clean-up')
        fleet.destroy(NODES, PREFIX)
        subprocess.run([sys.executable, '-m', 'hatsim', 'stop', '--dir', HAT], check=False, env=env)


if __name__ == '__main__':
    main()
