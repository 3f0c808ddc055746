# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bad input against every module that touches the simulated hat.

Each refused input must give a one-line message saying what was wrong, a failed result, and leave
the simulator exactly as it was: pins, RP2040 command count, hub EEPROM, fan registers, eMMCs and
the controller's flash records. The listed cases are the classes of input a hostile new user
tries; hypothesis then throws generated junk at each module's options (in check mode, so that an
input that happens to be valid changes nothing either) and asserts a one-line refusal or a
success, never a traceback, never a change.

The modules run in this process (as ansible-test units run them), against the simulator's real
pty and sockets, so that hundreds of inputs take seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible.module_utils.testing import patch_module_args

from ansible_collections.minicluster.cm4.plugins.module_utils.chips import emc2301
from ansible_collections.minicluster.cm4.plugins.modules import (fan, hat_calibrate, hat_info, node_flash, node_power,
                                                                 rp2040_firmware, usb2517_eeprom)

from hatsim.testing import running_hat

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = dict(node_flash=node_flash, node_power=node_power, fan=fan, usb2517_eeprom=usb2517_eeprom,
               hat_info=hat_info, rp2040_firmware=rp2040_firmware, hat_calibrate=hat_calibrate)

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in ('mcopy', 'mkfs.vfat', 'sfdisk', 'mke2fs', 'xz')),
                                reason='needs mtools, dosfstools, fdisk, e2fsprogs and xz')


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp('bad-input')
    out = {}
    for name, extra in (('good', []), ('other', ['--payload-kib', '640'])):
        path = str(base / ('%s.img' % name))
        subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'mkimage.py'), '-o', path, '--compress', 'xz',
                        '--size-mib', '40', '--boot-mib', '16', '--kernel-kib', '128', '--payload-kib', '256',
                        '--text-kib', '128'] + extra, check=True, stdout=subprocess.DEVNULL)
        out[name] = path
    (base / 'empty.img').write_bytes(b'')
    (base / 'garbage.bmap').write_text('<bmap version="2.0"><ImageSize>oops')
    (base / 'text.txt').write_text('x' * 300)
    out['base'] = str(base)
    return out


@pytest.fixture(scope='module')
def hat(tmp_path_factory):
    with running_hat(tmp_path_factory.mktemp('bad-input-hat') / 'hat', disk_delay=0.3, rpiboot_timeout=2,
                     boot_delay=0.1) as h:
        yield h


def snapshot(hat):
    """Everything a refused input must leave alone."""
    state = hat.state()
    records = {}
    flash_dir = hat.path('state', 'flash')
    if os.path.isdir(flash_dir):
        for name in sorted(os.listdir(flash_dir)):
            if name.startswith('node') and name.endswith('.json'):
                with open(os.path.join(flash_dir, name), 'rb') as f:
                    records[name] = hashlib.sha256(f.read()).hexdigest()
    emmcs = {}
    for n in (1, 2, 3, 4):
        st_ = os.stat(hat.emmc(n))
        emmcs[n] = (st_.st_size, st_.st_mtime_ns)
    return {
        'pins': dict((k, (v['en'], v['run'], v['nrpiboot'])) for k, v in state['nodes'].items()),
        'commands': state['rp2040']['log_total'],
        'eeprom': state['eeprom']['hex'],
        # The configuration registers only: TACH readings follow the simulated fan by themselves.
        'fan': dict((reg, state['emc2301']['registers'][2 * reg:2 * reg + 2]) for reg in sorted(emc2301.WRITABLE)),
        'emmcs': emmcs,
        'records': records,
    }


def run(name, args, check_mode=False):
    """The module's result, as Ansible would get it; a traceback fails the test."""
    out = io.StringIO()
    with patch_module_args(dict(args, _ansible_check_mode=check_mode)):
        with contextlib.redirect_stdout(out):
            with pytest.raises(SystemExit):
                MODULES[name].main()
    return json.loads(out.getvalue())


def hat_args(hat):
    return dict(port=hat.rp2040, lock_dir=hat.path('lock'), state_dir=hat.path('state'), stagger=0.02,
                restart_delay=0.1)


def i2c_args(hat):
    return dict(i2c_bus='unix:%s' % hat.path('i2c-1.sock'))


