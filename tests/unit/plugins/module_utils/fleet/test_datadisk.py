# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.fleet import datadisk

OURS = dict(partition_name='minicluster-data', fstype='ext4', label='cm4data')


def judge(table=None, partitions=(), whole=None, edges_zero=True):
    return datadisk.classify(table, list(partitions), whole or {}, edges_zero, **OURS)


def test_a_factory_fresh_disk_is_blank():
    assert judge()[0] == 'blank'


def test_an_empty_gpt_is_blank():
    assert judge('gpt')[0] == 'blank'


def test_unknown_bytes_at_the_start_are_foreign():
    state, reason = judge(edges_zero=False)
    assert state == 'foreign' and 'unknown' in reason


def test_a_whole_disk_filesystem_is_foreign_and_named():
    state, reason = judge(whole={'TYPE': 'ext4', 'LABEL': 'photos'})
    assert state == 'foreign' and "ext4 labelled 'photos'" in reason


def test_a_dos_table_is_foreign():
    assert judge('dos', [{'number': 1, 'name': None, 'fstype': 'vfat'}])[0] == 'foreign'


def test_someone_elses_gpt_partition_is_foreign():
    state, reason = judge('gpt', [{'number': 1, 'name': 'Linux filesystem', 'fstype': 'ext4', 'label': 'x'}])
    assert state == 'foreign' and 'Linux filesystem' in reason


def test_two_partitions_are_foreign_even_if_one_is_ours():
    parts = [{'number': 1, 'name': 'minicluster-data'}, {'number': 2, 'name': 'minicluster-data'}]
    assert judge('gpt', parts)[0] == 'foreign'


def test_our_partition_with_our_filesystem_is_own():
    assert judge('gpt', [{'number': 1, 'name': 'minicluster-data', 'fstype': 'ext4', 'label': 'cm4data'}])[0] == 'own'


def test_our_partition_still_without_filesystem_is_own():
    assert judge('gpt', [{'number': 1, 'name': 'minicluster-data', 'fstype': None}])[0] == 'own'


@pytest.mark.parametrize('fstype, label', [('xfs', 'cm4data'), ('ext4', 'other')])
def test_our_partition_with_another_filesystem_is_foreign(fstype, label):
    assert judge('gpt', [{'number': 1, 'name': 'minicluster-data', 'fstype': fstype, 'label': label}])[0] == 'foreign'


def test_partx_pairs_keep_spaces_in_names():
    rows = datadisk.parse_pairs('NR="1" START="2048" SECTORS="4192223" NAME="Linux filesystem"\n')
    assert rows == [{'NR': '1', 'START': '2048', 'SECTORS': '4192223', 'NAME': 'Linux filesystem'}]


def test_blkid_export():
    assert datadisk.parse_export('UUID=ab-cd\nTYPE=ext4\nLABEL=x y\n') == {'UUID': 'ab-cd', 'TYPE': 'ext4', 'LABEL': 'x y'}


@pytest.mark.parametrize('disk, part', [
    ('/dev/disk/by-id/nvme-A_B', '/dev/disk/by-id/nvme-A_B-part1'),
    ('/dev/nvme0n1', '/dev/nvme0n1p1'),
    ('/dev/sda', '/dev/sda1'),
])
def test_partition_paths(disk, part):
    assert datadisk.part_path(disk, 1) == part


@pytest.fixture
def by_id(tmp_path):
    (tmp_path / 'nvme0n1').touch()
    (tmp_path / 'nvme1n1').touch()
    d = tmp_path / 'by-id'
    d.mkdir()
    return tmp_path, d


def test_one_disk_is_found_once_under_its_model_serial_name(by_id):
    root, d = by_id
    for name, target in [('nvme-eui.0025388b', 'nvme0n1'), ('nvme-Samsung_SSD_980_S64D', 'nvme0n1'),
                         ('nvme-Samsung_SSD_980_S64D-part1', 'nvme0n1')]:
        os.symlink(root / target, d / name)
    assert datadisk.find(by_id_dir=str(d)) == str(d / 'nvme-Samsung_SSD_980_S64D')


def test_two_disks_need_a_choice(by_id):
    root, d = by_id
    os.symlink(root / 'nvme0n1', d / 'nvme-A_1')
    os.symlink(root / 'nvme1n1', d / 'nvme-B_2')
    with pytest.raises(datadisk.DiskError, match='2 NVMe disks.*set nvme_device'):
        datadisk.find(by_id_dir=str(d))


def test_no_disk_and_a_missing_path_are_errors(by_id):
    dummy, d = by_id
    with pytest.raises(datadisk.DiskError, match='no NVMe disk'):
        datadisk.find(by_id_dir=str(d))
    with pytest.raises(datadisk.DiskError, match='/dev/disk/by-id/nvme-X does not exist'):
        datadisk.find('/dev/disk/by-id/nvme-X', by_id_dir=str(d))


def test_model_and_serial_fall_back_to_the_by_id_name(tmp_path):
    assert datadisk.model_serial('/dev/disk/by-id/nvme-Fleet_NVMe_Disk_FL0001', str(tmp_path)) == \
        ('Fleet NVMe Disk', 'FL0001')
    dev = tmp_path / 'device'
    dev.mkdir()
    (dev / 'model').write_text('Samsung SSD 980 500GB  \n')
    (dev / 'serial').write_text('S64DNF0R123456\n')
    assert datadisk.model_serial('/dev/nvme0n1', str(tmp_path)) == ('Samsung SSD 980 500GB', 'S64DNF0R123456')


def test_a_regular_file_is_not_a_disk(tmp_path):
    f = tmp_path / 'disk.img'
    f.write_bytes(b'\0' * 4096)
    with pytest.raises(datadisk.DiskError, match='is not a block device; check nvme_device'):
        datadisk.whole_disk(str(f))
