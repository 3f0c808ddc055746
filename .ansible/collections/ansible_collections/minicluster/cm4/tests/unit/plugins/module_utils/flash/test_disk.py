# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.flash import disk
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.disk import DiskError
from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.flash.fake_sysfs import FakeRoot


@pytest.fixture
def fake(tmp_path):
    return FakeRoot(tmp_path / 'root')


def with_decoys(fake):
    """Every disk that must never be taken for node 1's (USB path 1-1.2.1)."""
    fake.controller_mmc()
    fake.loop()
    fake.usb_disk('1-1.2.2', name='sdb')             # another node
    fake.usb_disk('1-1.2.10', name='sdc')            # a prefix of the right string
    parent = os.path.realpath(fake.p('sys/bus/usb/devices/1-1.2.2'))
    fake.usb_disk('1-1.2.2.4', parent=parent, name='sdd')  # a USB stick behind another node's port
    return fake


def test_finds_the_node_disk_and_cross_checks_it(fake):
    with_decoys(fake)
    fake.usb_disk('1-1.2.1', name='sde', size=32 * 1024 * 1024)
    info = disk.probe('1-1.2.1', fake.root)
    assert info.name == 'sde'
    assert info.path == fake.p('dev', 'sde')
    assert info.size == 32 * 1024 * 1024
    assert info.model == 'mmcblk0'
    assert '/1-1.2.1/1-1.2.1:1.0/' in info.sysfs
    assert info.by_path.endswith('-usb-0:1.2.1:1.0-scsi-0:0:0:0')
    assert disk.still_there(info, fake.root)


def test_no_disk_at_the_node_path_means_none_whatever_else_exists(fake):
    with_decoys(fake)
    fake.usb_device('1-1.2.1')
    assert disk.probe('1-1.2.1', fake.root) is None
    assert disk.probe('1-1.2.3', fake.root) is None


def test_prefix_of_a_path_never_matches(fake):
    fake.usb_disk('1-1.2.10', name='sda')
    assert disk.probe('1-1.2.1', fake.root) is None
    assert disk.probe('1-1.2.10', fake.root).name == 'sda'


def test_device_behind_a_hub_on_the_node_port_is_not_the_node(fake):
    node = fake.usb_device('1-1.2.1')
    fake.usb_disk('1-1.2.1.4', parent=node, name='sda')
    assert disk.probe('1-1.2.1', fake.root) is None
    assert disk.probe('1-1.2.1.4', fake.root).name == 'sda'


def test_legacy_msd_vendor_is_accepted(fake):
    fake.usb_disk('1-1.2.3', model='', vendor='RPi-MSD-', name='sda')
    assert disk.probe('1-1.2.3', fake.root).vendor == 'RPi-MSD-'


def test_foreign_usb_disk_on_the_node_port_is_refused(fake):
    fake.usb_disk('1-1.2.1', model='Cruzer Blade', vendor='SanDisk', name='sda')
    with pytest.raises(DiskError, match=r"disk sda at USB path 1-1.2.1 reports vendor 'SanDisk' model 'Cruzer Blade'"):
        disk.probe('1-1.2.1', fake.root)


def test_non_storage_interface_is_ignored(fake):
    fake.usb_disk('1-1.2.1', iface_class='02', name='sda')
    assert disk.probe('1-1.2.1', fake.root) is None


def test_two_disks_on_one_node_are_refused(fake):
    fake.usb_disk('1-1.2.1', name='sda')
    fake.usb_disk('1-1.2.1', name='sdb', interface='1.1')
    with pytest.raises(DiskError, match='presents 2 disks'):
        disk.probe('1-1.2.1', fake.root)


def test_block_class_pointing_elsewhere_is_refused(fake):
    fake.usb_disk('1-1.2.1', name='sda')
    fake.controller_mmc()
    os.unlink(fake.p('sys/block/sda'))
    os.symlink(os.path.realpath(fake.p('sys/block/mmcblk0')), fake.p('sys/block/sda'))
    with pytest.raises(DiskError, match='not to the disk below the USB device'):
        disk.probe('1-1.2.1', fake.root)


