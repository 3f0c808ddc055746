# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.transports import rp2040
from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.transports.fake_serial import ScriptedSerial, FirmwareSerial


@pytest.fixture
def console(tmp_path, monkeypatch):
    """A console on whatever port double the test installs as console.port_double."""
    holder = {}
    monkeypatch.setattr(rp2040.serial, 'serial_for_url', lambda *a, **kw: holder['port'])

    def make(port, timeout=0.5):
        holder['port'] = port
        return rp2040.RP2040Console('/dev/ttyACM0', lock_dir=str(tmp_path), timeout=timeout)
    return make


def test_parse_average_datasheet_format():
    assert rp2040.parse_average('512.250000 mA,0.805861 mA,3300.000000 mA,0.000000 mA') == [512.25, 0.805861, 3300.0, 0.0]


def test_parse_average_rejects_three_channels():
    with pytest.raises(ValueError):
        rp2040.parse_average('1.0 mA,2.0 mA,3.0 mA')


def test_parse_sample():
    assert rp2040.parse_sample('0x26C -> 0.499072 V') == (0x26C, 0.499072)


def test_split_lines_crlf_and_lf_and_partial():
    assert rp2040.split_lines(b'a\r\nb\nc') == (['a', 'b'], 'c')


@pytest.mark.parametrize('eol', [b'\r\n', b'\n'])
def test_enable_reply_on_echo_line(console, eol):
    port = ScriptedSerial([[b'c2' + eol + b'Switched to channel 2' + eol], [b'eEnable:2' + eol]])
    with console(port) as c:
        c.pin(2, rp2040.ENABLE)
    assert port.written == [b'c2', b'e']


def test_reply_in_fragments_waits_for_complete_line(console):
    port = ScriptedSerial([[b'a', b'\r', b'\n12.5 mA,0.1 mA,', b'7.000000 mA,0.0', b'00000 mA\r\n']])
    with console(port) as c:
        assert c.averages() == [12.5, 0.1, 7.0, 0.0]


def test_garbage_before_echo_is_skipped(console):
    port = ScriptedSerial([[b'\x00\xffzz\r\nnoise', b'dDisable:0\r\n']])
    with console(port) as c:
        c.selected = 0
        c.pin(0, rp2040.DISABLE)


def test_stale_reply_is_drained_not_taken_for_the_answer(console):
    # A late 'Enable:1' from an interrupted exchange sits in the buffer; the real answer follows.
    port = ScriptedSerial([[b'eEnable:0\r\n']], pending=b'Enable:1\r\n')
    with console(port) as c:
        c.selected = 0
        c.pin(0, rp2040.ENABLE)


def test_silent_device_times_out_with_port_in_message(console):
    port = ScriptedSerial([])
    with console(port, timeout=0.2) as c:
        with pytest.raises(rp2040.ConsoleError, match=r"no reply to 'c1' from the RP2040 on /dev/ttyACM0.*silent"):
            c.select(1)


def test_partial_line_never_completes(console):
    port = ScriptedSerial([[b'a\r\n12.0 mA,1.0 mA']])
    with console(port, timeout=0.2) as c:
        with pytest.raises(rp2040.ConsoleError, match='no reply'):
            c.averages()


def test_wrong_channel_in_reply_fails(console):
    port = ScriptedSerial([[b'eEnable:3\r\n']])
    with console(port) as c:
        c.selected = 1
        with pytest.raises(rp2040.ConsoleError, match='expected 1'):
            c.pin(1, rp2040.ENABLE)
    assert c.selected is None


def test_refused_command_fails(console):
    port = ScriptedSerial([[b'c9\r\nUnknown input channel\r\nCommands:\r\n']])
    with console(port) as c:
        c.selected = None
        with pytest.raises(rp2040.ConsoleError, match='refused'):
            c.exchange('c9', rp2040.SELECTED_RE)


def test_select_outside_range_sends_nothing(console):
    port = ScriptedSerial([])
    with console(port) as c:
        with pytest.raises(ValueError):
            c.select(4)
    assert port.written == []


@pytest.mark.parametrize('eol', [b'\r\n', b'\n'])
def test_against_firmware_model(console, eol):
    fw = FirmwareSerial(eol=eol)
    with console(fw) as c:
        c.pin(3, rp2040.USB_BOOT_ASSERT)
        c.pin(3, rp2040.ENABLE)
        c.pin(1, rp2040.ENABLE)
        c.pin(1, rp2040.RESET)
        currents = c.averages()
        raw, volts = c.sample(1)
    assert fw.en == [False, True, False, True]
    assert fw.nrpiboot == [True, True, True, False]
    assert fw.resets == [0, 1, 0, 0]
    assert currents == [1.5, 500.0, 1.5, 500.0]
    assert (raw, volts) == (0x26C, 0.499072)
    # Selected once per channel within one locked exchange.
    assert [x for x in fw.log if x[0] == 'c'] == [('c', 0), ('c', 3)]


def test_missing_port_is_one_line_error(tmp_path):
    c = rp2040.RP2040Console(str(tmp_path / 'ttyACM9'), lock_dir=str(tmp_path))
    with pytest.raises(rp2040.ConsoleError) as info:
        c.open()
    assert 'cannot open the RP2040 console %s' % (tmp_path / 'ttyACM9') in str(info.value)
    assert '\n' not in str(info.value)
    # The lock is not left held.
    assert c.lock._depth == 0
