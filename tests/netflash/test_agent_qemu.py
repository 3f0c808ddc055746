# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The netflash agent, booted in QEMU from the real payload, against the controller's server.

One guest runs in every `make test` (xz, the common case); the rest are marked `qemu_many` and run
with `make netflash-qemu`: TCG emulation of an arm64 guest on shared cores takes tens of seconds
per boot.
"""

from __future__ import annotations

import hashlib
import os
import socket

import pytest
from netflash_helpers import NEEDS_QEMU, blank_disk
from netflash_qemu import Guest

from ansible_collections.minicluster.cm4.plugins.module_utils.flash.netserver import (
    NetflashRun,
    Plan,
)

BOOT_TIMEOUT = 400
SERIAL = '10000000c0ffee01'


def disk_bytes(path):
    with open(path, 'rb') as f:
        return f.read()


def flash_one(tmp_path, payload, image, compression, serial=SERIAL, image_path=None, plan_serial=None):
    disk = blank_disk(str(tmp_path / 'emmc.img'))
    plan = Plan(plan_serial or serial, '/dev/vda', compression, image.size, image.ranges)
    with NetflashRun('127.0.0.1', 0, [plan], image_path or image.paths[compression]) as run:
        guest = Guest(payload, disk, serial, run.port, str(tmp_path))
        guest.wait(BOOT_TIMEOUT)
        ok, reason, report = run.result(plan.serial)
    return ok, reason, report, disk, guest


def assert_written_exactly(disk, image):
    data = disk_bytes(disk)
    for offset, length, digest in image.ranges:
        assert data[offset:offset + length] == image.raw[offset:offset + length]
    # Between and after the ranges the disk keeps its old pattern: only the plan was written.
    assert data[(512 << 10):(1 << 20)] == b'\xa5' * (512 << 10)
    assert data[image.size:] == b'\xa5' * (len(data) - image.size)


@NEEDS_QEMU
def test_agent_flashes_xz_image_and_verifies(tmp_path, qemu_payload, image):
    ok, reason, report, disk, guest = flash_one(tmp_path, qemu_payload, image, 'xz')
    assert ok, '%s\n%s' % (reason, guest.log()[-3000:])
    assert report['image_bytes'] == image.size
    assert report['compressed_bytes'] == os.path.getsize(image.paths['xz'])
    assert [d[:2] for d in report['digests']] == [r[:2] for r in image.ranges]
    content = hashlib.sha256(b''.join(image.raw[o:o + n] for o, n, digest in image.ranges)).hexdigest()
    assert report['content_digest'] == content
    assert_written_exactly(disk, image)


@NEEDS_QEMU
@pytest.mark.qemu_many
def test_agent_flashes_zstd_image(tmp_path, qemu_payload, image):
    # The plan names the node by the 8 digits its bootloader prints; the device tree holds 16.
    ok, reason, report, disk, guest = flash_one(tmp_path, qemu_payload, image, 'zstd', plan_serial=SERIAL[8:])
    assert ok, '%s\n%s' % (reason, guest.log()[-3000:])
    assert_written_exactly(disk, image)


@NEEDS_QEMU
@pytest.mark.qemu_many
def test_wrong_digest_is_a_reported_failure(tmp_path, qemu_payload, image):
    image.ranges[1] = image.ranges[1][:2] + ('0' * 64,)
    ok, reason, report, disk, guest = flash_one(tmp_path, qemu_payload, image, 'xz')
    assert not ok
    assert report['status'] == 'failed' and '1 ranges read back wrong' in report['error']


@NEEDS_QEMU
@pytest.mark.qemu_many
def test_truncated_stream_is_a_decoder_failure(tmp_path, qemu_payload, image):
    cut = str(tmp_path / 'cut.img.xz')
    with open(image.paths['xz'], 'rb') as src, open(cut, 'wb') as dst:
        dst.write(src.read()[:-5000])
    ok, reason, report, disk, guest = flash_one(tmp_path, qemu_payload, image, 'xz', image_path=cut)
    assert not ok
    assert report['status'] == 'failed'
    assert report['decoder_status'] != 0


@NEEDS_QEMU
@pytest.mark.qemu_many
def test_plan_for_another_serial_is_refused(tmp_path, qemu_payload, image):
    ok, reason, report, disk, guest = flash_one(tmp_path, qemu_payload, image, 'xz',
                                                plan_serial='10000000deadbeef')
    assert not ok and report is None
    assert disk_bytes(disk) == b'\xa5' * (16 << 20)
    assert 'no plan for serial %s' % SERIAL in guest.log()


@NEEDS_QEMU
@pytest.mark.qemu_many
def test_server_dying_mid_stream(tmp_path, qemu_payload, image, monkeypatch):
    from ansible_collections.minicluster.cm4.plugins.module_utils.flash import netserver

    real = netserver._Handler._image

    def dying(self, run, serial):
        # The connection drops after a third of the image, as when the controller's server dies.
        size = os.path.getsize(run.image)
        self.send_response(200)
        self.send_header('Content-Length', str(size))
        self.end_headers()
        with open(run.image, 'rb') as f:
            self.wfile.write(f.read(size // 3))
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    monkeypatch.setattr(netserver._Handler, '_image', dying)
    ok, reason, report, disk, guest = flash_one(tmp_path, qemu_payload, image, 'xz')
    monkeypatch.setattr(netserver._Handler, '_image', real)
    assert not ok
    assert report['status'] == 'failed'
    assert report['download_status'] != 0
    assert report['compressed_bytes'] < os.path.getsize(image.paths['xz'])


@NEEDS_QEMU
@pytest.mark.qemu_many
def test_two_guests_against_one_server(tmp_path, qemu_payload, image):
    serials = ['10000000000000a1', '10000000000000a2']
    plans = [Plan(s, '/dev/vda', 'zstd', image.size, image.ranges) for s in serials]
    disks = []
    with NetflashRun('127.0.0.1', 0, plans, image.paths['zstd']) as run:
        guests = []
        for n, serial in enumerate(serials):
            d = tmp_path / ('g%d' % n)
            d.mkdir()
            disks.append(blank_disk(str(d / 'emmc.img')))
            guests.append(Guest(qemu_payload, disks[-1], serial, run.port, str(d), name='g%d' % n))
        for guest in guests:
            guest.wait(BOOT_TIMEOUT * 2)
        results = [run.result(s) for s in serials]
    for (ok, reason, report), guest in zip(results, guests):
        assert ok, '%s\n%s' % (reason, guest.log()[-2000:])
    for disk in disks:
        assert_written_exactly(disk, image)
