# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Create, inspect and destroy a set of test nodes.

Every name made on the machine derives from the prefix (PFX):

    bridge          PFX-br          the hat's switch; carries the first address of the subnet
    netns           PFX-n1..        one per node (PFX-x for the outsider)
    veth            PFX-v1.. / PFX-e1..   host side on the bridge / node side (renamed eth0)
    nspawn machine  PFX-node1..     booted from DIR/nodes/nodeN/root (overlay on the shared base)
    loop device     backs DIR/disks/nodeN.img, seen inside the node as /dev/nvme0n1
    proxy           python -m fleet.proxy --tag PFX on BRIDGE:3142

`create` first removes whatever an earlier run with the same prefix and directory left behind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from fleet import rootfs

PREFIX_RE = re.compile(r'^[a-z][a-z0-9]{0,5}$')
PROXY_PORT = 3142
MODEL = 'Fleet NVMe Disk'
STATE = 'fleet.json'
REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO / '.build' / 'fleet'


class FleetError(Exception):
    pass


def log(msg: str) -> None:
    print(f'fleet: {msg}', file=sys.stderr, flush=True)


def run(*argv, check=True, capture=False):
    res = subprocess.run([str(a) for a in argv], check=False, text=True,
                         stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    if check and res.returncode:
        raise FleetError(f'{" ".join(map(str, argv))}: {res.stderr.strip()}')
    return res.stdout if capture else res.returncode


# ---------------------------------------------------------------- layout

def plan(directory: Path, prefix: str, subnet: str, count: int, disk_size: int) -> dict:
    """The names and addresses a fleet uses, derived from its parameters only."""
    if not PREFIX_RE.match(prefix):
        raise FleetError(f'prefix {prefix!r}: 1-6 characters, a lower-case letter then letters '
                         'or digits (it goes into 15-character interface names)')
    try:
        net = ipaddress.IPv4Network(subnet)
    except ValueError as exc:
        raise FleetError(f'subnet {subnet!r}: {exc}') from None
    if net.prefixlen > 26:
        raise FleetError(f'subnet {subnet}: needs at least a /26')
    if not 1 <= count <= 4:
        raise FleetError(f'nodes {count}: a hat carries 1 to 4 nodes')
    directory = Path(directory).resolve()
    nodes = []
    for n in range(1, count + 1):
        serial = f'FL{prefix.upper()}{n:04d}'
        nodes.append({
            'name': f'node{n}', 'hat_node': n, 'address': str(net.network_address + 10 + n),
            'netns': f'{prefix}-n{n}', 'veth': f'{prefix}-v{n}', 'peer': f'{prefix}-e{n}',
            'machine': f'{prefix}-node{n}', 'root': str(directory / 'nodes' / f'node{n}'),
            'disk': str(directory / 'disks' / f'node{n}.img'), 'disk_size': disk_size,
            'model': MODEL, 'serial': serial,
            'by_id': f'/dev/disk/by-id/nvme-{MODEL.replace(" ", "_")}_{serial}',
        })
    return {
        'prefix': prefix, 'subnet': str(net), 'dir': str(directory),
        'bridge': f'{prefix}-br', 'gateway': str(net.network_address + 1),
        'proxy': f'{net.network_address + 1}:{PROXY_PORT}',
        'outsider': {'netns': f'{prefix}-x', 'veth': f'{prefix}-vx', 'peer': f'{prefix}-ex',
                     'address': str(net.broadcast_address - 1)},
        'nodes': nodes,
        'key': str(directory / 'id_ed25519'), 'known_hosts': str(directory / 'known_hosts'),
        'inventory': str(directory / 'inventory.yml'),
    }


# ---------------------------------------------------------------- clean-up by prefix

def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f'/proc/{pid}/cmdline').read_bytes().decode(errors='replace').split('\0')
    except OSError:
        return []


def _ours(prefix: str) -> list[int]:
    """Processes this prefix started: its nspawn machines and its proxy, by their arguments."""
    marks = {f'--machine={prefix}-node{n}' for n in range(1, 5)} | {f'--tag={prefix}'}
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit() and int(entry) != os.getpid():
            if marks & set(_cmdline(int(entry))):
                found.append(int(entry))
    return found


