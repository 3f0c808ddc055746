# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""node_flash against the simulated hat: real images (tools/mkimage.py, xz, zstd, bmaptool), the
fake rpiboot and disks, every fault of the reflash issue, and idempotence counted in RP2040 commands.

Every fault test checks the same three things: each failing node has a clear one-line error and is
left off with USB boot released, the other nodes are flashed as if nothing happened, and a rerun
with the fault gone completes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from hatsim.testing import running_hat

import moduletest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MKIMAGE = os.path.join(REPO, 'tools', 'mkimage.py')
NODES = [1, 2, 3, 4]
PATTERN = b'\xa5\x5a' * 2048  # what an eMMC holds before the flash: unmapped blocks must keep it
HASH = '$6$rounds=5000$saltsalt$VNjQ0fXkM3y0xZvQ1nYb8c2w4e6r8t0u2i4o6p8a0s2d4f6g8h0j2k4l6z8x0c2v4b6n8m0q2w4e6r8t0y2u'

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in ('mcopy', 'mkfs.vfat', 'sfdisk', 'mke2fs', 'bmaptool', 'xz', 'zstd')),
                                reason='needs mtools, dosfstools, fdisk, e2fsprogs, bmap-tools, xz and zstd')


# -- images ------------------------------------------------------------------------------------

def mkimage(path, *args):
    subprocess.run([sys.executable, MKIMAGE, '-o', str(path)] + list(args),
                   check=True, stdout=subprocess.DEVNULL)
    return str(path)


class Image(object):
    def __init__(self, path):
        self.raw = path
        self.xz = path + '.xz'
        self.zst = path + '.zst'
        self.bmap = path + '.bmap'
        self.size = os.path.getsize(path)
        root = ET.parse(self.bmap).getroot()
        self.block = int(root.find('BlockSize').text)
        self.ranges = []
        for r in root.find('BlockMap').findall('Range'):
            first, dummy, last = r.text.strip().partition('-')
            self.ranges.append((int(first) * self.block, (int(last or first) + 1) * self.block))

    def unmapped(self):
        pos = 0
        for start, end in self.ranges:
            if start > pos:
                yield pos, start
            pos = end
        if pos < self.size:
            yield pos, self.size


@pytest.fixture(scope='session')
def images(tmp_path_factory):
    base = tmp_path_factory.mktemp('images')
    small = ['--compress', 'xz,zst', '--size-mib', '48', '--boot-mib', '16', '--kernel-kib', '256', '--payload-kib', '512', '--text-kib', '256']
    out = {
        'good': Image(mkimage(base / 'good.img', *small)),
        'other': Image(mkimage(base / 'other.img', *(small + ['--payload-kib', '640']))),
        # Enough data that a write with small chunks takes a few seconds.
        'slow': Image(mkimage(base / 'slow.img', '--size-mib', '80', '--text-kib', '24576', '--xz-level', '1')),
    }
    data = bytearray(open(out['good'].xz, 'rb').read())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xff
    corrupt = base / 'corrupt.img.xz'
    corrupt.write_bytes(bytes(data))
    out['corrupt_xz'] = str(corrupt)
    text = open(out['good'].bmap).read()
    first = text.index('chksum="') + len('chksum="')
    bad_bmap = base / 'tampered.bmap'
    bad_bmap.write_text(text[:first] + ('0' if text[first] != '0' else '1') + text[first + 1:])
    out['tampered_bmap'] = str(bad_bmap)
    return out


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def read_range(path, start, end):
    with open(path, 'rb') as f:
        f.seek(start)
        return f.read(end - start)


# -- the simulated hat -------------------------------------------------------------------------

@pytest.fixture
def hat(tmp_path):
    with running_hat(tmp_path / 'hat', disk_delay=0.3, rpiboot_timeout=2, boot_delay=0.1) as h:
        os.makedirs(h.path('usbboot', 'recovery'))
        yield h


