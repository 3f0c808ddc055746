# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""node_flash with method network against the simulated hat, as a play runs it: check mode, the
flash, the records method usb reads, and a rerun with method usb that has nothing to do."""

from __future__ import annotations

import shutil

import pytest
from netflash_helpers import free_port

import moduletest
from hatsim import bootlog
from hatsim.testing import running_hat

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in ('mcopy', 'mtype', 'mkfs.vfat', 'sfdisk',
                                                                      'mke2fs', 'bmaptool', 'xz', 'dpkg-deb')),
                                reason='needs mtools, dosfstools, fdisk, e2fsprogs, bmap-tools, xz and dpkg-deb')


def test_node_flash_method_network(tmp_path, cm4_payload, node_image):
    image = node_image
    bootfiles = tmp_path / 'bootfiles.bin'
    bootfiles.write_bytes(b'usbboot second stage stand-in\n')
    with running_hat(tmp_path / 'hat', emmc_size='64M', disk_delay=0.3, rpiboot_timeout=2, boot_delay=0.1) as hat:
        args = dict(nodes=[1, 3], image=image + '.xz', bmap=image + '.bmap', rpiboot=hat.rpiboot,
                    rpiboot_payload=hat.path('usbboot', 'mass-storage-gadget64'), root=hat.dir, port=hat.rp2040,
                    lock_dir=hat.path('lock'), state_dir=hat.path('state'), stagger=0.02, restart_delay=0.1,
                    rpiboot_timeout=10, disk_timeout=5, boot_timeout=20, method='network',
                    network=dict(interface='lo', server_address='127.0.0.1', server_port=free_port(),
                                 node_addresses={'1': '127.0.1.1/8', '3': '127.0.1.3/8'},
                                 serials={'node1': bootlog.SERIALS[1], '3': bootlog.SERIALS[3]},
                                 payload=cm4_payload, bootfiles=str(bootfiles), timeout=60))
        check = moduletest.run_module('node_flash', args, tmp_path, check_mode=True, diff=True)
        assert check['changed'] and [n['action'] for n in check['nodes']] == ['would flash'] * 2, check
        done = moduletest.run_module('node_flash', args, tmp_path, diff=True)
        assert not done.get('failed'), done.get('msg')
        assert [(n['node'], n['action']) for n in done['nodes']] == [(1, 'flashed'), (3, 'flashed')]
        assert all(n['record']['verified'] for n in done['nodes'])
        state = hat.state()['nodes']
        assert state['2']['en'] is False and state['4']['en'] is False
        # The records are method usb's too: it finds nothing to do and touches nothing.
        before = hat.state()['rp2040']['log_total']
        usb = dict(args, method='usb')
        usb.pop('network')
        again = moduletest.run_module('node_flash', usb, tmp_path)
        assert not again['changed'] and [n['action'] for n in again['nodes']] == ['unchanged'] * 2, again
        assert hat.state()['rp2040']['log_total'] == before
        bad = moduletest.run_module('node_flash', dict(args, network=dict(args['network'], server_address='192.0.2.7')),
                                    tmp_path)
        assert bad['failed'] and 'not on the hat interface lo' in bad['msg']
        port = moduletest.run_module('node_flash', dict(args, network=dict(args['network'], server_port=70000)), tmp_path)
        assert port['failed'] and 'network.server_port must be' in port['msg']
        assert hat.state()['rp2040']['log_total'] == before