def _stop(pids: list[int], grace: float = 20.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if Path(f'/proc/{p}').exists()
                and Path(f'/proc/{p}/stat').read_text().split(') ')[-1][0] != 'Z']
        time.sleep(0.2)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _netns_list(prefix: str) -> list[str]:
    out = run('ip', 'netns', 'list', capture=True, check=False) or ''
    return [line.split()[0] for line in out.splitlines()
            if re.match(rf'^{re.escape(prefix)}-(n\d|x)\b', line)]


def _links(prefix: str) -> list[str]:
    out = run('ip', '-o', 'link', 'show', capture=True, check=False) or ''
    names = []
    for line in out.splitlines():
        name = line.split(':')[1].strip().split('@')[0]
        if re.match(rf'^{re.escape(prefix)}-(br|v\d|vx|e\d|ex)$', name):
            names.append(name)
    return names


def cleanup(layout: dict) -> None:
    """Remove everything the prefix left: processes, mounts, loop devices, namespaces, links."""
    prefix, directory = layout['prefix'], Path(layout['dir'])
    _stop(_ours(prefix))
    for ns in _netns_list(prefix):
        # A killed nspawn can leave its container's processes behind; they live in our netns.
        pids = [int(p) for p in (run('ip', 'netns', 'pids', ns, capture=True, check=False)
                                 or '').split()]
        _stop(pids, grace=5)
        run('ip', 'netns', 'del', ns, check=False)
    mounts = []
    for line in Path('/proc/self/mountinfo').read_text().splitlines():
        point = line.split()[4].replace('\\040', ' ')
        if point.startswith(str(directory / 'nodes') + '/'):
            mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        if run('umount', point, check=False):
            run('umount', '-l', point, check=False)
    for node in layout['nodes']:
        if Path(node['disk']).exists():
            for line in (run('losetup', '-j', node['disk'], '-O', 'NAME', '-n', capture=True,
                             check=False) or '').split():
                run('losetup', '-d', line, check=False)
    for link in _links(prefix):
        run('ip', 'link', 'del', link, check=False)
    for sub in ('nodes', 'disks'):
        shutil.rmtree(directory / sub, ignore_errors=True)
    for name in (STATE, 'id_ed25519', 'id_ed25519.pub', 'known_hosts', 'inventory.yml'):
        (directory / name).unlink(missing_ok=True)


# ---------------------------------------------------------------- create

def _network(layout: dict) -> None:
    plen = ipaddress.IPv4Network(layout['subnet']).prefixlen
    br = layout['bridge']
    run('ip', 'link', 'add', br, 'type', 'bridge')
    run('ip', 'addr', 'add', f'{layout["gateway"]}/{plen}', 'dev', br)
    run('ip', 'link', 'set', br, 'up')
    for item in layout['nodes'] + [layout['outsider']]:
        ns = item['netns']
        run('ip', 'netns', 'add', ns)
        run('ip', 'link', 'add', item['veth'], 'type', 'veth', 'peer', 'name', item['peer'])
        run('ip', 'link', 'set', item['peer'], 'netns', ns)
        run('ip', '-n', ns, 'link', 'set', item['peer'], 'name', 'eth0')
        run('ip', '-n', ns, 'addr', 'add', f'{item["address"]}/{plen}', 'dev', 'eth0')
        run('ip', '-n', ns, 'link', 'set', 'lo', 'up')
        run('ip', '-n', ns, 'link', 'set', 'eth0', 'up')
        run('ip', 'link', 'set', item['veth'], 'master', br, 'up')


def _copy_apt(root: Path, proxy: str) -> None:
    """The machine's own apt sources and settings, plus the proxy the node reaches them by."""
    for sub in ('sources.list.d', 'apt.conf.d', 'trusted.gpg.d', 'keyrings'):
        src = Path('/etc/apt') / sub
        if src.is_dir():
            for f in src.iterdir():
                if f.is_file() and re.search(r'\.(list|sources|gpg|asc)$|^\d\d[\w-]+$', f.name):
                    shutil.copyfile(f, root / 'etc/apt' / sub / f.name)
    if Path('/etc/apt/sources.list').is_file():
        shutil.copyfile('/etc/apt/sources.list', root / 'etc/apt/sources.list')
    else:  # debootstrap's one would name the same archive twice
        (root / 'etc/apt/sources.list').unlink(missing_ok=True)
    (root / 'etc/apt/apt.conf.d/00fleet-proxy').write_text(
        f'Acquire::http::Proxy "http://{proxy}/";\nAcquire::https::Proxy "DIRECT";\n')


