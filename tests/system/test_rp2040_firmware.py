# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rp2040_firmware against the simulated hat: BOOTSEL over its GPIO seam, the boot ROM's UF2 drive."""

from __future__ import annotations

import json

import pytest

from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.board.uf2_images import SAMD21, make_uf2
from moduletest import reset_sim, run_module, running_sim, sim_state


@pytest.fixture(scope='module')
def sim(tmp_path_factory):
    with running_sim(tmp_path_factory.mktemp('hatsim') / 'hat') as directory:
        yield directory


@pytest.fixture
def hat(sim):
    return reset_sim(sim)


def args(hat, **extra):
    out = dict(port=str(hat / 'rp2040'), uart_port=str(hat / 'rp2040-uart'), lock_dir=str(hat / 'lock'),
               state_dir=str(hat / 'state'), gpio='unix:%s' % (hat / 'gpio.sock'), root=str(hat),
               drive_timeout=10, console_timeout=10)
    out.update(extra)
    return out


def firmware_file(tmp_path, blocks=24, family=None):
    data, digest = make_uf2(blocks=blocks) if family is None else make_uf2(blocks=blocks, family=family)
    path = tmp_path / 'adc_console.uf2'
    path.write_bytes(data)
    return str(path), digest


def untouched(hat):
    rp = sim_state(hat)['rp2040']
    return rp['boots'] == 1 and rp['mode'] == 'firmware' and rp['gpio'] == {'19': 1, '21': 1, '25': 1, '26': 1}


def test_check_only_is_read_only(hat, tmp_path):
    out = run_module('rp2040_firmware', args(hat), tmp_path)
    assert (out['changed'], out['answers'], out['installed']) == (False, True, False), out
    assert out['console'] == {'port': str(hat / 'rp2040'), 'path': 'usb'}
    assert untouched(hat)


def test_install_through_bootsel_then_idempotent(hat, tmp_path):
    uf2, digest = firmware_file(tmp_path)
    checked = run_module('rp2040_firmware', args(hat, install='always', uf2=uf2), tmp_path, check_mode=True)
    assert (checked['changed'], checked['installed']) == (True, True), checked
    assert untouched(hat)

    out = run_module('rp2040_firmware', args(hat, install='always', uf2=uf2), tmp_path, diff=True)
    assert (out['changed'], out['installed'], out['answers']) == (True, True, True), out.get('msg')
    assert out['drive']['usb_path'] == '1-1.3.1'
    assert out['uf2']['blocks'] == 24
    rp = sim_state(hat)['rp2040']
    # The boot ROM took the whole image and rebooted into the flash: BOOTSEL was released in time.
    assert rp['firmware_sha256'] == digest
    assert (rp['mode'], rp['boots']) == ('firmware', 3)
    assert rp['gpio'] == {'19': 1, '21': 1, '25': 1, '26': 1}

    again = run_module('rp2040_firmware', args(hat, install='missing', uf2=uf2), tmp_path)
    assert (again['changed'], again['installed'], again['answers']) == (False, False, True), again
    assert sim_state(hat)['rp2040']['boots'] == 3


def test_refuses_while_a_node_is_on_unless_forced(hat, tmp_path):
    uf2, dummy = firmware_file(tmp_path, blocks=4)
    power = dict(port=str(hat / 'rp2040'), lock_dir=str(hat / 'lock'), state_dir=str(hat / 'state'), stagger=0)
    assert run_module('node_power', dict(power, node=2, state='on'), tmp_path)['changed']
    out = run_module('rp2040_firmware', args(hat, install='always', uf2=uf2), tmp_path)
    assert out['failed'] is True and 'node 2 is on' in out['msg'] and 'force' in out['msg'], out
    assert '\n' not in out['msg']
    assert out['nodes_on'] == [2]
    assert untouched(hat) and sim_state(hat)['nodes']['2']['en'] is True

    forced = run_module('rp2040_firmware', args(hat, install='always', uf2=uf2, force=True), tmp_path)
    assert forced['changed'] is True, forced
    assert any('nodes 2 lose power' in json.dumps(w) for w in forced.get('warnings', []))
    state = sim_state(hat)
    assert state['nodes']['2']['en'] is False and state['rp2040']['mode'] == 'firmware'
    # The controller knows the reset released every pin: node 2 reads as off, without a stale 'on'.
    status = run_module('node_power', dict(power, node=2, state='off'), tmp_path)
    assert status['changed'] is False and status['nodes'][0]['boot_mode'] == 'normal', status


@pytest.mark.parametrize('kind, message', [('text', 'not a UF2 file'), ('samd21', 'not the RP2040 (0xE48BFF56)')])
def test_bad_uf2_is_one_line_error_and_changes_nothing(hat, tmp_path, kind, message):
    if kind == 'text':
        path = tmp_path / 'adc_console.uf2'
        path.write_text('<html>404 Not Found</html>\n' * 40)
        uf2 = str(path)
    else:
        uf2, dummy = firmware_file(tmp_path, blocks=4, family=SAMD21)
    out = run_module('rp2040_firmware', args(hat, install='always', uf2=uf2, force=True), tmp_path)
    assert out['failed'] is True and message in out['msg'], out
    assert '\n' not in out['msg']
    assert untouched(hat)
    assert sim_state(hat)['rp2040']['log_total'] == 0


def test_silent_console_needs_force(hat, tmp_path):
    """A console that does not answer (here: the RP2040 held in its boot ROM by someone else) leaves
    the node currents unknown: the install refuses without force, and with it brings the console back."""
    from ansible_collections.minicluster.cm4.plugins.module_utils.transports import gpio
    lines = gpio.open_lines('unix:%s' % (hat / 'gpio.sock'))
    try:
        lines.output({21: 0, 25: 1})
        lines.output({25: 0})
        lines.output({25: 1})
        lines.release([21, 25])
    finally:
        lines.close()
    assert sim_state(hat)['rp2040']['mode'] == 'bootrom'
    uf2, digest = firmware_file(tmp_path, blocks=4)
    quick = dict(command_timeout=0.5)
    out = run_module('rp2040_firmware', args(hat, install='missing', uf2=uf2, **quick), tmp_path)
    assert out['failed'] is True and 'does not answer' in out['msg'] and 'force' in out['msg'], out
    forced = run_module('rp2040_firmware', args(hat, install='missing', uf2=uf2, force=True, **quick), tmp_path)
    assert (forced['changed'], forced['answers']) == (True, True), forced
    assert forced['console']['path'] == 'usb'
    assert sim_state(hat)['rp2040']['firmware_sha256'] == digest
