# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reflash flow with a fake hat, a fake rpiboot, a fake system root and a fake writer."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.flash import reflash
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.record import FlashRecords
from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.flash.fake_sysfs import FakeRoot


class FakeHat(object):
    def __init__(self):
        self.calls = []

    def ensure(self, nodes, state, boot_mode=None, stagger=1.0, check_mode=False):
        self.calls.append((tuple(nodes), state, boot_mode))
        return dict((n, {'actions': [boot_mode or 'keep', state]}) for n in nodes)


class Result(object):
    def __init__(self, ok, error=None, stage=None, written=4096):
        self.ok = ok
        self.error = error
        self.stage = stage
        self.bytes_written = written
        self.bytes_verified = written if ok else 0
        self.verified = ok
        self.content_digest = 'c0ffee' if ok else None
        self.seconds = 0.1


@pytest.fixture
def env(tmp_path):
    image = tmp_path / 'image.img'
    image.write_bytes(b'\0' * 8192)
    rpiboot = tmp_path / 'rpiboot'
    rpiboot.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = "%s" ] && { echo "no device"; exit 1; }; done\nexit 0\n'
                       % 'FAIL-PATH')
    rpiboot.chmod(rpiboot.stat().st_mode | stat.S_IXUSR)
    payload = tmp_path / 'mass-storage-gadget64'
    payload.mkdir()
    root = FakeRoot(tmp_path / 'root')
    return dict(tmp=tmp_path, image=str(image), rpiboot=str(rpiboot), payload=str(payload), root=root,
                records=FlashRecords(str(tmp_path / 'state')))


def make(env, nodes=(1, 2, 3, 4), flash_fn=None, hat=None, **kw):
    hat = hat or FakeHat()
    calls = []

    def default_flash(image, targets, **options):
        calls.append((image, dict(targets), options))
        return dict((name, Result(True)) for name in targets)

    options = dict(rpiboot=env['rpiboot'], rpiboot_payload=env['payload'], root=env['root'].root, disk_timeout=0.5,
                   rpiboot_timeout=5, restart_delay=0, poll_interval=0.01)
    options.update(kw)
    job = reflash.Reflash(
        list(nodes), env['image'], hat_factory=lambda: hat, records=env['records'], flash_fn=flash_fn or default_flash,
        identity_fn=lambda image, bmap: {'source_sha256': 'ab' * 32, 'source_size': 8192, 'bmap_sha256': None},
        **options)
    job.fake_hat = hat
    job.flash_calls = calls
    return job


def plug_all(env, nodes=(1, 2, 3, 4)):
    for n in nodes:
        env['root'].usb_disk('1-1.2.%d' % n, name='sd' + 'abcd'[n - 1], size=1024 * 1024)


def test_check_mode_plans_from_records_and_touches_nothing(env):
    env['records'].save(2, {'image_digest': 'sha256:' + 'ab' * 32, 'bmap_digest': None, 'firstboot_digest': None})
    job = make(env, check_mode=True)
    jobs = job.run()
    assert [jobs[n].action for n in (1, 2, 3, 4)] == ['would flash', 'none', 'would flash', 'would flash']
    assert jobs[1].reasons == ['no record']
    assert job.fake_hat.calls == []


def test_force_and_changed_firstboot_reflash(env):
    want = {'image_digest': 'sha256:' + 'ab' * 32, 'bmap_digest': None}
    for n in (1, 2):
        env['records'].save(n, dict(want, firstboot_digest=None))
    jobs = make(env, nodes=(1, 2), check_mode=True, force=True).run()
    assert jobs[1].reasons == ['force']
    jobs = make(env, nodes=(1, 2), check_mode=True, firstboot={'hostname': 'node{node}'}).run()
    assert jobs[2].reasons == ['firstboot_digest']
    job = make(env, nodes=(1, 2), check_mode=True, firstboot={'hostname': 'node{node}'})
    assert job.firstboot_settings(2)['hostname'] == 'node2'
    assert job.wanted(1)['firstboot_digest'] != job.wanted(2)['firstboot_digest']


@pytest.mark.parametrize('kw, message', [
    (dict(usb_paths={3: 'sdb'}), "USB path 'sdb' is not a sysfs USB device name"),
    (dict(bmap='/nonexistent.bmap'), 'bmap /nonexistent.bmap not found'),
    (dict(sha256='cd' * 32), 'no node was touched'),
    (dict(sha256='xyz'), 'is not a SHA-256 hex digest'),
    (dict(wait_for='login:', consoles={1: '/dev/ttyAMA1'}), 'wait_for needs a console for node 2, 3, 4'),
    (dict(wait_for='(', consoles={1: 'a', 2: 'b', 3: 'c', 4: 'd'}), 'is not a regular expression'),
    (dict(firstboot={'hostname': 'bad_name'}), 'not a valid host name'),
])
def test_preflight_refuses_before_touching_anything(env, kw, message):
    job = make(env, **kw)
    with pytest.raises(Exception, match=message.replace('(', r'\(')):
        job.run()
    assert job.fake_hat.calls == []