def flash_args(hat, files):
    return dict(hat_args(hat), nodes=[1, 2], image=files['good'] + '.xz', bmap=files['good'] + '.bmap',
                rpiboot=hat.rpiboot, rpiboot_payload=hat.path('usbboot', 'mass-storage-gadget64'), root=hat.dir,
                rpiboot_timeout=10, disk_timeout=5)


def base_args(name, hat, files):
    if name == 'node_flash':
        return flash_args(hat, files)
    if name == 'node_power':
        return dict(hat_args(hat), node=1, state='off')
    if name == 'hat_info':
        return dict(port=hat.rp2040, lock_dir=hat.path('lock'), state_dir=hat.path('state'), **i2c_args(hat))
    if name == 'usb2517_eeprom':
        return dict(i2c_bus='unix:%s' % hat.path('i2c-hub.sock'))
    if name == 'rp2040_firmware':
        return dict(port=hat.rp2040, lock_dir=hat.path('lock'), state_dir=hat.path('state'),
                    gpio='unix:%s' % hat.path('gpio.sock'), root=hat.dir, drive_timeout=2, console_timeout=2)
    if name == 'hat_calibrate':
        return dict(port=hat.rp2040, lock_dir=hat.path('lock'), state_dir=hat.path('state'), nodes=[1], samples=2,
                    settle=0.1, **i2c_args(hat))
    return dict(i2c_args(hat), mode='pwm', duty_percent=40)


def F(name):
    """A file of the fixture, resolved at run time."""
    return ('file', name)


NAN, INF = float('nan'), float('inf')

