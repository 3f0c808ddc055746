# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A node's data disk: find it by stable identity, describe it, and judge whose data it holds.

The probes (blkid, partx) read the disk itself, never the kernel's partition list, so a disk
reads the same with or without a partition-table parser or udev. Nothing here writes.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import stat

BY_ID = '/dev/disk/by-id'
# udev makes nvme-<model>_<serial> plus nvme-eui.<id> / nvme-nvme.<id> aliases of the same disk.
ALIAS_RE = re.compile(r'^nvme-(eui|nvme)\.')
PART_RE = re.compile(r'-part\d+$')
EDGE = 1 << 20  # bytes at each end of the disk that must read zero for it to count as blank


class DiskError(Exception):
    pass


def candidates(by_id_dir=BY_ID):
    """by-id names of whole NVMe disks, one per disk, the model_serial name preferred."""
    seen = {}
    for path in sorted(glob.glob(os.path.join(by_id_dir, 'nvme-*'))):
        name = os.path.basename(path)
        if PART_RE.search(name):
            continue
        real = os.path.realpath(path)
        if real not in seen or ALIAS_RE.match(os.path.basename(seen[real])):
            seen[real] = path
    return sorted(seen.values())


def find(device=None, by_id_dir=BY_ID):
    """The data disk's stable path: the one given (which must exist) or the only NVMe disk."""
    if device:
        if not os.path.exists(device):
            raise DiskError(f'data disk {device} does not exist; check nvme_device (a '
                            f'/dev/disk/by-id path of this node\'s NVMe)')
        return device
    found = candidates(by_id_dir)
    if not found:
        raise DiskError(f'no NVMe disk under {by_id_dir}; fit one or set nvme_device')
    if len(found) > 1:
        raise DiskError(f'{len(found)} NVMe disks ({", ".join(found)}); set nvme_device to the '
                        f'data disk')
    return found[0]


def whole_disk(device):
    """(kernel device path, its sysfs directory, size in bytes) of a whole disk, or DiskError."""
    path = os.path.realpath(device)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DiskError(f'data disk {device}: {exc.strerror}') from None
    if not stat.S_ISBLK(st.st_mode):
        raise DiskError(f'data disk {device} ({path}) is not a block device; check nvme_device')
    sysdir = f'/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}'
    if os.path.exists(os.path.join(sysdir, 'partition')):
        raise DiskError(f'{device} ({path}) is a partition; nvme_device names the whole disk')
    try:
        with open(path, 'rb') as f:
            size = f.seek(0, os.SEEK_END)
    except OSError as exc:
        raise DiskError(f'data disk {device} ({path}) cannot be read: {exc.strerror}') from None
    return path, sysdir, size


def model_serial(by_id_path, sysdir):
    """Model and serial from sysfs (as the kernel reads them), else from the by-id name."""
    values = {}
    for key in ('model', 'serial'):
        for path in (os.path.join(sysdir, 'device', key), os.path.join(sysdir, 'device/device', key)):
            try:
                with open(path) as f:
                    values[key] = f.read().strip()
                break
            except OSError:
                continue
    if len(values) < 2:
        name = os.path.basename(by_id_path)
        if name.startswith('nvme-') and not ALIAS_RE.match(name) and '_' in name:
            model, serial = name[5:].rsplit('_', 1)
            values.setdefault('model', model.replace('_', ' '))
            values.setdefault('serial', serial)
    return values.get('model'), values.get('serial')


def parse_pairs(text):
    """Lines of KEY="value" pairs (blkid -o export is KEY=value, partx -P quotes) to dicts."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        row = {}
        for token in shlex.split(line):
            key, _sep, value = token.partition('=')
            row[key] = value
        rows.append(row)
    return rows


def parse_export(text):
    """blkid -o export output (one KEY=value per line) to one dict."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition('=')
        if sep:
            out[key.strip()] = value.strip()
    return out


def classify(table, partitions, whole, edges_zero, partition_name, fstype, label):
    """Judge the disk: ('blank'|'own'|'foreign', reason).

    table        partition table type on the disk (gpt, dos) or None
    partitions   [{'number', 'name', 'fstype', 'label'}] read from the table
    whole        {'TYPE', 'LABEL'} of a filesystem or other signature on the whole disk, or {}
    edges_zero   True when the first and last MiB read zero
    """
    if whole.get('TYPE'):
        what = whole['TYPE'] + (f" labelled '{whole['LABEL']}'" if whole.get('LABEL') else '')
        return 'foreign', f'holds a {what} on the whole disk'
    if table is None:
        if edges_zero:
            return 'blank', 'no partition table, no signature, first and last MiB zero'
        return 'foreign', 'holds data of an unknown kind (no partition table, first or last MiB not zero)'
    if not partitions:
        return 'blank', f'an empty {table} partition table'
    if table != 'gpt':
        return 'foreign', f'holds a {table} partition table with {len(partitions)} partition(s)'
    if len(partitions) > 1:
        return 'foreign', f'holds a GPT with {len(partitions)} partitions'
    part = partitions[0]
    if part.get('name') != partition_name:
        return 'foreign', f"holds a GPT partition named '{part.get('name') or ''}', not '{partition_name}'"
    if part.get('fstype') and (part['fstype'] != fstype or (part.get('label') or '') != label):
        return 'foreign', (f"its partition '{partition_name}' holds {part['fstype']} labelled "
                           f"'{part.get('label') or ''}', not {fstype} labelled '{label}'")
    return 'own', f"GPT partition '{partition_name}'" + (
        f" with {fstype} '{label}'" if part.get('fstype') else ' without a filesystem yet')


def part_path(disk_path, number):
    """/dev/disk/by-id/X -> X-partN; /dev/nvme0n1 -> /dev/nvme0n1pN; /dev/sda -> /dev/sda1."""
    if disk_path.startswith(BY_ID + '/'):
        return f'{disk_path}-part{number}'
    return f'{disk_path}{"p" if disk_path[-1].isdigit() else ""}{number}'