def test_missing_image_and_tools(env):
    job = make(env)
    job.image = str(env['tmp'] / 'missing.img.xz')
    with pytest.raises(reflash.ReflashError, match='image .*missing.img.xz not found on the controller'):
        job.run()
    job = make(env, rpiboot=str(env['tmp'] / 'none'))
    with pytest.raises(reflash.ReflashError, match='rpiboot executable .* not found'):
        job.run()
    job = make(env, rpiboot_payload='not-installed-anywhere')
    with pytest.raises(reflash.ReflashError, match='rpiboot payload not-installed-anywhere not found'):
        job.run()
    assert job.fake_hat.calls == []


def test_all_nodes_flashed_in_one_write_and_recorded(env):
    plug_all(env)
    job = make(env)
    jobs = job.run()
    assert [jobs[n].action for n in (1, 2, 3, 4)] == ['flashed'] * 4
    assert len(job.flash_calls) == 1, 'one stream for every node'
    assert sorted(job.flash_calls[0][1]) == ['node1', 'node2', 'node3', 'node4']
    assert job.flash_calls[0][1]['node2'] == os.path.join(env['root'].root, 'dev', 'sdb')
    assert job.fake_hat.calls == [
        ((1, 2, 3, 4), 'off', 'usb'), ((1, 2, 3, 4), 'on', 'usb'),
        ((1, 2, 3, 4), 'off', 'normal'), ((1, 2, 3, 4), 'on', 'normal'),
    ]
    for n in (1, 2, 3, 4):
        assert env['records'].load(n)['content_digest'] == 'c0ffee'
    # Nothing to do the second time: not even the hat is opened.
    again = make(env)
    again.run()
    assert again.fake_hat.calls == [] and again.flash_calls == []


def test_a_failed_write_releases_that_node_only(env):
    plug_all(env)

    def flash(image, targets, **options):
        out = dict((name, Result(True)) for name in targets)
        out['node2'] = Result(False, error='/x/dev/sdb: disk is gone', stage='write', written=1024)
        return out

    job = make(env, flash_fn=flash)
    jobs = job.run()
    assert jobs[2].error.startswith('node2: writing failed on disk sdb at USB path 1-1.2.2: /x/dev/sdb: disk is gone')
    assert jobs[2].step == 'write'
    assert ((2,), 'off', 'normal') in job.fake_hat.calls
    assert ((1, 3, 4), 'on', 'normal') in job.fake_hat.calls
    assert env['records'].load(2) is None
    assert env['records'].load(1) is not None


def test_rpiboot_failure_and_missing_disk(env):
    plug_all(env, nodes=(1, 2))     # node 3 never shows a disk; node 4's rpiboot fails
    job = make(env, usb_paths={4: '1-1.2.4'})
    job.usb_paths[4] = job.jobs[4].usb_path = '1-1.2.4'
    with open(env['rpiboot'], 'w') as f:
        f.write('#!/bin/sh\n[ "$4" = "1-1.2.4" ] && { echo "Waiting for BCM2835/6/7/2711/2712..."; exit 1; }\nexit 0\n')
    jobs = job.run()
    assert jobs[4].error == ('node4: rpiboot failed at USB path 1-1.2.4 (exit 1: Waiting for BCM2835/6/7/2711/2712...): '
                             'check the node is in USB boot and usb_paths maps node 4 to its hub port')
    assert jobs[3].step == 'disk' and 'no USB device at 1-1.2.3 after 0.5s' in jobs[3].error
    assert ((4,), 'off', 'normal') in job.fake_hat.calls
    assert ((3,), 'off', 'normal') in job.fake_hat.calls
    assert [jobs[n].action for n in (1, 2)] == ['flashed', 'flashed']
    assert sorted(job.flash_calls[0][1]) == ['node1', 'node2']


def test_a_foreign_disk_on_the_port_is_refused(env):
    env['root'].usb_disk('1-1.2.1', name='sda', model='Cruzer Blade', vendor='SanDisk')
    job = make(env, nodes=(1,))
    jobs = job.run()
    assert jobs[1].step == 'disk' and 'not the CM4 gadget' in jobs[1].error
    assert job.flash_calls == []
    assert job.fake_hat.calls[-1] == ((1,), 'off', 'normal')


def test_hat_failure_fails_every_node_with_the_reason(env):
    class BrokenHat(FakeHat):
        def ensure(self, nodes, state, boot_mode=None, stagger=1.0, check_mode=False):
            raise OSError('could not open port /dev/ttyACM0')

    jobs = make(env, nodes=(1, 2), hat=BrokenHat()).run()
    for n in (1, 2):
        assert 'could not power it into USB boot: could not open port /dev/ttyACM0' in jobs[n].error
        assert 'switch node %d off by hand' % n in jobs[n].error


def test_find_payload_in_install_dirs(tmp_path, monkeypatch):
    share = tmp_path / 'usr' / 'share' / 'rpiboot'
    (share / 'mass-storage-gadget64').mkdir(parents=True)
    exe = tmp_path / 'usr' / 'bin' / 'rpiboot'
    exe.parent.mkdir(parents=True)
    exe.write_text('')
    assert reflash.find_payload('mass-storage-gadget64', str(exe)) == str(share / 'mass-storage-gadget64')
    monkeypatch.setattr(reflash, 'PAYLOAD_DIRS', ())
    assert reflash.find_payload('mass-storage-gadget64', None) is None
    assert reflash.find_payload(str(share / 'mass-storage-gadget64')) == str(share / 'mass-storage-gadget64')
