# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hat role against a scratch system root: bad input is refused in one line before anything is
written, and check mode writes nothing. (Converge, idempotence and the files' contents: molecule's
hat scenario.)"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOK = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
CONFIG = '#dtparam=spi=on\ndtparam=audio=on\n\n[all]\n'
CMDLINE = 'console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootwait\n'

# (name, play vars as YAML, words the one-line message must hold). YAML on purpose: an unquoted
# 0644 must reach the role as YAML makes it, the number 420.
CASES = [
    ('mode-unquoted', 'hat_device_mode: 0644', 'YAML reads an unquoted 0644 as the decimal 420): write hat_device_mode: "0644"'),
    ('mode-world-writable', 'hat_device_mode: "0666"', 'keeps others from writing'),
    ('mode-injection', 'hat_device_mode: "0660\\"\\nKERNEL==\\"sda"', 'keeps others from writing'),
    ('group-injection', 'hat_device_group: \'dialout", MODE="0666\'', 'hat_device_group "dialout\\", MODE=\\"0666" is not a group'),
    ('i2c-group-newline', 'hat_i2c_group: "i2c\\nSUBSYSTEM==\\"tty\\""', 'hat_i2c_group'),
    ('user-space', 'hat_users: [pi, "bad user"]', 'an entry of hat_users "bad user"'),
    ('serial-injection', 'hat_rp2040_usb_serial: \'E66", MODE="0666\'', 'hat_rp2040_usb_serial'),
    ('vendor-short', 'hat_rp2040_usb_vendor: "2e8"', 'four hex digits'),
    ('consoles-duplicate', 'hat_node_consoles: {1: uart0, 2: uart0, 3: uart4, 4: uart3}', 'distinct UARTs'),
    ('consoles-old-style', 'hat_node_consoles: {1: {overlay: uart2, device: fe201400.serial}}', 'hat_node_consoles must map'),
    ('consoles-node-5', 'hat_node_consoles: {5: uart2}', 'node numbers 1 to 4'),
    ('consoles-injection', 'hat_node_consoles: {1: "uart2\\ndtparam=spi=on"}', 'hat_node_consoles must map'),
    ('rp2040-uart-taken', 'hat_rp2040_uart: uart4', 'not used by hat_node_consoles'),
    ('rp2040-name-injection', 'hat_rp2040_uart_name: \'x", MODE="0666\'', 'hat_rp2040_uart_name'),
    ('config-line-newline', 'hat_boot_config_extra: ["gpu_mem=16\\ndtparam=spi=on"]', 'is not a key=value line'),
    ('config-line-section', 'hat_boot_config_extra: ["[pi4]"]', 'is not a key=value line'),
    ('module-newline', 'hat_kernel_modules: ["i2c-dev\\nevil"]', 'hat_kernel_modules entry "i2c-dev\\nevil" is not a plain kernel module'),
    ('fan-typo', 'hat_fan_manage: true\nhat_fan: {mode: pwm, duty: 50}', 'hat_fan has unknown keys ["duty"]'),
    ('hub-typo', 'hat_usb2517_manage: true\nhat_usb2517: {manufaturer: Lab}', 'hat_usb2517 has unknown keys ["manufaturer"]'),
    ('hub-address', 'hat_usb2517_manage: true\nhat_usb2517_address: 96', '80..83'),
    ('hub-bus', 'hat_usb2517_manage: true\nhat_usb2517_i2c_bus: "1; reboot"', 'hat_usb2517_i2c_bus "1; reboot"'),
    ('reboot-timeout', 'hat_reboot_timeout: 999999', '30 to 3600 seconds'),
    ('path-relative', 'hat_udev_rules_path: rules/99.rules', 'hat_udev_rules_path "rules/99.rules" must be an absolute path'),
    ('config-missing', 'hat_boot_config_path: "{{ hat_root }}/boot/none.txt"', 'does not exist or is not a file: set hat_boot_config_path'),
    ('spi-on', 'hat_boot_config_path: "{{ hat_root }}/spi-config.txt"', 'turns SPI0 on'),
]


def snapshot(root):
    out = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = 'link:' + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, 'rb') as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest() + ' %o' % (os.stat(path).st_mode & 0o7777)
            else:
                out[rel] = 'dir'
    return out


