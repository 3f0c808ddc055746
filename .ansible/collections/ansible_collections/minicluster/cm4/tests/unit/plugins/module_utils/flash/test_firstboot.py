# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.flash import firstboot as fb
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.firstboot import FirstbootError

HERE = os.path.dirname(os.path.abspath(__file__))
MKIMAGE = os.path.normpath(os.path.join(HERE, '..', '..', '..', '..', '..', 'tools', 'mkimage.py'))
TOOLS = ('mtype', 'mcopy', 'mdir', 'mkfs.vfat', 'sfdisk', 'mke2fs', 'debugfs')
HASH = '$6$saltsalt$Hh7f0FZ8m5qf2Y1P0sH1b3k8ZpM3y1mX6u9W9C7hN0n2l4Qy0J8yW1oR2zqQ9O4xF3M2sS8pV3mN1bK6tE5dA/'
KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyOnlyForTests admin@controller'

needs_tools = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS) or not os.path.exists(MKIMAGE),
                                 reason='needs mtools, dosfstools, fdisk, e2fsprogs and tools/mkimage.py')


def make_image(directory, *args):
    path = os.path.join(str(directory), 'image.img')
    subprocess.run([sys.executable, MKIMAGE, '-o', path, '--no-bmap', '--compress', '', '--kernel-kib', '64',
                    '--payload-kib', '64', '--text-kib', '64', '--size-mib', '64'] + list(args),
                   check=True, stdout=subprocess.PIPE)
    return path


def mtype(image, offset, name):
    env = dict(os.environ, MTOOLS_SKIP_CHECK='1')
    p = subprocess.run(['mtype', '-i', '%s@@%d' % (image, offset), '::/' + name], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, check=False)
    return p.stdout.decode() if p.returncode == 0 else None


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    if any(shutil.which(t) is None for t in TOOLS) or not os.path.exists(MKIMAGE):
        pytest.skip('needs mtools, dosfstools, fdisk, e2fsprogs and tools/mkimage.py')
    base = tmp_path_factory.mktemp('images')
    out = {}
    for name, args in (('mbr', ['--no-uart']), ('gpt-cloud', ['--table', 'gpt', '--style', 'cloud-init', '--fat', '32',
                                                              '--boot-mib', '40', '--size-mib', '80'])):
        d = base / name
        d.mkdir()
        out[name] = make_image(d, *args)
    return out


@pytest.fixture
def image(images, tmp_path, request):
    copy = str(tmp_path / 'disk.img')
    shutil.copyfile(images[request.param], copy)
    return copy


# --- pure edits -------------------------------------------------------------------------------

def test_config_line_appended_under_all():
    text = 'arm_64bit=1\n[cm4]\notg_mode=1\n'
    new, changed = fb.ensure_config_line(text, 'enable_uart', 1)
    assert changed
    assert new == 'arm_64bit=1\n[cm4]\notg_mode=1\n\n[all]\nenable_uart=1\n'
    assert fb.ensure_config_line(new, 'enable_uart', 1) == (new, False)


def test_config_line_in_force_is_left_alone():
    text = '# comment\nenable_uart=1\n[pi4]\narm_boost=1\n'
    assert fb.ensure_config_line(text, 'enable_uart', 1) == (text, False)


def test_config_line_rewritten_in_place():
    new, changed = fb.ensure_config_line('enable_uart=0\ndtparam=audio=on\n', 'enable_uart', 1)
    assert changed and new == 'enable_uart=1\ndtparam=audio=on\n'


def test_config_line_only_in_a_conditional_section_does_not_count():
    text = '[pi3]\nenable_uart=1\n[all]\n'
    new, changed = fb.ensure_config_line(text, 'enable_uart', 1)
    assert changed and new.endswith('[all]\nenable_uart=1\n')
    assert new.count('[all]') == 1


def test_cmdline_args_appended_once():
    new, changed = fb.ensure_cmdline_args('console=serial0,115200 rootwait\n', 'a=b c=d')
    assert changed and new == 'console=serial0,115200 rootwait a=b c=d\n'
    assert fb.ensure_cmdline_args(new, 'a=b c=d') == (new, False)


@pytest.mark.parametrize('settings, message', [
    ({'hostname': '-bad'}, 'not a valid host name'),
    ({'user': 'Root!', 'password_hash': HASH}, 'not a valid user name'),
    ({'user': 'pi', 'password_hash': 'hunter2'}, 'not a crypt'),
    ({'password_hash': HASH}, 'needs user'),
    ({'user': 'pi'}, 'nobody could log in'),
    ({'style': 'trixie'}, 'is not one of'),
    ({'ssh_authorized_keys': ['a\nb']}, 'single line'),
])
def test_bad_settings(settings, message):
    with pytest.raises(FirstbootError, match=message):
        fb.normalise(settings)


def test_clear_password_is_never_echoed():
    with pytest.raises(FirstbootError) as err:
        fb.normalise({'user': 'pi', 'password_hash': 'hunter2'})
    assert 'hunter2' not in str(err.value)


def test_digest_changes_with_settings_and_hides_them():
    a = fb.settings_digest({'hostname': 'node1', 'user': 'pi', 'password_hash': HASH})
    b = fb.settings_digest({'hostname': 'node2', 'user': 'pi', 'password_hash': HASH})
    assert a != b and a.startswith('sha256:') and HASH not in a
    assert fb.settings_digest({}) is None
    assert fb.public_settings({'user': 'pi', 'password_hash': HASH})['password_hash'] == '(set)'


