# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Method network against the simulated hat: the real payload and boot.img, the real server on
loopback, the simulator's rpiboot and its stand-in of the agent (hatsim.netflash_node)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket

import pytest
from netflash_helpers import free_port

from hatsim import bootlog
from hatsim.testing import running_hat

from ansible_collections.minicluster.cm4.plugins.module_utils.board.hat import Hat
from ansible_collections.minicluster.cm4.plugins.module_utils.flash import pipeline
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.network import NetworkReflash
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.record import FlashRecords
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.reflash import ReflashError

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in ('mcopy', 'mtype', 'mkfs.vfat', 'sfdisk',
                                                                      'mke2fs', 'bmaptool', 'xz', 'dpkg-deb')),
                                reason='needs mtools, dosfstools, fdisk, e2fsprogs, bmap-tools, xz and dpkg-deb')
NODES = [1, 2, 3, 4]
PATTERN = b'\xa5\x5a' * 2048


@pytest.fixture
def image(node_image):
    return node_image


@pytest.fixture
def hat(tmp_path):
    with running_hat(tmp_path / 'hat', emmc_size='64M', disk_delay=0.3, rpiboot_timeout=2, boot_delay=0.1) as h:
        yield h


def prefill(hat):
    """The eMMCs' old contents: a pattern, so that bytes the flash must not touch can be told apart."""
    for n in NODES:
        with open(hat.emmc(n), 'r+b') as f:
            size = os.fstat(f.fileno()).st_size
            f.write((PATTERN * (size // len(PATTERN) + 1))[:size])


def reflash(hat, image, payload_dir, tmp_path, nodes=tuple(NODES), check_mode=False, **net):
    bootfiles = tmp_path / 'bootfiles.bin'
    bootfiles.write_bytes(b'usbboot second stage stand-in\n')
    network = dict(interface='lo', server_address='127.0.0.1', server_port=net.pop('port', None) or free_port(),
                   node_addresses=dict((n, '127.0.1.%d/8' % n) for n in NODES),
                   serials=dict(bootlog.SERIALS), payload=payload_dir, bootfiles=str(bootfiles), timeout=60)
    network.update(net)
    job = NetworkReflash(
        nodes, image + '.xz', network,
        hat_factory=lambda: Hat(hat.rp2040, lock_dir=hat.path('lock'), state_dir=hat.path('state'), restart_delay=0.1),
        records=FlashRecords(hat.path('state')), flash_fn=pipeline.flash, identity_fn=pipeline.image_identity,
        bmap=image + '.bmap', usb_paths=dict((int(n), v['usb_path']) for n, v in hat.state()['nodes'].items()),
        rpiboot=hat.rpiboot, rpiboot_payload=hat.path('usbboot', 'mass-storage-gadget64'),
        root=hat.dir, rpiboot_timeout=10, disk_timeout=5, boot_timeout=20, stagger=0.02, restart_delay=0.1,
        check_mode=check_mode)
    job.run()
    return job


def mapped(image):
    from ansible_collections.minicluster.cm4.plugins.module_utils.flash.bmap import parse_bmap
    return list(parse_bmap(image + '.bmap').byte_ranges())


def pins(hat):
    return dict((int(k), v) for k, v in hat.state()['nodes'].items())


def test_network_flash_records_and_idempotence(hat, image, cm4_payload, tmp_path):
    prefill(hat)
    job = reflash(hat, image, cm4_payload, tmp_path)
    assert [j.error for j in job.jobs.values() if j.failed] == []
    with open(image, 'rb') as f:
        raw = f.read()
    for n in NODES:
        with open(hat.emmc(n), 'rb') as f:
            emmc = f.read()
        for start, end, digest in mapped(image):
            assert emmc[start:end] == raw[start:end]
        # What the bmap leaves out keeps the old pattern: only the plan was written.
        old = PATTERN * (len(emmc) // len(PATTERN) + 1)
        ranges = mapped(image)
        gaps = [(a[1], b[0]) for a, b in zip(ranges, ranges[1:]) if b[0] > a[1]] + [(ranges[-1][1], len(emmc))]
        assert gaps
        for start, end in gaps:
            assert emmc[start:end] == old[start:end], 'node %d bytes %d-%d written' % (n, start, end)
        assert job.jobs[n].action == 'flashed' and job.jobs[n].booted
        rec = job.records.load(n)
        content = hashlib.sha256(b''.join(raw[s:e] for s, e, digest in mapped(image))).hexdigest()
        assert rec['content_digest'] == content and rec['verified'] is True
    p = pins(hat)
    assert all(p[n]['en'] and p[n]['nrpiboot'] for n in NODES)
    # The USB method's record is the same: a second run (either method) has nothing to do.
    before = hat.state()['rp2040']['log_total']
    again = reflash(hat, image, cm4_payload, tmp_path)
    assert [j.action for j in again.jobs.values()] == ['none'] * 4
    assert hat.state()['rp2040']['log_total'] == before


def test_wrong_serial_fails_closed_with_way_out(hat, image, cm4_payload, tmp_path):
    serials = dict(bootlog.SERIALS)
    serials[2] = 'deadbeef'
    job = reflash(hat, image, cm4_payload, tmp_path, nodes=[2], serials=serials)
    j = job.jobs[2]
    assert j.failed and 'no report from serial deadbeef' in j.error
    assert 'asked for a plan as serial %s' % bootlog.SERIALS[2] in j.error
    assert 'method=usb' in j.error
    assert job.records.load(2) is None
    p = pins(hat)[2]
    assert p['en'] is False and p['nrpiboot'] is True


BAD_INPUT = [
    (dict(server_address='192.0.2.1'), 'not on the hat interface lo'),
    (dict(node_addresses={1: '10.9.9.9/24'}), 'not in the subnet'),
    (dict(node_addresses={1: '127.0.0.1/8'}), 'is the controller address itself'),
    (dict(serials={1: 'xyz'}), 'not 8 to 16 hex digits'),
    (dict(serials={}), 'serials has no entry for node 1'),
    (dict(payload='/nonexistent'), 'no usable payload in /nonexistent'),
]


def test_bad_input_is_refused_before_the_hat(hat, image, cm4_payload, tmp_path):
    before = hat.state()['rp2040']['log_total']
    for net, words in BAD_INPUT:
        with pytest.raises(ReflashError, match=words):
            reflash(hat, image, cm4_payload, tmp_path, nodes=[1], **net)
    # A port already in use is found when the server binds, still before any pin moves.
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen(1)
        job = reflash(hat, image, cm4_payload, tmp_path, nodes=[1], port=busy.getsockname()[1])
    assert job.jobs[1].failed and 'already in use' in job.jobs[1].error
    assert hat.state()['rp2040']['log_total'] == before
    assert job.records.load(1) is None