def _node_files(layout: dict, node: dict, pubkey: str) -> str:
    root = Path(node['root']) / 'root'
    (root / 'etc/hostname').write_text(node['name'] + '\n')
    hosts = ['127.0.0.1 localhost', f'127.0.1.1 {node["name"]}']
    hosts += [f'{n["address"]} {n["name"]}' for n in layout['nodes'] if n is not node]
    (root / 'etc/hosts').write_text('\n'.join(hosts) + '\n')
    (root / 'etc/machine-id').write_text(uuid.uuid4().hex + '\n')
    ssh = root / 'root/.ssh'
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / 'authorized_keys').write_text(pubkey)
    os.chmod(ssh / 'authorized_keys', 0o600)
    run('ssh-keygen', '-A', '-f', root)
    (root / 'etc/fleet').mkdir(exist_ok=True)
    (root / 'etc/fleet/disk.json').write_text(json.dumps({
        'loop': Path(node['loop']).name, 'name': 'nvme0n1',
        'by_id': Path(node['by_id']).name}) + '\n')
    _copy_apt(root, layout['proxy'])
    hostkey = (root / 'etc/ssh/ssh_host_ed25519_key.pub').read_text().split()
    return f'{node["address"]} {hostkey[0]} {hostkey[1]}\n'


def _boot(node: dict, base: Path) -> int:
    top = Path(node['root'])
    for sub in ('upper', 'work', 'root'):
        (top / sub).mkdir(parents=True, exist_ok=True)
    run('mount', '-t', 'overlay', 'overlay', '-o',
        f'lowerdir={base},upperdir={top / "upper"},workdir={top / "work"}', top / 'root')
    return 0


def _start(node: dict) -> int:
    top = Path(node['root'])
    console = open(top / 'console.log', 'ab')
    proc = subprocess.Popen(
        ['systemd-nspawn', '--quiet', '--boot', '--register=no', '--keep-unit',
         f'--machine={node["machine"]}', f'--hostname={node["name"]}',
         '-D', str(top / 'root'), f'--network-namespace-path=/run/netns/{node["netns"]}',
         '--console=passive',
         # nfs-ganesha's VFS backend works on file handles.
         '--system-call-filter=open_by_handle_at name_to_handle_at'],
        stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
        start_new_session=True)
    return proc.pid


def _start_proxy(layout: dict, directory: Path) -> int:
    out = open(directory / 'proxy.log', 'ab')
    mirror_hosts = set()
    for path in list(Path('/etc/apt/sources.list.d').glob('*.sources')) + \
            list(Path('/etc/apt').glob('sources.list')):
        mirror_hosts.update(re.findall(r'https?://([^/\s:]+)', path.read_text()))
    args = [sys.executable, '-m', 'fleet.proxy', f'--tag={layout["prefix"]}',
            '--listen', layout['proxy']]
    for host in sorted(mirror_hosts or {'deb.debian.org'}):
        args += ['--allow', host]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    return proc.pid


def _wait_ssh(layout: dict, node: dict, deadline: float) -> None:
    argv = ['ssh', '-i', layout['key'], '-o', f'UserKnownHostsFile={layout["known_hosts"]}',
            '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=3',
            f'root@{node["address"]}',
            f'test -b /dev/nvme0n1 && test -L {node["by_id"]}']
    while True:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if res.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise FleetError(f'{node["name"]} ({node["address"]}) not reachable by SSH with its '
                             f'data disk: {res.stderr.strip() or "disk links missing"}; see '
                             f'{Path(node["root"]) / "console.log"}')
        time.sleep(0.5)