# (module, options changed from a valid call, words the one-line message must hold)
CASES = [
    # Node numbers: only the integers 1 to 4.
    ('node_flash', dict(nodes=[12]), 'nodes must be a node number 1 to 4, not 12'),
    ('node_flash', dict(nodes=[]), 'nodes must name at least one node'),
    ('node_flash', dict(nodes=[True]), 'nodes must be a node number 1 to 4, not True'),
    ('node_flash', dict(nodes=['node2']), 'nodes'),
    ('node_flash', dict(nodes=[2.5]), 'nodes'),
    ('node_flash', dict(nodes=[0]), 'not 0'),
    ('node_power', dict(node=12), 'node must be a node number 1 to 4, not 12'),
    ('node_power', dict(node=-1), 'not -1'),
    ('node_power', dict(node=None, nodes=[1, 5]), 'not 5'),
    ('node_power', dict(node=True), 'not True'),
    ('node_power', dict(node='inf'), 'node must be a whole number, not infinity'),
    ('fan', dict(mode='rpm', duty_percent=None, target_rpm='-Infinity'), 'target_rpm must be a whole number, not infinity'),
    ('node_power', dict(node=None, nodes=[]), 'at least one node'),
    # Numbers: finite, in range.
    ('node_flash', dict(restart_delay=INF), 'restart_delay must be a finite number'),
    ('node_flash', dict(restart_delay=NAN), 'restart_delay must be a finite number'),
    ('node_flash', dict(restart_delay=1e9), 'restart_delay must be from 0 to 60 seconds'),
    ('node_flash', dict(restart_delay='inf'), 'restart_delay must be a finite number'),
    ('node_flash', dict(stagger=-1), 'stagger must be from 0 to 60 seconds, not -1'),
    ('node_flash', dict(rpiboot_timeout=0), 'rpiboot_timeout must be more than 0'),
    ('node_flash', dict(disk_timeout=INF), 'disk_timeout must be a finite number'),
    ('node_flash', dict(boot_timeout=1e7), 'boot_timeout must be more than 0 and at most 3600'),
    ('node_flash', dict(lock_timeout=-5), 'lock_timeout must be from 0 to 3600'),
    ('node_flash', dict(command_timeout=0), 'command_timeout must be more than 0'),
    ('node_flash', dict(on_threshold_ma=NAN), 'on_threshold_ma must be a finite number'),
    ('node_flash', dict(ma_per_unit=0), 'ma_per_unit must be more than 0'),
    ('node_flash', dict(watchdog=5), 'watchdog must be 0 (off) or at least 10 seconds'),
    ('node_flash', dict(write_chunk_size=4097), 'write_chunk_size must be a multiple of 4096 bytes, not 4097'),
    ('node_flash', dict(write_chunk_size=0), 'write_chunk_size must be from 4096 to 67108864 bytes, not 0'),
    ('node_flash', dict(write_chunk_size=1 << 40), 'write_chunk_size must be from 4096 to 67108864 bytes'),
    ('node_power', dict(restart_delay=INF), 'restart_delay must be a finite number'),
    ('node_power', dict(restart_delay=1e9), 'restart_delay must be from 0 to 60 seconds'),
    ('node_power', dict(stagger=NAN), 'stagger must be a finite number'),
    ('node_power', dict(lock_timeout=1e12), 'lock_timeout must be from 0 to 3600'),
    ('node_power', dict(command_timeout=-1), 'command_timeout must be more than 0'),
    ('node_power', dict(on_threshold_ma=-1), 'on_threshold_ma must be from 0 to 10000'),
    ('node_power', dict(state='of'), 'state'),
    ('node_power', dict(boot_mode='USB'), 'boot_mode'),
    ('fan', dict(duty_percent=NAN), 'duty_percent must be a finite number'),
    ('fan', dict(duty_percent=101), 'duty_percent must be from 0 to 100 %, not 101'),
    ('fan', dict(duty_percent=-0.1), 'duty_percent must be from 0 to 100'),
    ('fan', dict(min_drive_percent=INF), 'min_drive_percent must be a finite number'),
    ('fan', dict(mode='rpm', duty_percent=None, target_rpm=-5), 'target -5 RPM is unreachable'),
    ('fan', dict(mode='rpm', duty_percent=None, target_rpm=10 ** 9), 'RPM is unreachable'),
    ('fan', dict(registers={'0xef': 1}), 'software lock'),
    ('fan', dict(registers={'0x33': 256}), 'not a byte'),
    ('fan', dict(registers={'fan': 1}), 'not a register'),
    ('fan', dict(registers={'0x33': 1.5}), 'registers'),
    ('fan', dict(mdoe='pwm'), 'mdoe'),
    ('fan', dict(i2c_bus='unix:/nonexistent'), 'cannot connect to I2C bus socket /nonexistent'),
    ('hat_info', dict(tmp117_addresses={'5': 0x48}), 'tmp117_addresses names node 5'),
    ('hat_info', dict(tmp117_addresses={'1': 0x80}), 'outside 0x08..0x77'),
    ('hat_info', dict(tmp117_addresses={'1': 'x'}), 'must be an integer'),
    ('hat_info', dict(tmp117_addresses={'1': 0x49, '2': 0x49}), 'the same address 0x49'),
    ('hat_info', dict(ina226_shunt_ohm=NAN), 'ina226_shunt_ohm must be a resistance above 0'),
    ('hat_info', dict(ina226_shunt_ohm=0), 'ina226_shunt_ohm must be a resistance above 0'),
    ('hat_info', dict(ina226_address=0x80), 'outside 0x08..0x77'),
    ('hat_info', dict(port='/dev/ttyACM0\n'), 'port must not contain control characters'),
    # Ansible's own refusals quote the value given: its newline is shown, not printed.
    ('node_power', dict(force='yes\nno'), "The value 'yes\\nno' is not a valid boolean"),
    ('rp2040_firmware', dict(install='always\n'), "value of install must be one of: never, missing, always, got: always\\n"),
    ('hat_calibrate', dict(samples='three\n'), "argument 'samples' is of type str"),
    ('usb2517_eeprom', dict(serial='0000\n0000'), 'serial must not contain control characters'),
    ('usb2517_eeprom', dict(product='x' * 40), 'product'),
    ('usb2517_eeprom', dict(vid=70000), 'vid'),
    ('usb2517_eeprom', dict(port_swap=[9]), 'port_swap'),
    ('usb2517_eeprom', dict(address=0x60), 'address must be from 80 to 83'),
    ('usb2517_eeprom', dict(src=F('empty.img')), 'is empty'),
    ('usb2517_eeprom', dict(src=F('base')), 'is a directory'),
    ('usb2517_eeprom', dict(src=F('text.txt')), 'exactly 256'),
    ('usb2517_eeprom', dict(backup=F('base')), 'backup'),
    ('usb2517_eeprom', dict(cfg4=1), 'cfg4'),
    # Paths of the right kind.
    ('node_flash', dict(image=F('empty.img')), 'image %(empty.img)s is empty'),
    ('node_flash', dict(image=F('base')), 'is a directory'),
    ('node_flash', dict(image='/dev/null'), 'image /dev/null is not a regular file'),
    ('node_flash', dict(image=F('missing.img.xz')), 'not found on the controller'),
    ('node_flash', dict(image=None), 'image is required'),
    ('node_flash', dict(bmap=F('empty.img')), 'bmap %(empty.img)s is empty'),
    ('node_flash', dict(bmap=F('garbage.bmap')), 'not well-formed XML'),
    ('node_flash', dict(state_dir=F('text.txt')), 'state_dir %(text.txt)s must be a directory, but it is a file'),
    ('node_flash', dict(lock_dir=F('text.txt')), 'lock_dir'),
    ('node_flash', dict(root=F('text.txt')), 'root'),
    ('node_flash', dict(progress_file=F('base')), 'progress_file'),
    ('node_power', dict(state_dir=F('text.txt')), 'state_dir %(text.txt)s must be a directory'),
    # The image and its bmap.
    ('node_flash', dict(bmap='%(other)s.bmap'), 'does not belong to image'),
    ('node_flash', dict(image='%(other)s.xz'), 'use the bmap made for this image'),
    ('node_flash', dict(sha256='0' * 64), 'no node was touched'),
    ('node_flash', dict(sha256='xyz'), 'sha256 must be a SHA-256 hex digest'),
    # Maps keyed by node, strings that land in files.
    ('node_flash', dict(usb_paths={'5': '1-1.2.5'}), "usb_paths key '5' is not a node number 1 to 4"),
    ('node_flash', dict(usb_paths={'1': '1-1.3.3', '2': '1-1.3.3'}), 'usb_paths gives nodes 1 and 2 the same USB path 1-1.3.3'),
    ('node_flash', dict(usb_paths={'1': '1-1.2.1\n'}), 'must not contain control characters'),
    ('node_flash', dict(usb_paths={'1': '/dev/sda'}), 'is not a sysfs USB device name'),
    ('node_flash', dict(usb_paths={'1': '1-1.2.1', 'node1': '1-1.2.1'}), 'usb_paths names node 1 twice'),
    ('node_flash', dict(consoles={'x': '/dev/ttyAMA1'}), "consoles key 'x' is not a node number"),
    ('node_flash', dict(wait_for='login:'), 'wait_for needs a console for node 1, 2'),
    ('node_flash', dict(wait_for='(', consoles={'1': 'a', '2': 'b'}), 'is not a regular expression'),
    ('node_flash', dict(wait_for='login:\n'), 'wait_for must not contain control characters'),
    ('node_flash', dict(firstboot={'hostname': 'node1\nevil'}), 'firstboot.hostname must not contain control'),
    ('node_flash', dict(firstboot={'hostname': 'bad_name'}), 'not a valid host name'),
    ('node_flash', dict(firstboot={'user': 'Root', 'ssh_authorized_keys': ['ssh-ed25519 AAAA x']}), 'not a valid user'),
    ('node_flash', dict(firstboot={'user': 'pi', 'password_hash': 'hunter2'}), 'password_hash is not a crypt(3) hash'),
    ('node_flash', dict(firstboot={'user': 'pi', 'ssh_authorized_keys': ['ssh-ed25519 AAAA\nx']}), 'must not contain'),
    ('node_flash', dict(firstboot={'hostnmae': 'x'}), 'hostnmae'),
    ('node_flash', dict(firstboot=False), 'firstboot must be a dictionary, not False'),
    ('node_flash', dict(firstboot={'user': 'pi'}), 'nobody could log in'),
    ('node_flash', dict(rpiboot=F('text.txt')), 'rpiboot executable'),
    ('node_flash', dict(rpiboot_payload='no-such-payload'), 'rpiboot payload no-such-payload not found'),
    ('node_flash', dict(nodez=[1]), 'nodez'),
    ('node_flash', dict(force='ture'), 'force'),
    ('node_flash', dict(port='a\x1b[31m'), 'port must not contain control characters'),
]


