# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs inside a test node: what udev does for a real node's NVMe disk, for a loop device.

A container has no udev, and this kernel has no partition-table parsers, so the loop device's
partitions exist only as the kernel's loopNpK (added through BLKPG by parted/partx). This keeps
/dev/nvme0n1, /dev/nvme0n1pK, /dev/disk/by-id/nvme-<model>_<serial>[-partK] and
/dev/disk/by-uuid/<uuid> in step with the kernel, as udev's rules do on the board.
"""

import json
import os
import stat
import subprocess
import time

CONF = '/etc/fleet/disk.json'


def devnum(sysdir):
    with open(os.path.join(sysdir, 'dev')) as f:
        major, minor = f.read().strip().split(':')
    return os.makedev(int(major), int(minor))


def node(path, dev):
    try:
        st = os.lstat(path)
        if stat.S_ISBLK(st.st_mode) and st.st_rdev == dev:
            return
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.mknod(path, 0o660 | stat.S_IFBLK, dev)


def link(path, target):
    try:
        if os.readlink(path) == target:
            return
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        os.unlink(path)
    os.symlink(target, path)


def uuid_of(path):
    out = subprocess.run(['blkid', '-p', '-o', 'export', path], capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith('UUID='):
            return line[5:]
    return None


def sweep(directory, keep, prefix):
    for name in os.listdir(directory):
        if name.startswith(prefix) and name not in keep:
            os.unlink(os.path.join(directory, name))


def once(conf):
    loop, name, by_id = conf['loop'], conf['name'], conf['by_id']
    sysdir = os.path.join('/sys/class/block', loop)
    node('/dev/' + name, devnum(sysdir))
    devices = {name: name}
    for entry in sorted(os.listdir(sysdir)):
        if entry.startswith(loop + 'p'):
            part = name + 'p' + entry[len(loop) + 1:]
            node('/dev/' + part, devnum(os.path.join(sysdir, entry)))
            devices[part] = part
    sweep('/dev', devices, name)
    ids = {by_id: '../../' + name}
    uuids = {}
    for dev in devices:
        if dev != name:
            ids[by_id + '-part' + dev[len(name) + 1:]] = '../../' + dev
        uuid = uuid_of('/dev/' + dev)
        if uuid:
            uuids[uuid] = '../../' + dev
    for directory, links, prefix in (('/dev/disk/by-id', ids, by_id),
                                     ('/dev/disk/by-uuid', uuids, '')):
        os.makedirs(directory, exist_ok=True)
        for path, target in links.items():
            link(os.path.join(directory, path), target)
        sweep(directory, links, prefix)


def main():
    with open(CONF) as f:
        conf = json.load(f)
    while True:
        once(conf)
        time.sleep(0.3)


if __name__ == '__main__':
    main()