def test_partition_is_refused(fake):
    fake.usb_disk('1-1.2.1', name='sda')
    with open(os.path.join(os.path.realpath(fake.p('sys/block/sda')), 'partition'), 'w') as f:
        f.write('1\n')
    with pytest.raises(DiskError, match='partition'):
        disk.probe('1-1.2.1', fake.root)


def test_size_mismatch_between_sysfs_and_dev_is_refused(fake):
    fake.usb_disk('1-1.2.1', name='sda', size=8 * 1024 * 1024)
    with open(fake.p('dev/sda'), 'r+b') as f:
        f.truncate(4 * 1024 * 1024)
    with pytest.raises(DiskError, match='holds 4194304 bytes but sysfs says 8388608'):
        disk.probe('1-1.2.1', fake.root)


def test_dev_entry_that_is_not_a_disk_is_refused(fake):
    fake.usb_disk('1-1.2.1', name='sda', dev_file=False)
    os.symlink('/dev/null', fake.p('dev/sda'))
    with pytest.raises(DiskError, match='is not a block device'):
        disk.probe('1-1.2.1', fake.root)


def test_by_path_link_to_another_disk_is_refused(fake):
    fake.usb_disk('1-1.2.1', name='sda', by_path=False)
    fake.loop()
    os.symlink('../../loop0', fake.p('dev/disk/by-path/platform-x-usb-0:1.2.1:1.0-scsi-0:0:0:0'))
    with pytest.raises(DiskError, match='by-path'):
        disk.probe('1-1.2.1', fake.root)


def test_read_only_disk_is_refused(fake):
    fake.usb_disk('1-1.2.1', name='sda', ro='1')
    with pytest.raises(DiskError, match='read-only'):
        disk.probe('1-1.2.1', fake.root)


def test_empty_medium_and_missing_dev_node_are_not_there_yet(fake):
    fake.usb_disk('1-1.2.1', name='sda', size=0, dev_file=False)
    assert disk.probe('1-1.2.1', fake.root) is None
    fake.usb_disk('1-1.2.2', name='sdb', dev_file=False)
    assert disk.probe('1-1.2.2', fake.root) is None


@pytest.mark.parametrize('bad', ['sda', '/dev/sda', '1-1.2.1/../1-1.2.2', '1-1.2.1:1.0', '', None])
def test_bad_usb_path_is_refused(fake, bad):
    with pytest.raises(DiskError, match='is not a sysfs USB device name'):
        disk.probe(bad, fake.root)


def test_wait_for_disk_polls_until_it_appears(fake):
    with_decoys(fake)
    now = [0.0]
    rounds = []

    def sleep(seconds):
        rounds.append(seconds)
        now[0] += seconds
        if len(rounds) == 3:
            fake.usb_disk('1-1.2.1', name='sdz')

    info = disk.wait_for_disk('1-1.2.1', fake.root, timeout=10, interval=0.5, clock=lambda: now[0], sleep=sleep)
    assert info.name == 'sdz'
    assert rounds == [0.5, 0.5, 0.5]


def test_wait_for_disk_times_out_with_a_reason(fake):
    with_decoys(fake)
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    with pytest.raises(DiskError, match=r'no USB device at 1-1.2.1 after 2s'):
        disk.wait_for_disk('1-1.2.1', fake.root, timeout=2, clock=lambda: now[0], sleep=sleep)
    fake.usb_device('1-1.2.1')
    with pytest.raises(DiskError, match=r'USB device 1-1.2.1 shows no eMMC disk after 2s'):
        disk.wait_for_disk('1-1.2.1', fake.root, timeout=2, clock=lambda: now[0], sleep=sleep)


def test_wait_for_disk_gives_up_early(fake):
    with pytest.raises(DiskError, match='gave up'):
        disk.wait_for_disk('1-1.2.1', fake.root, timeout=100, give_up=lambda: True, sleep=lambda s: None)


def test_still_there_turns_false_when_unplugged(fake):
    name = fake.usb_disk('1-1.2.4', name='sda')
    info = disk.probe('1-1.2.4', fake.root)
    assert disk.still_there(info, fake.root)
    fake.unplug('1-1.2.4', name)
    assert not disk.still_there(info, fake.root)
