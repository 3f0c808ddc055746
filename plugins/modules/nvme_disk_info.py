#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: nvme_disk_info
short_description: Find a node's NVMe data disk by stable identity and say whose data it holds
version_added: 0.2.0
description:
  - Finds the data disk by the path given, or as the only NVMe disk under C(/dev/disk/by-id), and
    reads, without writing, its model, serial, size, health, partition table, partitions and
    filesystems from the disk itself (C(blkid), C(partx)).
  - Judges the disk V(blank) (no partition table or an empty one, no signature, first and last MiB
    zero), V(own) (one GPT partition named O(partition_name), empty or holding O(fstype) labelled
    O(label)), or V(foreign) (anything else), so that a role can refuse to touch someone else's data.
author:
  - minicluster.cm4 developers (@minicluster)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Read-only.
  diff_mode:
    support: N/A
    details: Read-only.
  platform:
    platforms: posix
options:
  device:
    description:
      - Path of the data disk, best a C(/dev/disk/by-id/nvme-<model>_<serial>) link (stable across
        reboots and slots). Unset, the only NVMe disk under C(/dev/disk/by-id) is taken; none or
        several is an error.
    type: path
  partition_name:
    description: GPT partition name that marks the data partition as this collection's.
    type: str
    default: minicluster-data
  fstype:
    description: Filesystem the data partition is meant to hold.
    type: str
    choices: [ext4, xfs]
    default: ext4
  label:
    description: Filesystem label the data partition is meant to carry.
    type: str
    default: cm4data
requirements:
  - util-linux (blkid, partx); smartmontools or nvme-cli for health, where present.
'''

EXAMPLES = r'''
- name: Find the data disk and judge it
  minicluster.cm4.nvme_disk_info:
  register: disk

- name: Stop before touching a disk with someone else's data
  ansible.builtin.fail:
    msg: "{{ disk.device }} {{ disk.reason }}"
  when: disk.state == 'foreign'
'''

RETURN = r'''
device:
  description: The disk's stable path (the by-id link found, or O(device)).
  returned: always
  type: str
  sample: /dev/disk/by-id/nvme-Samsung_SSD_980_500GB_S64DNF0R123456
kernel_device:
  description: The kernel device it resolves to.
  returned: always
  type: str
  sample: /dev/nvme0n1
model:
  description: Model, from sysfs or the by-id name; null when neither says.
  returned: always
  type: str
serial:
  description: Serial number, from sysfs or the by-id name; null when neither says.
  returned: always
  type: str
size_bytes:
  description: Size of the disk in bytes.
  returned: always
  type: int
health:
  description: V(passed) or V(failed) from C(smartctl -H) or C(nvme smart-log), V(unknown) when neither answers.
  returned: always
  type: str
health_source:
  description: The tool that reported RV(health), or why none did.
  returned: always
  type: str
partition_table:
  description: V(gpt), V(dos) or null.
  returned: always
  type: str
partitions:
  description: Partitions read from the table, with what each holds.
  returned: always
  type: list
  elements: dict
  contains:
    number: {description: Partition number., type: int}
    name: {description: GPT partition name., type: str}
    start_bytes: {description: Offset on the disk., type: int}
    size_bytes: {description: Size in bytes., type: int}
    fstype: {description: 'Filesystem found in it, or null.', type: str}
    uuid: {description: 'Filesystem UUID, or null.', type: str}
    label: {description: 'Filesystem label, or null.', type: str}
state:
  description: V(blank), V(own) or V(foreign).
  returned: always
  type: str
reason:
  description: Why RV(state) is what it is, in words.
  returned: always
  type: str
  sample: holds a ext4 labelled 'photos' on the whole disk
partition:
  description: Stable path of the data partition (partition 1), whether it exists yet or not.
  returned: always
  type: str
  sample: /dev/disk/by-id/nvme-Samsung_SSD_980_500GB_S64DNF0R123456-part1
uuid:
  description: Filesystem UUID of the data partition when RV(state=own) and it holds one, else null.
  returned: always
  type: str
'''

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.minicluster.cm4.plugins.module_utils.common import validate
from ansible_collections.minicluster.cm4.plugins.module_utils.fleet import datadisk


def probe(module, args):
    rc, out, dummy = module.run_command(args)
    return datadisk.parse_export(out) if rc == 0 else {}


def edges_zero(path, size):
    with open(path, 'rb') as f:
        if f.read(datadisk.EDGE).strip(b'\0'):
            return False
        f.seek(max(0, size - datadisk.EDGE))
        return not f.read(datadisk.EDGE).strip(b'\0')


def health(module, path):
    smartctl = module.get_bin_path('smartctl')
    if smartctl:
        dummy, out, dummy2 = module.run_command([smartctl, '-H', '-j', path])
        try:
            status = json.loads(out).get('smart_status', {})
            if 'passed' in status:
                return ('passed' if status['passed'] else 'failed'), 'smartctl -H'
        except ValueError:
            pass
    nvme = module.get_bin_path('nvme')
    if nvme:
        rc, out, dummy = module.run_command([nvme, 'smart-log', path, '-o', 'json'])
        try:
            log = json.loads(out) if rc == 0 else None
            if log is not None:
                return ('passed' if not log.get('critical_warning') else 'failed'), 'nvme smart-log'
        except ValueError:
            pass
    if smartctl or nvme:
        return 'unknown', 'the disk did not answer a health query'
    return 'unknown', 'neither smartctl nor nvme-cli is installed'


def main():
    module = validate.ansible_module(
        AnsibleModule,
        argument_spec=dict(
            device=dict(type='path'),
            partition_name=dict(type='str', default='minicluster-data'),
            fstype=dict(type='str', default='ext4', choices=['ext4', 'xfs']),
            label=dict(type='str', default='cm4data'),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        device = datadisk.find(p['device'])
        path, sysdir, size = datadisk.whole_disk(device)
    except datadisk.DiskError as exc:
        module.fail_json(msg=str(exc))
        raise  # not reached: fail_json exits
    model, serial = datadisk.model_serial(device, sysdir)

    blkid = module.get_bin_path('blkid', required=True)
    partx = module.get_bin_path('partx', required=True)
    whole = probe(module, [blkid, '-p', '-o', 'export', path])
    table = whole.pop('PTTYPE', None)
    partitions = []
    if table:
        dummy, out, dummy2 = module.run_command(
            [partx, '--pairs', '--bytes', '-o', 'NR,START,SECTORS,NAME', path], check_rc=True)
        for row in datadisk.parse_pairs(out):
            start = int(row['START']) * 512
            content = probe(module, [blkid, '-p', '-o', 'export', '-O', str(start), path])
            partitions.append({
                'number': int(row['NR']), 'name': row.get('NAME') or None, 'start_bytes': start,
                'size_bytes': int(row['SECTORS']) * 512, 'fstype': content.get('TYPE'),
                'uuid': content.get('UUID'), 'label': content.get('LABEL')})
    elif whole.get('TYPE') is None:
        whole = {}
    state, reason = datadisk.classify(
        table, partitions, whole if 'TYPE' in whole else {},
        edges_zero(path, size) if not table and 'TYPE' not in whole else False,
        p['partition_name'], p['fstype'], p['label'])
    verdict, source = health(module, path)
    uuid = partitions[0]['uuid'] if state == 'own' and partitions else None
    module.exit_json(
        changed=False, device=device, kernel_device=path, model=model, serial=serial, size_bytes=size,
        health=verdict, health_source=source, partition_table=table, partitions=partitions,
        state=state, reason=reason, partition=datadisk.part_path(device, 1), uuid=uuid)


if __name__ == '__main__':
    main()