def resolve(value, files):
    if isinstance(value, tuple) and value[0] == 'file':
        return files['base'] if value[1] == 'base' else os.path.join(files['base'], value[1])
    if isinstance(value, str) and '%(' in value:
        return value % dict(files, **dict((k, os.path.join(files['base'], k)) for k in os.listdir(files['base'])))
    return value


def expected(words, files):
    names = dict((k, os.path.join(files['base'], k)) for k in ('empty.img', 'text.txt'))
    return words % names if '%(' in words else words


@pytest.mark.parametrize('name, change, words', CASES, ids=['%s-%d' % (c[0], i) for i, c in enumerate(CASES)])
def test_refused_input_changes_nothing(hat, files, name, change, words):
    args = base_args(name, hat, files)
    for key, value in change.items():
        if value is None:
            args.pop(key, None)
        else:
            args[key] = resolve(value, files)
    before = snapshot(hat)
    result = run(name, args)
    assert result.get('failed') is True, result
    msg = result['msg']
    assert '\n' not in msg and 'Traceback' not in msg, msg
    assert expected(words, files) in msg, msg
    assert 'hunter2' not in json.dumps(result)
    assert snapshot(hat) == before


@pytest.mark.parametrize('name', sorted(MODULES))
def test_the_valid_call_the_cases_start_from_is_accepted(hat, files, name):
    """Each refusal above comes from the one change it makes, not from a base call that was wrong already."""
    result = run(name, base_args(name, hat, files), check_mode=True)
    assert not result.get('failed'), result.get('msg')


JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10 ** 12, max_value=10 ** 12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(['1', '4', '12', '1,3', 'inf', 'nan', '-1', '0x50', '1e9', '', ' ', 'a\nb', '/dev/null', '..']),
    st.lists(st.one_of(st.integers(min_value=-3, max_value=9), st.text(max_size=3), st.booleans()), max_size=4),
    st.dictionaries(st.sampled_from(['1', '2', '5', 'node3', 'x', '0x33', 'mode']),
                    st.one_of(st.integers(-1, 300), st.text(max_size=4)), max_size=3),
)

OPTIONS = {
    'node_flash': ['node', 'nodes', 'restart_delay', 'stagger', 'rpiboot_timeout', 'disk_timeout', 'boot_timeout',
                   'write_chunk_size', 'usb_paths', 'consoles', 'wait_for', 'sha256', 'firstboot', 'lock_timeout',
                   'on_threshold_ma', 'watchdog', 'force', 'verify', 'image'],
    'node_power': ['node', 'nodes', 'state', 'boot_mode', 'stagger', 'restart_delay', 'lock_timeout',
                   'command_timeout', 'on_threshold_ma', 'ma_per_unit', 'force'],
    'fan': ['mode', 'duty_percent', 'target_rpm', 'poles', 'min_drive_percent', 'spin_up_level_percent',
            'spin_up_time_ms', 'update_time_ms', 'pwm_frequency', 'registers', 'address'],
    'usb2517_eeprom': ['vid', 'pid', 'did', 'cfg1', 'non_removable_ports', 'max_power_bus_ma', 'power_on_time_ms',
                       'manufacturer', 'product', 'serial', 'boost', 'port_swap', 'port_remap', 'address', 'self_powered'],
    'hat_info': ['tmp117_addresses', 'ina226_address', 'ina226_shunt_ohm', 'sensors', 'on_threshold_ma',
                 'ma_per_unit', 'command_timeout'],
    'rp2040_firmware': ['install', 'uf2', 'force', 'gpio', 'usb_hub', 'drive_timeout', 'console_timeout', 'hat',
                        'uart_port'],
    'hat_calibrate': ['nodes', 'recalibrate', 'samples', 'settle', 'ina226_shunt_ohm', 'lock_timeout', 'hat'],
}


@pytest.mark.parametrize('name', sorted(OPTIONS))
def test_generated_junk_is_refused_in_one_line_or_harmless(hat, files, name):
    # Check mode: a junk input that happens to be valid must not change anything either.
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(changes=st.dictionaries(st.sampled_from(OPTIONS[name]), JUNK, min_size=1, max_size=3))
    def check(changes):
        args = base_args(name, hat, files)
        args.update(changes)
        if 'node' in changes and 'nodes' in args and 'nodes' not in changes:
            del args['nodes']
        if 'nodes' in changes and 'node' in args and 'node' not in changes:
            del args['node']
        before = snapshot(hat)
        result = run(name, args, check_mode=True)
        if result.get('failed'):
            assert result.get('msg') and '\n' not in result['msg'] and 'Traceback' not in result['msg'], result
        after = snapshot(hat)
        before.pop('commands')
        after.pop('commands')
        assert after == before, (changes, result.get('msg'))

    check()
