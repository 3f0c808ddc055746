# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shared, read-only root filesystem of the test nodes, built once per set of inputs.

The base is a debootstrapped Debian (minbase plus what every node runs) with the node-side helper
that stands in for udev's disk links. Its directory name carries a hash of everything that goes
into it, so a change of inputs builds a new base and an unchanged one is reused.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SUITE = 'bookworm'
VARIANT = 'minbase'
# What a flashed Raspberry Pi OS Lite node already has that the roles rely on.
INCLUDE = ('systemd', 'systemd-sysv', 'dbus', 'openssh-server', 'python3', 'iproute2',
           'ca-certificates', 'procps', 'kmod', 'parted', 'python3-apt')
# Units that cannot work in a container on this kernel and only fail noisily.
MASK = ('run-rpc_pipefs.mount', 'systemd-udevd.service', 'systemd-udevd-control.socket',
        'systemd-udevd-kernel.socket', 'getty@.service', 'console-getty.service',
        'systemd-timesyncd.service', 'apt-daily.timer', 'apt-daily-upgrade.timer')

HERE = Path(__file__).resolve().parent
DISKLINKS = HERE / 'disklinks.py'


def host_mirror() -> str:
    """The Debian mirror the machine itself uses (first deb822 URI), deb.debian.org otherwise."""
    for path in sorted(Path('/etc/apt/sources.list.d').glob('*.sources')):
        for line in path.read_text().splitlines():
            if line.startswith('URIs:') and 'security' not in line:
                return line.split()[1]
    return 'http://deb.debian.org/debian'


def inputs(mirror: str) -> dict:
    return {
        'suite': SUITE, 'variant': VARIANT, 'include': list(INCLUDE), 'mask': list(MASK),
        'mirror': mirror, 'disklinks': hashlib.sha256(DISKLINKS.read_bytes()).hexdigest(),
        'setup': hashlib.sha256(inspect.getsource(_configure).encode()).hexdigest(),
    }


def key_of(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def log(msg: str) -> None:
    print(f'fleet: {msg}', file=sys.stderr, flush=True)


def ensure(cache: Path, mirror: str | None = None) -> Path:
    """Return the base root for the current inputs, building it under `cache` if needed."""
    mirror = mirror or host_mirror()
    spec = inputs(mirror)
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / f'rootfs-{key_of(spec)}'
    if (final / '.fleet-complete').exists():
        return final
    with open(cache / 'rootfs.lock', 'w') as lock:
        # Two scenarios started at once build it once.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / '.fleet-complete').exists():
            return final
        work = cache / f'rootfs-{key_of(spec)}.partial'
        if work.exists():
            _remove(work)
        started = time.monotonic()
        log(f'building the node root filesystem ({SUITE} {VARIANT}) in {work}')
        subprocess.run(
            ['debootstrap', f'--variant={VARIANT}', f'--include={",".join(INCLUDE)}', SUITE,
             str(work), mirror],
            check=True, stdout=subprocess.DEVNULL)
        _configure(work)
        (work / '.fleet-complete').write_text(json.dumps(spec, indent=1) + '\n')
        if final.exists():
            _remove(final)
        work.rename(final)
        log(f'root filesystem ready in {time.monotonic() - started:.0f} s')
        mounts = Path('/proc/self/mountinfo').read_text()
        for old in cache.glob('rootfs-*'):
            # An older base still under a running node's overlay stays until a later build.
            if old != final and old.is_dir() and f'lowerdir={old}' not in mounts:
                _remove(old)
    return final


def _remove(tree: Path) -> None:
    """Delete a (partial) root, first unmounting what an interrupted debootstrap left in it."""
    inside = str(tree.resolve()) + '/'
    points = [line.split()[4] for line in Path('/proc/self/mountinfo').read_text().splitlines()]
    for point in sorted((p for p in points if p.startswith(inside)), key=len, reverse=True):
        if subprocess.run(['umount', point], check=False).returncode:
            subprocess.run(['umount', '-l', point], check=False)
    shutil.rmtree(tree)


def _configure(root: Path) -> None:
    # Host keys are made per node at create time; a shared base must not carry any.
    for key in (root / 'etc/ssh').glob('ssh_host_*'):
        key.unlink()
    (root / 'etc/ssh/sshd_config.d').mkdir(exist_ok=True)
    (root / 'etc/ssh/sshd_config.d/fleet.conf').write_text(
        'PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n')
    (root / 'usr/local/sbin').mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DISKLINKS, root / 'usr/local/sbin/fleet-disklinks')
    os.chmod(root / 'usr/local/sbin/fleet-disklinks', 0o755)
    (root / 'etc/systemd/system/fleet-disklinks.service').write_text(
        '[Unit]\n'
        'Description=Device nodes and /dev/disk links of the data disk (no udev in a container)\n'
        'DefaultDependencies=no\n'
        'Before=local-fs-pre.target sysinit.target\n'
        'ConditionPathExists=/etc/fleet/disk.json\n\n'
        '[Service]\n'
        'ExecStart=/usr/bin/python3 /usr/local/sbin/fleet-disklinks\n'
        'Restart=always\n\n'
        '[Install]\n'
        'WantedBy=sysinit.target\n')
    wants = root / 'etc/systemd/system/sysinit.target.wants'
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / 'fleet-disklinks.service'
    if not link.is_symlink():
        link.symlink_to('/etc/systemd/system/fleet-disklinks.service')
    for unit in MASK:
        target = root / 'etc/systemd/system' / unit
        if target.exists() or target.is_symlink():
            target.unlink()
        target.symlink_to('/dev/null')
    # apt inside a node goes through the proxy on the bridge; keep its downloads small.
    (root / 'etc/apt/apt.conf.d/90fleet-norecommends').write_text(
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n')
    (root / 'etc/machine-id').write_text('')
    subprocess.run(['chroot', str(root), 'apt-get', 'clean'], check=True)