def base_args(hat, img, **extra):
    args = dict(nodes=NODES, image=img.xz, bmap=img.bmap, rpiboot=hat.rpiboot,
                rpiboot_payload=hat.path('usbboot', 'mass-storage-gadget64'), root=hat.dir, port=hat.rp2040,
                lock_dir=hat.path('lock'), state_dir=hat.path('state'), stagger=0.02, restart_delay=0.1,
                rpiboot_timeout=10, disk_timeout=5, boot_timeout=20, wait_for=r'login:',
                consoles=dict((str(n), hat.console(n)) for n in NODES))
    args.update(extra)
    return args


def run_module(args, tmp, check_mode=False):
    return moduletest.run_module('node_flash', args, tmp, check_mode=check_mode, diff=True)


def by_node(result):
    return dict((n['node'], n) for n in result['nodes'])


def pins(hat):
    return dict((int(k), v) for k, v in hat.state()['nodes'].items())


def log_total(hat):
    return hat.state()['rp2040']['log_total']


def prefill(hat, nodes=tuple(NODES)):
    """Fill eMMCs with a pattern (nodes are off) so that untouched blocks can be told apart."""
    for n in nodes:
        path = hat.emmc(n)
        size = os.path.getsize(path)
        with open(path, 'r+b') as f:
            for off in range(0, size, len(PATTERN)):
                f.write(PATTERN[:min(len(PATTERN), size - off)])