@pytest.fixture
def scratch(tmp_path):
    root = tmp_path / 'root'
    for d in ('boot/firmware', 'etc/modules-load.d', 'etc/udev/rules.d', 'etc/systemd/system'):
        (root / d).mkdir(parents=True)
    (root / 'boot/firmware/config.txt').write_text(CONFIG)
    (root / 'boot/firmware/cmdline.txt').write_text(CMDLINE)
    (root / 'spi-config.txt').write_text('dtparam=spi=on\n')
    host = {
        'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable, 'hat_root': str(root),
        'hat_install_packages': False, 'hat_load_modules_now': False, 'hat_manage_groups': False,
        'hat_udev_reload': False, 'hat_serial_getty_stop_now': False,
        'hat_boot_config_path': str(root / 'boot/firmware/config.txt'),
        'hat_cmdline_path': str(root / 'boot/firmware/cmdline.txt'),
        'hat_modules_load_path': str(root / 'etc/modules-load.d/minicluster-cm4.conf'),
        'hat_udev_rules_path': str(root / 'etc/udev/rules.d/99-minicluster-cm4.rules'),
        'hat_systemd_unit_dir': str(root / 'etc/systemd/system'),
    }
    inventory = tmp_path / 'inventory.json'
    inventory.write_text(json.dumps({'controller': {'hosts': {'localhost': host}}}))
    return root, inventory


def playbook(tmp_path, inventory, path, *extra):
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', ANSIBLE_STDOUT_CALLBACK='default',
               ANSIBLE_RETRY_FILES_ENABLED='0')
    proc = subprocess.run([PLAYBOOK, '-i', str(inventory), str(path)] + list(extra), capture_output=True, text=True,
                          timeout=600, env=env, check=False, cwd=str(tmp_path))
    return proc.returncode, proc.stdout + proc.stderr


def test_bad_input_is_refused_in_one_line_and_nothing_is_written(scratch, tmp_path):
    root, inventory = scratch
    results = tmp_path / 'results.json'
    plays = []
    for name, yaml_vars, dummy in CASES:
        indented = '\n'.join('    ' + line for line in yaml_vars.splitlines())
        plays.append('''- name: case {name}
  hosts: controller
  gather_facts: false
  vars:
{vars}
  tasks:
    - name: Run the role with the bad input
      block:
        - name: The role
          ansible.builtin.include_role:
            name: minicluster.cm4.hat
        - name: Not refused
          ansible.builtin.set_fact:
            case_results: '{{{{ case_results | default({{}}) | combine({{"{name}": {{"failed": false}}}}) }}}}'
      rescue:
        - name: Record the message
          ansible.builtin.set_fact:
            case_results: '{{{{ case_results | default({{}}) | combine({{"{name}": {{"failed": true, "msg": ansible_failed_result.msg}}}}) }}}}'
'''.format(name=name, vars=indented))
    plays.append('''- name: Save the results
  hosts: controller
  gather_facts: false
  tasks:
    - name: Save them
      ansible.builtin.copy:
        dest: "{results}"
        content: '{{{{ case_results | to_json }}}}'
        mode: "0600"
'''.format(results=results))
    path = tmp_path / 'cases.yml'
    path.write_text('---\n' + '\n'.join(plays))
    before = snapshot(str(root))
    rc, out = playbook(tmp_path, inventory, path)
    assert rc == 0, out
    assert snapshot(str(root)) == before, 'a refused input changed the scratch root'
    problems = []
    recorded = json.loads(results.read_text())
    for name, dummy, words in CASES:
        got = recorded[name]
        if got['failed'] is not True:
            problems.append('%s was not refused' % name)
        elif words not in got['msg'] or '\n' in got['msg'].strip():
            problems.append('%s: %r' % (name, got['msg']))
    assert not problems, '\n'.join(problems)


def test_a_refused_playbook_run_fails_and_check_mode_writes_nothing(scratch, tmp_path):
    root, inventory = scratch
    before = snapshot(str(root))
    bad = tmp_path / 'bad.yml'
    bad.write_text('hat_device_mode: 0644\n')
    rc, out = playbook(tmp_path, inventory, os.path.join(REPO, 'playbooks', 'hat.yml'), '-e', '@%s' % bad,
                       '-e', 'hat_become=false')
    assert rc == 2, out
    assert 'hat_device_mode must be a quoted octal string' in out and 'failed=1' in out
    assert snapshot(str(root)) == before
    rc, out = playbook(tmp_path, inventory, os.path.join(REPO, 'playbooks', 'hat.yml'), '--check', '--diff',
                       '-e', 'hat_become=false')
    assert rc == 0, out
    assert snapshot(str(root)) == before, 'check mode wrote to the scratch root'
    assert '+dtoverlay=disable-bt' in out and '+dtoverlay=uart5' in out  # the diff says what a real run would write
    assert 'failed=0' in out and 'changed=0' not in out