def write_inventory(layout: dict) -> None:
    nodes = {n['name']: {'ansible_host': n['address'], 'hat_node': n['hat_node'],
                         'fleet_disk_by_id': n['by_id']} for n in layout['nodes']}
    inventory = {'all': {
        'vars': {'fleet_subnet': layout['subnet'], 'fleet_outsider': layout['outsider']['address'],
                 'fleet_outsider_netns': layout['outsider']['netns']},
        'children': {
            'controller': {'hosts': {'cm4-controller': {
                'ansible_connection': 'local',
                'ansible_python_interpreter': sys.executable}}},
            'nodes': {
                'vars': {
                    'ansible_user': 'root',
                    'ansible_python_interpreter': '/usr/bin/python3',
                    'ansible_ssh_private_key_file': layout['key'],
                    'ansible_ssh_common_args': (
                        f'-o UserKnownHostsFile={layout["known_hosts"]} '
                        '-o StrictHostKeyChecking=yes -o ConnectTimeout=5 '
                        # a node that drops off the switch is reported unreachable, not waited on
                        '-o ServerAliveInterval=5 -o ServerAliveCountMax=3'),
                    'hat_controller': 'cm4-controller'},
                'hosts': nodes}}}}
    try:
        import yaml
        text = yaml.safe_dump(inventory, sort_keys=False, default_flow_style=False)
    except ImportError:  # JSON is YAML as well
        text = json.dumps(inventory, indent=2) + '\n'
    Path(layout['inventory']).write_text('---\n# Written by python -m fleet create\n' + text)


def create(directory, prefix, subnet, count=4, disk_size=2 << 30, cache=None) -> dict:
    layout = plan(directory, prefix, subnet, count, disk_size)
    directory = Path(layout['dir'])
    directory.mkdir(parents=True, exist_ok=True)
    cleanup(layout)
    base = rootfs.ensure(Path(cache) if cache else DEFAULT_CACHE)
    started = time.monotonic()
    state = dict(layout, base=str(base), pids={})
    try:
        _network(layout)
        state['pids']['proxy'] = _start_proxy(layout, directory)
        run('ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', f'fleet-{prefix}',
            '-f', layout['key'])
        pubkey = Path(layout['key'] + '.pub').read_text()
        known = ''
        (directory / 'disks').mkdir(exist_ok=True)
        for node in layout['nodes']:
            with open(node['disk'], 'wb') as f:
                f.truncate(disk_size)
            node['loop'] = run('losetup', '--find', '--show', node['disk'], capture=True).strip()
            _boot(node, base)
            known += _node_files(layout, node, pubkey)
        Path(layout['known_hosts']).write_text(known)
        for node in layout['nodes']:
            state['pids'][node['name']] = _start(node)
        Path(directory / STATE).write_text(json.dumps(state, indent=1) + '\n')
        deadline = time.monotonic() + 120
        for node in layout['nodes']:
            _wait_ssh(layout, node, deadline)
        write_inventory(layout)
    except BaseException:
        Path(directory / STATE).write_text(json.dumps(state, indent=1) + '\n')
        raise
    log(f'{count} nodes up in {time.monotonic() - started:.1f} s; inventory {layout["inventory"]}')
    return state


def load(directory) -> dict:
    path = Path(directory).resolve() / STATE
    if not path.exists():
        raise FleetError(f'{path}: no fleet here (run create first)')
    return json.loads(path.read_text())


def destroy(directory, prefix=None) -> None:
    directory = Path(directory).resolve()
    try:
        state = load(directory)
    except FleetError:
        if not prefix:
            raise
        state = plan(directory, prefix, '10.0.0.0/24', 4, 0)
    if prefix and prefix != state['prefix']:
        raise FleetError(f'{directory} holds prefix {state["prefix"]}, not {prefix}')
    cleanup(state)
    log(f'fleet {state["prefix"]} removed')


def status(directory) -> dict:
    state = load(directory)
    out = {'prefix': state['prefix'], 'subnet': state['subnet'], 'inventory': state['inventory'],
           'nodes': []}
    for node in state['nodes']:
        pid = state.get('pids', {}).get(node['name'])
        alive = bool(pid) and f'--machine={node["machine"]}' in _cmdline(pid)
        with socket.socket() as s:
            s.settimeout(1)
            ssh = s.connect_ex((node['address'], 22)) == 0
        out['nodes'].append({'name': node['name'], 'address': node['address'],
                             'running': alive, 'ssh': ssh, 'loop': node.get('loop'),
                             'disk': node['disk'], 'by_id': node['by_id']})
    return out