def assert_flashed(hat, image, nodes, untouched=True):
    for n in nodes:
        emmc = hat.emmc(n)
        for start, end in image.ranges:
            assert read_range(emmc, start, end) == read_range(image.raw, start, end), 'node %d range %d-%d' % (n, start, end)
        if untouched:
            for start, end in image.unmapped():
                data = read_range(emmc, start, end)
                assert data == (PATTERN * ((end - start) // len(PATTERN) + 2))[(start % len(PATTERN)):][:end - start], \
                    'node %d unmapped bytes %d-%d were written' % (n, start, end)


def assert_left_off(hat, node):
    p = pins(hat)[node]
    assert p['en'] is False, 'node %d was left powered: %r' % (node, p)
    assert p['nrpiboot'] is True, 'node %d was left with USB boot asserted: %r' % (node, p)


def assert_booted(hat, nodes):
    p = pins(hat)
    for n in nodes:
        assert p[n]['en'] and p[n]['nrpiboot'], 'node %d: %r' % (n, p[n])


def assert_fault(result, failing, words):
    """The task failed with exactly one line per failing node, each saying words."""
    assert result.get('failed') is True, result
    lines = result['msg'].splitlines()
    # One line per node that failed on its own, or one line naming every node for a problem found
    # before any node was touched.
    heads = [name for line in lines for name in line.split(': ', 1)[0].split(', ')]
    assert heads == ['node%d' % n for n in failing], result['msg']
    for line in lines:
        for word in words:
            assert word in line, line
    nodes = by_node(result)
    for n in failing:
        assert nodes[n]['failed'] and nodes[n]['action'] == 'failed'
        assert nodes[n]['msg'].split(': ', 1)[1] in result['msg']


# -- the normal path ---------------------------------------------------------------------------

def test_four_nodes_flashed_verified_booted_then_nothing_to_do(hat, images, tmp_path):
    image = images['good']
    prefill(hat)
    hat.control.decoys(usb_paths=['1-1.4', '1-1.3.20'])
    before = log_total(hat)
    plan = run_module(base_args(hat, image), tmp_path, check_mode=True)
    assert plan['changed'] is True
    assert [n['action'] for n in plan['nodes']] == ['would flash'] * 4
    assert log_total(hat) == before, 'check mode talked to the hat'

    result = run_module(base_args(hat, image), tmp_path)
    assert result['changed'] is True and not result.get('failed'), result.get('msg')
    nodes = by_node(result)
    for n in NODES:
        assert nodes[n]['action'] == 'flashed'
        assert nodes[n]['verified'] is True
        assert nodes[n]['bytes_written'] == sum(e - s for s, e in image.ranges)
        assert nodes[n]['console_match'] == 'login:'
        assert nodes[n]['disk']['model'] == 'mmcblk0'
        assert nodes[n]['record']['image_digest'] == 'sha256:' + sha256_file(image.xz)
    assert_flashed(hat, image, NODES)
    assert_booted(hat, NODES)
    for decoy in hat.state()['decoys']:
        assert hat.control.hash(decoy=decoy)['intact'], decoy

    # Second run: nothing changes, nothing is power-cycled, the hat hears not one command.
    before = log_total(hat)
    boots = dict((n, p['boots']) for n, p in pins(hat).items())
    again = run_module(base_args(hat, image), tmp_path)
    assert again['changed'] is False, again
    assert [n['action'] for n in again['nodes']] == ['unchanged'] * 4
    assert log_total(hat) == before
    assert dict((n, p['boots']) for n, p in pins(hat).items()) == boots
    plan = run_module(base_args(hat, image), tmp_path, check_mode=True)
    assert plan['changed'] is False

    # force reflashes; another image reflashes only the nodes asked for.
    forced = run_module(base_args(hat, image, nodes=[2], force=True), tmp_path)
    assert forced['changed'] is True and by_node(forced)[2]['reasons'] == ['force']
    other = run_module(base_args(hat, images['other'], nodes=[1, 3]), tmp_path)
    assert [n['action'] for n in other['nodes']] == ['flashed', 'flashed']
    assert by_node(other)[1]['reasons'] == ['image_digest', 'bmap_digest']
    assert_flashed(hat, images['other'], [1, 3], untouched=False)
    assert_flashed(hat, image, [2, 4], untouched=False)


def test_zstd_without_bmap_writes_the_whole_image(hat, images, tmp_path):
    image = images['good']
    result = run_module(base_args(hat, image, image=image.zst, bmap=None, nodes=[3], wait_for=None), tmp_path)
    assert result['changed'] is True, result.get('msg')
    assert by_node(result)[3]['bytes_written'] == image.size
    assert read_range(hat.emmc(3), 0, image.size) == open(image.raw, 'rb').read()


def test_firstboot_is_applied_and_secrets_stay_out_of_output(hat, images, tmp_path):
    image = images['good']
    firstboot = dict(hostname='node{node}', user='admin', password_hash=HASH, style='cloud-init',
                     ssh_authorized_keys=['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKey admin@ctl'])
    result = run_module(base_args(hat, image, nodes=[1, 4], firstboot=firstboot), tmp_path)
    assert result['changed'] is True, result.get('msg')
    assert HASH not in result['_stdout']
    env = dict(os.environ, MTOOLS_SKIP_CHECK='1')
    for n in (1, 4):
        fb = by_node(result)[n]['firstboot']
        assert fb['style'] == 'cloud-init' and 'user-data' in fb['changed_files']
        text = subprocess.run(['mtype', '-i', '%s@@%d' % (hat.emmc(n), fb['partition']['offset']), '::user-data'],
                              capture_output=True, text=True, env=env, check=True).stdout
        assert 'hostname: "node%d"' % n in text and HASH in text
        assert pins(hat)[n]['hostname'] == 'node%d' % n
        assert ('node%d login:' % n) in hat.control.console(n)
    # New settings reflash; the same settings do not.
    assert run_module(base_args(hat, image, nodes=[1, 4], firstboot=firstboot), tmp_path)['changed'] is False
    changed = dict(firstboot, hostname='worker{node}')
    again = run_module(base_args(hat, image, nodes=[1], firstboot=changed), tmp_path)
    assert by_node(again)[1]['reasons'] == ['firstboot_digest']


# -- faults ------------------------------------------------------------------------------------

def test_missing_image(hat, images, tmp_path):
    before = log_total(hat)
    result = run_module(base_args(hat, images['good'], image=str(tmp_path / 'nope.img.xz')), tmp_path)
    assert result['failed'] and result['msg'] == 'image %s not found on the controller: check the path' % (tmp_path / 'nope.img.xz')
    assert log_total(hat) == before, 'nodes were touched for a missing image'
    for n in NODES:
        assert_left_off(hat, n)
    assert run_module(base_args(hat, images['good']), tmp_path)['changed'] is True


def test_sha256_mismatch_touches_no_node(hat, images, tmp_path):
    before = log_total(hat)
    result = run_module(base_args(hat, images['good'], sha256='0' * 64), tmp_path)
    assert_fault(result, NODES, ['SHA-256', 'expected ' + '0' * 64, 'no node was touched'])
    assert log_total(hat) == before
    ok = run_module(base_args(hat, images['good'], sha256=sha256_file(images['good'].xz)), tmp_path)
    assert ok['changed'] is True and not ok.get('failed'), ok.get('msg')


def test_bmap_with_a_bad_checksum_touches_no_node(hat, images, tmp_path):
    before = log_total(hat)
    result = run_module(base_args(hat, images['good'], bmap=images['tampered_bmap']), tmp_path)
    assert_fault(result, NODES, ['tampered.bmap', 'use the bmap made for this image'])
    assert log_total(hat) == before
    assert run_module(base_args(hat, images['good']), tmp_path)['changed'] is True


def test_bmap_of_another_image_touches_no_node(hat, images, tmp_path):
    before = log_total(hat)
    result = run_module(base_args(hat, images['good'], bmap=images['other'].bmap), tmp_path)
    assert_fault(result, NODES, ['does not belong to image', 'has another checksum', 'use the bmap made for this image',
                                 'no node was touched'])
    assert log_total(hat) == before
    assert run_module(base_args(hat, images['good']), tmp_path)['changed'] is True
    assert_flashed(hat, images['good'], NODES, untouched=False)


def test_corrupt_xz_touches_no_node(hat, images, tmp_path):
    before = log_total(hat)
    result = run_module(base_args(hat, images['good'], image=images['corrupt_xz'], bmap=None), tmp_path)
    assert_fault(result, NODES, ['corrupt.img.xz', 'no node was touched'])
    assert log_total(hat) == before
    for n in NODES:
        assert_left_off(hat, n)
        assert 'record' not in by_node(result)[n]
    assert run_module(base_args(hat, images['good']), tmp_path)['changed'] is True


def test_target_too_small(hat, images, tmp_path):
    # Node 2's eMMC is smaller than the image; the others are fine.
    os.truncate(hat.emmc(2), 16 * 1024 * 1024)
    result = run_module(base_args(hat, images['good']), tmp_path)
    assert_fault(result, [2], ['opening the disk failed', 'USB path 1-1.3.3', 'target holds 16777216 bytes',
                               'nothing was written'])
    assert_left_off(hat, 2)
    assert_flashed(hat, images['good'], [1, 3, 4], untouched=False)
    assert_booted(hat, [1, 3, 4])
    os.truncate(hat.emmc(2), 256 * 1024 * 1024)
    again = run_module(base_args(hat, images['good']), tmp_path)
    assert [n['action'] for n in again['nodes']] == ['unchanged', 'flashed', 'unchanged', 'unchanged']


def test_rpiboot_missing_touches_no_node(hat, images, tmp_path):
    before = log_total(hat)
    result = run_module(base_args(hat, images['good'], rpiboot=str(tmp_path / 'no-rpiboot')), tmp_path)
    assert_fault(result, NODES, ['rpiboot executable', 'not found', 'install usbboot'])
    assert log_total(hat) == before
    result = run_module(base_args(hat, images['good'], rpiboot_payload='no-such-payload'), tmp_path)
    assert_fault(result, NODES, ['rpiboot payload no-such-payload not found'])
    assert run_module(base_args(hat, images['good']), tmp_path)['changed'] is True


def wrapper(tmp_path, hat, body):
    """An rpiboot that misbehaves for USB path 1-1.3.4 and runs the simulator's otherwise."""
    path = str(tmp_path / 'rpiboot-wrapper')
    with open(path, 'w') as f:
        f.write('#!%s\nimport os, sys\nargs = sys.argv[1:]\npath = args[args.index("-p") + 1] if "-p" in args else None\n'
                'REAL = %r\nRECOVERY = %r\n%s\nos.execv(REAL, [REAL] + args)\n'
                % (sys.executable, hat.rpiboot, hat.path('usbboot', 'recovery'), body))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def test_rpiboot_failing_for_one_node(hat, images, tmp_path):
    rpiboot = wrapper(tmp_path, hat, 'if path == "1-1.3.4":\n    print("libusb: error [op_claim_interface]")\n    sys.exit(1)')
    result = run_module(base_args(hat, images['good'], rpiboot=rpiboot), tmp_path)
    assert_fault(result, [3], ['rpiboot failed at USB path 1-1.3.4', 'exit 1', 'libusb'])
    assert_left_off(hat, 3)
    assert_flashed(hat, images['good'], [1, 2, 4], untouched=False)
    assert_booted(hat, [1, 2, 4])
    again = run_module(base_args(hat, images['good']), tmp_path)
    assert [n['action'] for n in again['nodes']] == ['unchanged', 'unchanged', 'flashed', 'unchanged']


def test_rpiboot_finding_no_device_at_a_wrong_usb_path(hat, images, tmp_path):
    result = run_module(base_args(hat, images['good'], nodes=[1, 2], usb_paths={'2': '1-1.3.7'}), tmp_path)
    assert_fault(result, [2], ['rpiboot failed at USB path 1-1.3.7', 'usb_paths maps node 2'])
    assert_left_off(hat, 2)
    assert by_node(result)[1]['action'] == 'flashed'


def test_disk_never_appears(hat, images, tmp_path):
    rpiboot = wrapper(tmp_path, hat, 'if path == "1-1.3.4":\n    args[args.index("-d") + 1] = RECOVERY')
    result = run_module(base_args(hat, images['good'], rpiboot=rpiboot, disk_timeout=2), tmp_path)
    assert_fault(result, [3], ['1-1.3.4', 'after 2s'])
    assert by_node(result)[3]['failed_step'] == 'disk'
    assert_left_off(hat, 3)
    assert_flashed(hat, images['good'], [1, 2, 4], untouched=False)
    again = run_module(base_args(hat, images['good']), tmp_path)
    assert [n['action'] for n in again['nodes']] == ['unchanged', 'unchanged', 'flashed', 'unchanged']


def test_disk_gone_mid_write(hat, images, tmp_path):
    image = images['slow']
    for n in NODES:
        os.truncate(hat.emmc(n), 0)
        os.truncate(hat.emmc(n), 256 * 1024 * 1024)
    unplugged = {}

    def unplug_node_2_once_written():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if os.stat(hat.emmc(2)).st_blocks * 512 >= 2 * 1024 * 1024:
                    unplugged.update(hat.control.unplug(2))
                    return
            except OSError:
                pass
            time.sleep(0.005)

    watcher = threading.Thread(target=unplug_node_2_once_written)
    watcher.start()
    result = run_module(base_args(hat, image, write_chunk_size=4096), tmp_path)
    watcher.join()
    assert unplugged.get('disk'), 'the disk was never unplugged'
    assert_fault(result, [2], ['failed on disk sd', 'USB path 1-1.3.3', 'disk is gone', "check the node's USB link"])
    assert_left_off(hat, 2)
    assert_flashed(hat, image, [1, 3, 4], untouched=False)
    assert_booted(hat, [1, 3, 4])
    again = run_module(base_args(hat, image), tmp_path)
    assert [n['action'] for n in again['nodes']] == ['unchanged', 'flashed', 'unchanged', 'unchanged'], again.get('msg')
    assert_flashed(hat, image, [2], untouched=False)


def test_console_silent_fails_the_node(hat, images, tmp_path):
    result = run_module(base_args(hat, images['good'], nodes=[4], wait_for='never printed', boot_timeout=2), tmp_path)
    assert_fault(result, [4], ["no 'never printed' on console", 'within 2s'])
    assert_left_off(hat, 4)
    # The node holds the image but never proved it boots: no record, the next run flashes it.
    assert 'record' not in by_node(result)[4]
    assert run_module(base_args(hat, images['good'], nodes=[4]), tmp_path)['changed'] is True


def test_bad_arguments_touch_nothing(hat, images, tmp_path):
    before = log_total(hat)
    result = run_module(base_args(hat, images['good'], usb_paths={'1': '/dev/sda'}), tmp_path)
    assert_fault(result, NODES, ["USB path '/dev/sda' is not a sysfs USB device name"])
    result = run_module(base_args(hat, images['good'], consoles={}), tmp_path)
    assert_fault(result, NODES, ['wait_for needs a console for node 1, 2, 3, 4'])
    result = run_module(base_args(hat, images['good'], firstboot={'user': 'pi', 'password_hash': 'hunter2'}), tmp_path)
    assert_fault(result, NODES, ['password_hash is not a crypt(3) hash'])
    assert 'hunter2' not in result['_stdout']
    assert log_total(hat) == before


# -- the playbook ------------------------------------------------------------------------------

def run_playbook(hat, tmp_path, *extra):
    inventory = tmp_path / 'inventory.yml'
    inventory.write_text(json.dumps({'controller': {'hosts': {'localhost': {
        'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable,
        'hat_port': hat.rp2040, 'hat_lock_dir': hat.path('lock'), 'hat_state_dir': hat.path('state'),
        'hat_root': hat.dir, 'hat_rpiboot': hat.rpiboot,
        'hat_rpiboot_payload': hat.path('usbboot', 'mass-storage-gadget64'),
        'hat_consoles': dict((str(n), hat.console(n)) for n in NODES)}}}}))
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0')
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(inventory),
                           os.path.join(REPO, 'playbooks', 'reflash.yml'), '-e', 'reflash_poll_interval=1',
                           '-e', 'reflash_stagger=0.05', '-e', 'reflash_restart_delay=0.2'] + list(extra),
                          capture_output=True, text=True, timeout=600, env=env, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_reflash_playbook_shows_progress_and_is_idempotent(hat, images, tmp_path):
    image = images['good']
    args = ['-e', 'image=%s' % image.xz, '-e', 'bmap=%s' % image.bmap, '-e', 'nodes=1,3', '-e', 'reflash_wait_for=login:']
    rc, out = run_playbook(hat, tmp_path, *args)
    assert rc == 0, out
    # Progress lines from the follow task, never a retry line.
    progress = [line for line in out.splitlines() if line.startswith('localhost: node1 ')]
    assert len(progress) >= 2, out
    assert all('node3' in line and 'node2' not in line for line in progress), progress
    assert 'RETRYING' not in out
    assert '"msg": "node1: flashed, ' in out and '"msg": "node3: flashed, ' in out, out
    assert 'changed=1' in out
    assert_flashed(hat, image, [1, 3], untouched=False)
    assert pins(hat)[2]['boots'] == 0 and pins(hat)[4]['boots'] == 0

    before = log_total(hat)
    rc, out = run_playbook(hat, tmp_path, *args)
    assert rc == 0 and 'changed=0' in out, out
    assert '"msg": "node1: unchanged (its record matches this image)"' in out
    assert log_total(hat) == before

    rc, out = run_playbook(hat, tmp_path, '--check', '-e', 'image=%s' % image.xz, '-e', 'bmap=%s' % image.bmap)
    assert rc == 0, out
    assert '"msg": "node2: would flash (no record)"' in out and '"msg": "node1: none"' not in out, out


def test_reflash_playbook_fails_with_one_line_per_node(hat, images, tmp_path):
    rc, out = run_playbook(hat, tmp_path, '-e', 'image=%s' % images['corrupt_xz'], '-e', 'nodes=2')
    assert rc == 2, out
    assert '"msg": "node2: corrupt xz' in out or '"msg": "node2: ' in out and 'corrupt.img.xz' in out, out
    assert 'no node was touched' in out
    assert_left_off(hat, 2)
    # A node that is not on the hat fails the play before anything is touched.
    before = log_total(hat)
    rc, out = run_playbook(hat, tmp_path, '-e', 'image=%s' % images['good'].xz, '-e', 'nodes=12')
    assert rc == 2 and 'nodes must be a node number 1 to 4, not 12' in out, out
    assert log_total(hat) == before
    rc, out = run_playbook(hat, tmp_path)
    assert rc == 2 and 'no image given: run with -e image=' in out, out