def test_cloud_init_user_data_shape():
    s = fb.normalise({'hostname': 'node3', 'user': 'admin', 'password_hash': HASH, 'ssh_authorized_keys': [KEY]})
    text = fb.user_data(s)
    assert text.startswith('#cloud-config\n')
    assert 'hostname: "node3"' in text
    assert '  - name: "admin"' in text
    assert '    passwd: "%s"' % HASH in text
    assert '      - "%s"' % KEY in text
    assert 'ssh_pwauth: false' in text


def test_firstrun_script_quotes_values():
    s = fb.normalise({'hostname': 'node1', 'ssh_authorized_keys': ["ssh-rsa AAAA it's-me"]})
    script = fb.firstrun_script(s)
    assert "NEW_HOSTNAME=node1" in script
    assert "AUTHORIZED_KEYS='ssh-rsa AAAA it'\"'\"'s-me'" in script
    assert 'rm -f "$BOOT/firstrun.sh"' in script


# --- on real images ---------------------------------------------------------------------------

@needs_tools
@pytest.mark.parametrize('image', ['mbr'], indirect=True)
def test_bookworm_on_an_mbr_image(image):
    part = fb.find_boot_partition(image)
    assert (part.table, part.index, part.offset, part.kind) == ('mbr', 1, 4 * 1024 * 1024, '0x0e')
    settings = {'hostname': 'node2', 'user': 'pi', 'password_hash': HASH, 'ssh_authorized_keys': [KEY]}
    result = fb.apply(image, settings)
    assert result['style'] == 'bookworm'
    assert result['changed_files'] == ['cmdline.txt', 'config.txt', 'firstrun.sh', 'ssh', 'userconf.txt']
    assert HASH not in repr(result)
    off = part.offset
    assert mtype(image, off, 'userconf.txt') == 'pi:%s\n' % HASH
    assert mtype(image, off, 'ssh') == ''
    assert mtype(image, off, 'config.txt').endswith('[all]\nenable_uart=1\n')
    assert mtype(image, off, 'cmdline.txt').rstrip().endswith(fb.FIRSTRUN_ARGS)
    firstrun = mtype(image, off, 'firstrun.sh')
    assert 'NEW_HOSTNAME=node2' in firstrun and KEY in firstrun
    # Idempotent: the same settings again change nothing.
    assert fb.apply(image, settings)['changed_files'] == []


@needs_tools
@pytest.mark.parametrize('image', ['mbr'], indirect=True)
def test_uart_only(image):
    result = fb.apply(image, {'ssh': False})
    assert result['changed_files'] == ['config.txt']
    assert mtype(image, result['partition']['offset'], 'ssh') is None


@needs_tools
@pytest.mark.parametrize('image', ['gpt-cloud'], indirect=True)
def test_cloud_init_on_a_gpt_image_auto_detected(image):
    part = fb.find_boot_partition(image)
    assert part.table == 'gpt' and part.index == 1
    settings = {'hostname': 'node4', 'user': 'admin', 'ssh_authorized_keys': [KEY]}
    result = fb.apply(image, settings)
    assert result['style'] == 'cloud-init'
    # The image already says enable_uart=1 and ships a network-config: both are kept.
    assert result['changed_files'] == ['meta-data', 'ssh', 'user-data']
    user_data = mtype(image, part.offset, 'user-data')
    assert 'hostname: "node4"' in user_data and KEY in user_data and 'lock_passwd: true' in user_data
    assert mtype(image, part.offset, 'meta-data').startswith('instance-id: "minicluster-node4-')
    assert 'dhcp4: true' in mtype(image, part.offset, 'network-config')
    assert fb.apply(image, settings)['changed_files'] == []


@needs_tools
@pytest.mark.parametrize('image', ['mbr'], indirect=True)
def test_forced_cloud_init_writes_a_network_config(image):
    result = fb.apply(image, {'style': 'cloud-init', 'hostname': 'n1',
                              'network_config': {'network': {'version': 2, 'ethernets': {'eth0': {'dhcp4': False}}}}})
    assert result['style'] == 'cloud-init'
    assert 'network-config' in result['changed_files']
    assert 'dhcp4: false' in mtype(image, result['partition']['offset'], 'network-config')


def test_no_partition_table(tmp_path):
    path = tmp_path / 'blank.img'
    path.write_bytes(b'\0' * 4096)
    with pytest.raises(FirstbootError, match='no partition table'):
        fb.find_boot_partition(str(path))


def test_no_fat_partition(tmp_path):
    mbr = bytearray(512)
    mbr[446 + 4] = 0x83
    mbr[446 + 8:446 + 16] = (2048).to_bytes(4, 'little') + (2048).to_bytes(4, 'little')
    mbr[510:512] = b'\x55\xaa'
    path = tmp_path / 'linux-only.img'
    path.write_bytes(bytes(mbr) + b'\0' * (4096 * 512))
    with pytest.raises(FirstbootError, match=r'no FAT partition in its MBR \(types 0x83\)'):
        fb.find_boot_partition(str(path))


def test_fat_type_without_a_file_system(tmp_path):
    mbr = bytearray(512)
    mbr[446 + 4] = 0x0c
    mbr[446 + 8:446 + 16] = (8).to_bytes(4, 'little') + (64).to_bytes(4, 'little')
    mbr[510:512] = b'\x55\xaa'
    path = tmp_path / 'empty-fat.img'
    path.write_bytes(bytes(mbr) + b'\0' * (80 * 512))
    with pytest.raises(FirstbootError, match='holds no FAT file system'):
        fb.find_boot_partition(str(path))
