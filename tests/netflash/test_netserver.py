# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's plan, report and server checks, and the payload builder's pin check."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request

import pytest
from netflash_helpers import payload_build

from ansible_collections.minicluster.cm4.plugins.module_utils.flash.netserver import (
    NetflashError,
    NetflashRun,
    Plan,
    check_bind_address,
    check_report,
    parse_report,
)

A = hashlib.sha256(b'a').hexdigest()
B = hashlib.sha256(b'b').hexdigest()


def plan():
    return Plan('10000000ABCDEF01', '/dev/mmcblk0', 'xz', 10000, [(0, 4096, A), (8192, 1808, B)])


def report_text(**over):
    fields = dict(status='ok', download_status=0, decoder_status=0, writer_status=0, compressed_bytes=300,
                  image_bytes=10000, content_digest=A)
    fields.update(over)
    lines = ['%s %s' % kv for kv in fields.items() if kv[1] is not None]
    return '\n'.join(lines + ['digest 0 4096 ' + A, 'digest 8192 1808 ' + B]) + '\n'


def test_plan_text_is_what_the_agent_reads():
    assert plan().text().splitlines() == [
        'netflash-plan 1', 'serial 10000000abcdef01', 'device /dev/mmcblk0', 'compression xz',
        'image /image/10000000abcdef01', 'image_size 10000', 'range 0 4096 ' + A, 'range 8192 1808 ' + B]


@pytest.mark.parametrize('args, words', [
    (('zz', '/dev/mmcblk0', 'xz', 100, []), 'not 8 to 16 hex digits'),
    (('10000000', '/dev/sda', 'xz', 100, []), 'not a whole eMMC disk'),
    (('10000000', '/dev/mmcblk0p1', 'xz', 100, []), 'not a whole eMMC disk'),
    (('10000000', '/dev/mmcblk0', 'gz', 100, []), 'compression'),
    (('10000000', '/dev/mmcblk0', 'xz', 100, [(50, 60, A)]), 'outside the image'),
    (('10000000', '/dev/mmcblk0', 'xz', 100, [(10, 10, A), (15, 5, A)]), 'out of order'),
    (('10000000', '/dev/mmcblk0', 'xz', 100, [(0, 10, None)]), 'no SHA-256'),
])
def test_plan_refuses_bad_input(args, words):
    with pytest.raises(NetflashError, match=words):
        Plan(*args)


def test_a_good_report_passes_and_every_fault_is_named():
    p = plan()
    assert check_report(p, parse_report(report_text()), 300) is None
    assert 'decoder status 1' in check_report(p, parse_report(report_text(decoder_status=1)), 300)
    assert 'received 299 compressed bytes' in check_report(p, parse_report(report_text(compressed_bytes=299)), 300)
    assert 'decoded 9999 bytes' in check_report(p, parse_report(report_text(image_bytes=9999)), 300)
    assert 'download status missing' in check_report(p, parse_report(report_text(download_status=None)), 300)
    wrong = report_text().replace('digest 8192 1808 ' + B, 'digest 8192 1808 ' + A)
    assert '1 of 2 ranges read back wrong or missing (first at byte 8192)' in check_report(p, parse_report(wrong), 300)
    missing = report_text().replace('digest 8192 1808 ' + B + '\n', '')
    assert 'ranges read back wrong or missing' in check_report(p, parse_report(missing), 300)
    failed = parse_report('status failed\nerror disk /dev/mmcblk0 not present\n')
    assert check_report(p, failed, 300) == 'the node reported a failure: disk /dev/mmcblk0 not present'


@pytest.mark.parametrize('text, words', [
    ('', 'no status'),
    ('status ok\nrm -rf /\n', 'line 2 not understood'),
    ('status ok\ndigest 0 x ' + A + '\n', 'malformed digest'),
    ('status maybe\n', 'not understood'),
])
def test_report_parsing_is_strict(text, words):
    with pytest.raises(NetflashError, match=words):
        parse_report(text)


def test_bind_address_must_be_on_the_interface():
    check_bind_address('192.168.50.1', 'eth0', ['192.168.50.1', 'fe80::1'])
    with pytest.raises(NetflashError, match='192.168.1.9 is not on the hat interface eth0 .it has 192.168.50.1.'):
        check_bind_address('192.168.1.9', 'eth0', ['192.168.50.1'])
    with pytest.raises(NetflashError, match='interface nosuch0 does not exist'):
        check_bind_address('127.0.0.1', 'nosuch0')


def test_server_serves_one_run_only(tmp_path):
    image = tmp_path / 'img.xz'
    image.write_bytes(b'x' * 300)
    p = plan()
    with NetflashRun('127.0.0.1', 0, [p], str(image)) as run:
        with urllib.request.urlopen(run.url + '/plan/' + p.serial) as r:
            assert r.read().decode() == p.text()
        with urllib.request.urlopen(run.url + p.image_path) as r:
            assert r.headers['Content-Length'] == '300' and r.read() == b'x' * 300
        for path in ('/plan/10000000deadbeef', '/image/10000000deadbeef', '/etc/passwd', '/plan/../image'):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(run.url + path)
            assert err.value.code == 404
            if path == '/plan/10000000deadbeef':
                assert run.strangers == {'127.0.0.1': '10000000deadbeef'}
        assert run.strangers == {'127.0.0.1': 'image'}
        req = urllib.request.Request(run.url + '/report/' + p.serial, data=report_text().encode(), method='POST')
        with urllib.request.urlopen(req) as r:
            assert r.status == 200
        assert run.wait([p.serial], 5) == []
        assert run.result(p.serial) == (True, None, parse_report(report_text()))
        assert run.sent[p.serial] == 300
        assert run.lookup('10000000ABCDEF01') == p.serial and run.lookup('abcdef01') is None
        # A second server on the same port is refused with the port named.
        with pytest.raises(NetflashError, match='port %d on 127.0.0.1 is already in use' % run.port):
            NetflashRun('127.0.0.1', run.port, [p], str(image))


def test_payload_input_that_does_not_match_its_pin_stops_the_build(tmp_path):
    with open(payload_build.PINS, encoding='utf-8') as f:
        pins = json.load(f)
    pins['packages'] = {'liblz4-1': dict(pins['packages']['liblz4-1'], sha256='0' * 64)}
    path = tmp_path / 'pins.json'
    path.write_text(json.dumps(pins))
    with pytest.raises(payload_build.BuildError, match='liblz4-1 1.9.4-1: SHA-256 [0-9a-f]{64} does not match its pin 0{64}'):
        payload_build.fetch_debs(payload_build.load_pins(str(path)), str(tmp_path / 'out'), lambda m: None)
    assert not any(n.endswith('.deb') or n.endswith('.part') for n in os.listdir(tmp_path / 'out' / 'debs'))
