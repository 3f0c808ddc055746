# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hat simulator against the hardware facts it models (shared/hardware.md and the datasheets)."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
import tty

import pytest

from hatsim import rp2040 as fw
from hatsim.chips import emc2301, usb2517
from hatsim.client import Control, ControlError, I2C
from hatsim.testing import running_hat, start, stop

FAST = dict(boot_delay=0.1, disk_delay=0.3, rpiboot_timeout=0.6, emmc_size='8M')
HELP_CRLF = fw.HELP.replace('\n', '\r\n').encode('ascii')
EEPROM = 0x50
EMC = 0x2F
INA = 0x40
TMP = {1: 0x49, 2: 0x48, 3: 0x4B, 4: 0x4A}  # ADD0 open, GND, SCL, SDA on slots 1..4


@pytest.fixture(scope='module')
def shared_hat(tmp_path_factory):
    with running_hat(tmp_path_factory.mktemp('shared') / 'hat', empty_slots=(4,), **FAST) as sim:
        yield sim


@pytest.fixture
def hat(shared_hat):
    """The shared simulator, as if just started: power-cycled, blank EEPROM, zeroed eMMCs."""
    shared_hat.control.power_cycle(wipe_emmc=True, wipe_eeprom=True, clear_decoys=True, clear_log=True)
    yield shared_hat


class Port(object):
    """The controller's end of a pty, raw, byte by byte."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)

    def send(self, data):
        os.write(self.fd, data)

    def read_until(self, expected, timeout=3.0):
        """Bytes received until `expected` (bytes or compiled regex) is in them."""
        buf = b''
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (expected.search(buf) if hasattr(expected, 'search') else expected in buf):
                return buf
            ready, dummy, dummy2 = select.select([self.fd], [], [], 0.05)
            if ready:
                try:
                    buf += os.read(self.fd, 65536)
                except BlockingIOError:
                    pass
        raise AssertionError('timed out waiting for %r; got %r' % (expected, buf))

    def read_quiet(self, quiet=0.2, timeout=3.0):
        buf = b''
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet:
            ready, dummy, dummy2 = select.select([self.fd], [], [], 0.02)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except BlockingIOError:
                    chunk = b''
                if chunk:
                    buf += chunk
                    last = time.monotonic()
        return buf

    def exchange(self, data, expected, timeout=3.0):
        self.send(data)
        return self.read_until(expected, timeout)

    def close(self):
        os.close(self.fd)


@pytest.fixture
def port(hat):
    p = Port(hat.rp2040)
    yield p
    p.close()


def alive(pid):
    """Running (a zombie has exited: reaping it is its parent's business)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def wait_for(predicate, timeout=5.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError('condition not met within %.1fs' % timeout)


# -- RP2040 console ---------------------------------------------------------------------------------

def test_pin_commands_echo_then_reply_with_crlf(port):
    for cmd, reply in ((b'e', b'Enable:0'), (b'd', b'Disable:0'), (b'U', b'USB boot assert:0'),
                       (b'u', b'USB boot deassert:0')):
        assert port.exchange(cmd, b'\r\n') == cmd + reply + b'\r\n'
    assert port.read_quiet(0.1) == b''


def test_channel_select_good_and_bad(hat, port):
    assert port.exchange(b'c2', b'channel 2\r\n') == b'c2\r\nSwitched to channel 2\r\n'
    got = port.exchange(b'c7', HELP_CRLF)
    assert got == b'c7\r\nUnknown input channel\r\n' + HELP_CRLF
    # The selection did not change.
    assert port.exchange(b'e', b'\r\n') == b'eEnable:2\r\n'
    state = hat.state()
    assert state['rp2040']['channel'] == 2
    assert state['nodes']['3']['en'] is True and state['nodes']['1']['en'] is False


def test_c_waits_for_its_digit_and_echoes_it(port):
    port.send(b'c')
    assert port.read_quiet(0.15) == b'c'
    port.send(b'1')
    assert port.read_until(b'channel 1\r\n') == b'1\r\nSwitched to channel 1\r\n'
    # A newline as the "digit" is echoed by the same printf: two line ends.
    assert port.exchange(b'c\n', HELP_CRLF) == b'c\r\n\r\nUnknown input channel\r\n' + HELP_CRLF


def test_reset_pulse_takes_100ms_and_is_spelled_reseting(port):
    start_t = time.monotonic()
    port.send(b'r')
    got = port.read_until(b'\r\n')
    assert got == b'rReseting:0\r\n'
    assert time.monotonic() - start_t >= 0.1


def test_sample_reply_format(port):
    got = port.exchange(b's', re.compile(rb' V\r\n$'))
    found = re.match(rb'^s\r\n0x([0-9a-f]{3}) -> (\d\.\d{6}) V\r\n$', got)
    assert found, got
    raw = int(found.group(1), 16)
    assert found.group(2).decode() == '%f' % fw.f32(raw * fw.VOLTS_PER_LSB)


def test_average_reports_four_channels_in_millivolts(hat, port):
    port.exchange(b'c1', b'channel 1\r\n')
    port.exchange(b'e', b'\r\n')
    got = port.exchange(b'a', re.compile(rb'mA\r\n$'))
    found = re.match(rb'^a\r\n(\d+\.\d{6}) mA,(\d+\.\d{6}) mA,(\d+\.\d{6}) mA,(\d+\.\d{6}) mA\r\n$', got)
    assert found, got
    values = [float(v) for v in found.groups()]
    assert values[1] > 300, values          # node 2 powered, with a card
    # Unpowered cards still draw through their eFuse (converters, NVMe): small, never zero.
    assert 5 < values[0] < 60 and 5 < values[2] < 60, values
    assert values[3] < 1                     # slot 4 is empty
    port.exchange(b'c3', b'channel 3\r\n')
    port.exchange(b'e', b'\r\n')
    values = [float(v) for v in re.findall(rb'(\d+\.\d+) mA', port.exchange(b'a', re.compile(rb'mA\r\n$')))]
    assert values[3] < 1, 'an empty slot never draws current, even with EN high'


def test_average_takes_a_few_milliseconds(port):
    port.read_quiet(0.1)
    start_t = time.monotonic()
    port.exchange(b'a', re.compile(rb'mA\r\n$'))
    assert time.monotonic() - start_t >= fw.AVERAGE_TIME_S


def test_average_uses_the_firmwares_float_constant():
    # const float conversion_factor = 3.3f / (1 << 12) * 1000.0 is rounded to a float (0.8056640625),
    # so a mean of 1241 counts prints 999.829102, not the 999.829087 a double constant would give.
    assert fw.average_line([1241000, 600000, 30000, 0]) == '\n999.829102 mA,483.398438 mA,24.169922 mA,0.000000 mA\n'


def test_help_is_the_shipped_binarys_and_w_is_unrecognised(port):
    shipped = b'\r\nCommands:\r\nc0, ...\t: Select ADC channel n\r\ns\t: Sample once\r\nS\t: Sample many\r\nw\t: Wiggle pins\r\n'
    assert HELP_CRLF == shipped
    assert port.exchange(b'w', shipped) == b'w\r\nUnrecognised command: w\r\n' + shipped


def test_help_unrecognised_and_line_ends(port):
    assert port.exchange(b'h', HELP_CRLF) == b'h' + HELP_CRLF
    assert port.exchange(b'x', HELP_CRLF) == b'x\r\nUnrecognised command: x\r\n' + HELP_CRLF
    port.send(b'\r')
    assert port.read_quiet(0.1) == b'\r'
    port.send(b'\n')
    assert port.read_quiet(0.1) == b'\r\n'


def test_lf_mode_sends_bare_newlines(hat, port):
    hat.control.set(line_ending='lf')
    assert port.exchange(b'e', b'\n') == b'eEnable:0\n'
    assert port.exchange(b'c1', b'channel 1\n') == b'c1\nSwitched to channel 1\n'
    port.send(b'\n')
    assert port.read_quiet(0.1) == b'\n'
    assert port.exchange(b'x', fw.HELP.encode()) == b'x\nUnrecognised command: x\n' + fw.HELP.encode()


def test_command_log_records_the_channel_of_each_command(hat, port):
    for data, end in ((b'c1', b'channel 1\r\n'), (b'e', b'\r\n'), (b'c3', b'channel 3\r\n'), (b'U', b'\r\n'),
                      (b'c9', HELP_CRLF), (b'd', b'\r\n')):
        port.exchange(data, end)
    state = hat.state_file_json()
    log = state['rp2040']['log']
    assert [(e['cmd'], e['channel']) for e in log] == [('c1', 1), ('e', 1), ('c3', 3), ('U', 3), ('c9', 3), ('d', 3)]
    assert [e['seq'] for e in log] == list(range(1, 7))
    assert state['rp2040']['log_total'] == 6


def test_stale_output_is_not_seen_by_the_next_opener(hat):
    first = Port(hat.rp2040)
    first.send(b'h')
    time.sleep(0.2)
    first.close()  # leaves the help text unread
    time.sleep(0.15)
    second = Port(hat.rp2040)
    try:
        assert second.read_quiet(0.2) == b''
        assert second.exchange(b'e', b'\r\n') == b'eEnable:0\r\n'
    finally:
        second.close()


def test_usb_boot_is_sampled_at_power_on(hat, port):
    port.exchange(b'e', b'\r\n')
    port.exchange(b'U', b'\r\n')  # too late: the SoC already booted
    node = hat.state()['nodes']['1']
    assert node['usb_boot_at_power_on'] is False and node['nrpiboot'] is False
    port.exchange(b'd', b'\r\n')
    port.exchange(b'e', b'\r\n')
    node = hat.state()['nodes']['1']
    assert node['usb_boot_at_power_on'] is True and node['mode'] == 'usb_rom' and node['boots'] == 2


# -- I2C protocol -----------------------------------------------------------------------------------

def test_i2c_nack_combined_and_malformed(hat):
    with hat.i2c() as bus:
        assert bus.transfer({'addr': 0x10, 'read': 1}) == {'ok': False, 'error': 'nack', 'addr': 0x10}
        reply = bus.transfer({'addr': EMC, 'write': [0xFD]}, {'addr': EMC, 'read': 3})
        assert reply == {'ok': True, 'data': [[0x37, 0x5D, 0x80]]}
        # Messages before the NACK take effect, as on a real bus.
        reply = bus.transfer({'addr': EMC, 'write': [0x30, 0x42]}, {'addr': 0x11, 'read': 1})
        assert reply == {'ok': False, 'error': 'nack', 'addr': 0x11}
        assert bus.read_reg(EMC, 0x30, 1) == [0x42]
        for bad in (b'not json\n', b'[1,2]\n', b'{"op":"transfer","msgs":[]}\n', b'{"op":"nope"}\n',
                    b'{"op":"transfer","msgs":[{"addr":300,"read":1}]}\n',
                    b'{"op":"transfer","msgs":[{"addr":80,"write":[256]}]}\n',
                    b'{"op":"transfer","msgs":[{"addr":80,"write":[1],"read":1}]}\n'):
            bus.sock.sendall(bad)
            line = b''
            while not line.endswith(b'\n'):
                line += bus.sock.recv(4096)
            reply = json.loads(line)
            assert reply['ok'] is False and reply['error'] != 'nack', (bad, reply)
        # Still serving after all that.
        assert bus.read_reg(INA, 0xFE, 2) == [0x54, 0x49]


def test_i2c_many_clients_at_once(hat):
    import threading
    errors = []

    def worker():
        try:
            with hat.i2c() as bus:
                for dummy in range(50):
                    assert bus.read_reg(INA, 0xFF, 2) == [0x22, 0x60]
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)
    threads = [threading.Thread(target=worker) for dummy in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# -- 24LC08 -----------------------------------------------------------------------------------------

def wait_ack(bus, addr=EEPROM, timeout=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bus.transfer({'addr': addr, 'write': []})['ok']:
            return
    raise AssertionError('EEPROM stayed busy')


def test_eeprom_page_wrap_and_last_16_win(hat):
    with hat.i2c() as bus:
        assert bus.write(EEPROM, [0x0E, 1, 2, 3, 4])['ok']
        wait_ack(bus)
        assert bus.read_reg(EEPROM, 0x00, 16) == [3, 4] + [0xFF] * 12 + [1, 2]
        # 20 bytes into page 2 starting at its first byte: bytes 17..20 overwrite bytes 1..4.
        assert bus.write(EEPROM, [0x20] + list(range(100, 120)))['ok']
        wait_ack(bus)
        assert bus.read_reg(EEPROM, 0x20, 16) == list(range(116, 120)) + list(range(104, 116))
    state = hat.state()['eeprom']
    assert state['page_writes'] == 2
    assert [(w['page'], w['address']) for w in state['writes']] == [(0, 0x0E), (2, 0x20)]
    assert state['hex'][:4] == '0304'


def test_eeprom_write_cycle_nacks_all_four_addresses(hat):
    # A long write cycle, so that a loaded machine still asks all eight times within it.
    hat.control.set(write_cycle_ms=5000)
    with hat.i2c() as bus, hat.i2c(hub=True) as hub:
        assert bus.write(0x52, [0x10, 0xAB])['ok']
        for addr in (0x50, 0x51, 0x52, 0x53):
            assert bus.transfer({'addr': addr, 'read': 1}) == {'ok': False, 'error': 'nack', 'addr': addr}
            assert hub.transfer({'addr': addr, 'read': 1}).get('error') == 'nack'
        wait_ack(bus, 0x52, timeout=10)
        assert bus.read_reg(0x52, 0x10, 1) == [0xAB]
    assert hat.state()['eeprom']['hex'][2 * 0x210:2 * 0x211] == 'ab'


def test_eeprom_random_sequential_read_rolls_over(hat):
    hat.control.set(write_cycle_ms=1)
    with hat.i2c(hub=True) as bus:
        assert bus.write(0x53, [0xFF, 0x11])['ok']
        wait_ack(bus)
        assert bus.write(0x50, [0x00, 0x22, 0x33])['ok']
        wait_ack(bus)
        # Random read at the last byte of block 3, on across the end of the array.
        assert bus.read_reg(0x53, 0xFE, 4) == [0xFF, 0x11, 0x22, 0x33]
        # A read with no address continues from the internal counter (now 0x002).
        assert bus.transfer({'addr': 0x51, 'read': 1}) == {'ok': True, 'data': [[0xFF]]}
        # Data followed by a repeated start instead of a stop is not written.
        reply = bus.transfer({'addr': 0x50, 'write': [0x40, 0x55]}, {'addr': 0x50, 'read': 1})
        assert reply == {'ok': True, 'data': [[0xFF]]}
        assert bus.transfer({'addr': 0x50, 'write': []})['ok']  # no write cycle started
        assert bus.read_reg(0x50, 0x40, 1) == [0xFF]
    assert hat.state()['eeprom']['page_writes'] == 2


def test_jumpers_join_the_hub_bus(hat):
    with hat.i2c() as bus, hat.i2c(hub=True) as hub:
        assert hub.read_reg(0x50, 0, 1) == [0xFF]
        hat.control.set(jumpers=False)
        for addr in (0x50, 0x53, 0x2C, 0x10):
            assert hub.transfer({'addr': addr, 'read': 1})['error'] == 'nack'
        assert bus.transfer({'addr': 0x50, 'read': 1})['error'] == 'nack'
        assert bus.read_reg(INA, 0xFE, 2) == [0x54, 0x49]  # the Pi's own bus is unaffected
    assert hat.state_file_json()['jumpers'] is False


def stock_hub_image():
    image = bytearray(256)
    image[0:2] = [0x24, 0x04]
    image[2:4] = [0x17, 0x25]
    image[6:9] = [0x95, 0x20, 0x01]
    image[0x0C:0x11] = [0x01, 0x32, 0x01, 0x32, 0x32]
    for offset, text in ((0x16, 'hatsim'), (0x54, 'RaspberryPiCluster'), (0x92, '00000000')):
        raw = text.encode('utf-16-le')
        image[offset:offset + len(raw)] = raw
    image[0x13:0x16] = [len('hatsim'), len('RaspberryPiCluster'), 8]
    image[0xFA] = 0xFE
    return bytes(image)


def test_hub_loads_its_configuration_from_block_0(hat):
    assert hat.state()['usb_hub']['image'] == 'blank'
    hat.control.set(write_cycle_ms=1)
    image = stock_hub_image()
    with hat.i2c() as bus:
        for page in range(16):
            assert bus.write(EEPROM, [page * 16] + list(image[page * 16:page * 16 + 16]))['ok']
            wait_ack(bus)
    assert hat.state()['eeprom']['page_writes'] == 16
    hub = hat.control.hub_reset()
    assert hub['image'] == 'usb2517' and hub['vid'] == '0424' and hub['pid'] == '2517'
    assert hub['downstream_swapped'] is True and hub['port_works']['1'] is True
    assert hub['strings']['product'] == 'RaspberryPiCluster'
    assert usb2517.decode(image)['upstream_swapped'] is False


def usb_ids(hat, name):
    base = os.path.join(hat.dir, 'sys', 'bus', 'usb', 'devices', name)
    if not os.path.isdir(base):
        return None
    with open(os.path.join(base, 'idVendor')) as v, open(os.path.join(base, 'idProduct')) as p:
        return '%s:%s' % (v.read().strip(), p.read().strip())


def test_usb_tree_is_the_hats_wiring(hat, port):
    # The Pi 4's VL805 hub, the hat's USB2517 on its port 3, the RP2040 on hub port 1 ...
    assert usb_ids(hat, '1-1') == '2109:3431'
    assert usb_ids(hat, '1-1.3') == '0424:2517'
    hub = os.path.join(hat.dir, 'sys', 'bus', 'usb', 'devices', '1-1.3')
    with open(os.path.join(hub, 'maxchild')) as f:
        assert f.read() == '7\n'
    assert sorted(os.listdir(os.path.join(hub, '1-1.3:1.0')))[:2] == ['1-1.3-port1', '1-1.3-port2']
    assert usb_ids(hat, '1-1.3.1') == '2e8a:000a'
    assert os.listdir(os.path.join(hat.dir, 'sys', 'bus', 'usb', 'devices', '1-1.3.1', '1-1.3.1:1.0', 'tty')) == ['ttyACM0']
    assert os.path.realpath(os.path.join(hat.dir, 'dev', 'ttyACM0')) == os.path.realpath(hat.rp2040)
    # ... and node N on hub port N + 1 while it is in USB boot.
    assert usb_ids(hat, '1-1.3.3') is None
    usb_boot(port, 1)
    assert usb_ids(hat, '1-1.3.3') == '0a5c:2711'
    assert [usb_ids(hat, '1-1.3.%d' % p) for p in (2, 4, 5)] == [None, None, None]


def test_strict_hub_leaves_the_bus_in_reset_and_with_a_blank_eeprom(hat):
    hat.control.set(strict_hub=True)  # jumpers fitted: the hub is held in reset
    assert usb_ids(hat, '1-1.3') is None and usb_ids(hat, '1-1.3.1') is None
    assert not os.path.lexists(os.path.join(hat.dir, 'dev', 'ttyACM0'))
    hat.control.set(jumpers=False)  # out of reset with a blank EEPROM: no D+/D- swap, nothing enumerates
    assert usb_ids(hat, '1-1.3') is None
    hat.control.set(jumpers=True, write_cycle_ms=1)
    image = stock_hub_image()
    with hat.i2c() as bus:
        for page in range(16):
            assert bus.write(EEPROM, [page * 16] + list(image[page * 16:page * 16 + 16]))['ok']
            wait_ack(bus)
    hat.control.set(jumpers=False)
    assert usb_ids(hat, '1-1.3') == '0424:2517' and usb_ids(hat, '1-1.3.1') == '2e8a:000a'
    with open(os.path.join(hat.dir, 'sys', 'bus', 'usb', 'devices', '1-1.3', 'product')) as f:
        assert f.read() == 'RaspberryPiCluster\n'


def test_eeprom_survives_a_restart_and_initial_image(tmp_path):
    image = bytes(range(256)) * 4
    src = tmp_path / 'eeprom.bin'
    src.write_bytes(image)
    with running_hat(tmp_path / 'hat', eeprom_image=str(src), **FAST) as hat:
        with hat.i2c() as bus:
            assert bus.read_reg(0x51, 0x10, 2) == [0x10, 0x11]
            assert bus.write(0x50, [0, 0xEE])['ok']
    with running_hat(tmp_path / 'hat', **FAST) as hat:
        with hat.i2c() as bus:
            assert bus.read_reg(0x50, 0, 2) == [0xEE, 0x01]


# -- EMC2301 ----------------------------------------------------------------------------------------

def tach_count(bus):
    hi, lo = bus.read_reg(EMC, emc2301.TACH_READING_HIGH, 2)
    return ((hi << 8) | lo) >> 3


def test_emc2301_defaults_and_identity(hat):
    with hat.i2c() as bus:
        names = (0x20, 0x30, 0x31, 0x32, 0x33, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3C, 0x3D, 0xFD, 0xFE, 0xFF)
        regs = dict((reg, bus.read_reg(EMC, reg, 1)[0]) for reg in names)
    assert regs == {0x20: 0x40, 0x30: 0x00, 0x31: 0x01, 0x32: 0x2B, 0x33: 0x28, 0x35: 0x2A, 0x36: 0x19, 0x37: 0x10,
                    0x38: 0x66, 0x39: 0xF5, 0x3C: 0xF8, 0x3D: 0xFF, 0xFD: 0x37, 0xFE: 0x5D, 0xFF: 0x80}


def test_emc2301_stalled_fan_then_rpm_follows_drive(hat):
    with hat.i2c() as bus:
        assert tach_count(bus) == 0x1FFF
        bus.write(EMC, [0x30, 0xFF])
        time.sleep(3.0)
        count = tach_count(bus)
        rpm = emc2301.rpm_from_count(count, 2)  # range bits 01: m = 2
        assert 4500 < rpm < 5100, rpm
        assert abs(rpm - hat.state()['emc2301']['rpm']) < 150
        # Reading the high byte latches the low byte: separate reads give one consistent word.
        hi = bus.read_reg(EMC, 0x3E, 1)[0]
        lo = bus.read_reg(EMC, 0x3F, 1)[0]
        assert lo & 0x07 == 0 and 0 < ((hi << 8) | lo) >> 3 < 0x1FFF
    assert emc2301.rpm_from_count(1573, 2) == pytest.approx(3932160 * 2 / 1573)


def test_emc2301_rpm_mode_makes_fan_setting_read_only(hat):
    target = int(round(3932160 * 2 / 3000.0))
    with hat.i2c() as bus:
        bus.write(EMC, [0x3C, (target & 0x1F) << 3])
        bus.write(EMC, [0x3D, target >> 5])  # the target takes effect with the high byte
        bus.write(EMC, [0x32, 0x2B | 0x80])
        bus.write(EMC, [0x30, 0x10])
        assert hat.state()['emc2301']['tach_target'] == target

        def near_target():
            rpm = emc2301.rpm_from_count(tach_count(bus), 2)
            return rpm if abs(rpm - 3000) < 150 else None
        assert wait_for(near_target, timeout=15, step=0.2)
        assert bus.read_reg(EMC, 0x30, 1)[0] >= 0x66  # never below the minimum drive


def test_emc2301_software_lock(hat):
    with hat.i2c() as bus:
        assert hat.state()['emc2301']['locked'] is False
        bus.write(EMC, [0xEF, 0x01])
        bus.write(EMC, [0x32, 0x0B])
        bus.write(EMC, [0x38, 0x20])
        assert bus.read_reg(EMC, 0x32, 1) == [0x2B]
        assert bus.read_reg(EMC, 0x38, 1) == [0x66]
        bus.write(EMC, [0x30, 0x80])
        assert bus.read_reg(EMC, 0x30, 1) == [0x80]  # the fan can still be driven
        assert bus.read_reg(EMC, 0xEF, 1) == [0x01]
    state = hat.state_file_json()['emc2301']
    assert state['locked'] is True and state['lock_writes'] == 1


# -- INA226 and TMP117 ------------------------------------------------------------------------------

def s16(hi, lo):
    return struct.unpack('>h', bytes((hi, lo)))[0]


def test_ina226_current_and_power_follow_the_datasheet(hat, port):
    hat.control.set(shunt_ohms=0.002)  # a board refitted with a smaller shunt: no saturation
    for cmd, end in ((b'e', b'\r\n'), (b'c1', b'channel 1\r\n'), (b'e', b'\r\n')):
        port.exchange(cmd, end)
    with hat.i2c() as bus:
        assert bus.read_reg(INA, 0x00, 2) == [0x41, 0x27]
        assert bus.read_reg(INA, 0xFE, 2) == [0x54, 0x49] and bus.read_reg(INA, 0xFF, 2) == [0x22, 0x60]
        assert bus.read_reg(INA, 0x04, 2) == [0, 0]  # no calibration yet
        cal = 2560  # 1 mA/LSB with a 2 mOhm shunt: 0.00512 / (0.001 * 0.002)
        bus.write(INA, [0x05, cal >> 8, cal & 0xFF])
        # One triggered shunt-and-bus conversion (mode 011b): the results then hold still.
        bus.write(INA, [0x00, 0x41, 0x23])
        time.sleep(0.02)
        assert bus.read_reg(INA, 0x06, 2)[1] & 0x08  # conversion ready
        regs = bus.transfer({'addr': INA, 'write': [0x01]}, {'addr': INA, 'read': 2},
                            {'addr': INA, 'write': [0x02]}, {'addr': INA, 'read': 2},
                            {'addr': INA, 'write': [0x04]}, {'addr': INA, 'read': 2},
                            {'addr': INA, 'write': [0x03]}, {'addr': INA, 'read': 2})['data']
    shunt, bus_v, current, power = s16(*regs[0]), (regs[1][0] << 8) | regs[1][1], s16(*regs[2]), (regs[3][0] << 8) | regs[3][1]
    assert current == shunt * cal // 2048
    assert power == current * bus_v // 20000
    assert 11.7 < bus_v * 1.25e-3 < 12.05
    amps = shunt * 2.5e-6 / 0.002
    assert 0.9 < amps < 1.8, amps  # two nodes at a few hundred mA each, plus the hat's own 0.25 A


def test_ina226_with_the_schematics_shunt_saturates_above_0_82_a(hat, port):
    # R173 = 0R1: +-81.92 mV full scale is 0.82 A. Hat and idle cards stay below it ...
    with hat.i2c() as bus:
        time.sleep(0.01)
        idle = s16(*bus.read_reg(INA, 0x01, 2))
        assert 0.25 < idle * 2.5e-6 / 0.1 < 0.5, idle
        # ... two booting nodes do not: the shunt register sticks at its limit.
        for cmd, end in ((b'e', b'\r\n'), (b'c1', b'channel 1\r\n'), (b'e', b'\r\n')):
            port.exchange(cmd, end)
        time.sleep(0.01)
        assert bus.read_reg(INA, 0x01, 2) == [0x7F, 0xFF]


def test_ina226_reset_bit(hat):
    with hat.i2c() as bus:
        bus.write(INA, [0x05, 0x0A, 0x00])
        bus.write(INA, [0x00, 0x05, 0x27])
        assert bus.read_reg(INA, 0x00, 2) == [0x45, 0x27]  # bits 14:12 read back 100b
        bus.write(INA, [0x00, 0x80, 0x00])
        assert bus.read_reg(INA, 0x00, 2) == [0x41, 0x27]
        assert bus.read_reg(INA, 0x05, 2) == [0, 0]


def test_tmp117_reads_0x8000_until_its_first_conversion(hat):
    with hat.i2c() as bus:
        assert bus.read_reg(TMP[1], 0x0F, 2) == [0x01, 0x17]
        assert bus.transfer({'addr': TMP[4], 'read': 2})['error'] == 'nack'  # empty slot
        hat.control.set(empty_slots=[2, 4])
        assert bus.transfer({'addr': TMP[2], 'read': 2})['error'] == 'nack'
        hat.control.set(empty_slots=[4])  # a card goes in: its sensor powers up now
        assert bus.read_reg(TMP[2], 0x00, 2) == [0x80, 0x00]
        assert bus.read_reg(TMP[2], 0x01, 2) == [0x02, 0x20]
        time.sleep(0.2)
        value = s16(*bus.read_reg(TMP[2], 0x00, 2)) * 0.0078125
        assert 15 < value < 35, value
        assert bus.read_reg(TMP[2], 0x01, 2)[1] == 0x20


def test_temperature_rises_with_power(hat, port):
    port.exchange(b'e', b'\r\n')
    time.sleep(1.5)
    state = hat.state()
    assert state['nodes']['1']['temperature_c'] > state['nodes']['2']['temperature_c'] + 3


# -- USB boot, disks, decoys ------------------------------------------------------------------------

def usb_boot(port, channel):
    for cmd, end in (('c%d' % channel, 'channel %d\r\n' % channel), ('d', '\r\n'), ('U', '\r\n'), ('e', '\r\n')):
        port.exchange(cmd.encode(), end.encode())


def rpiboot(hat, *args, directory=None):
    gadget = directory or os.path.join(hat.dir, 'mass-storage-gadget64')
    os.makedirs(gadget, exist_ok=True)
    return subprocess.run([hat.rpiboot, '-d', gadget] + list(args), capture_output=True, text=True, timeout=30, check=False)


def disk_of(hat, usb_path):
    """The disk discovery a flashing tool does: block devices under the node's exact USB path."""
    base = os.path.join(hat.dir, 'sys', 'bus', 'usb', 'devices', usb_path)
    if not os.path.isdir(base):
        return None
    found = []
    for root, dirs, dummy in os.walk(os.path.realpath(base)):
        if os.path.basename(root) == 'block':
            found += dirs
    return found[0] if len(found) == 1 else None


def test_rpiboot_refuses_a_node_not_in_usb_boot(hat, port):
    port.exchange(b'e', b'\r\n')  # powered, but nRPIBOOT released
    start_t = time.monotonic()
    out = rpiboot(hat, '-p', '1-1.3.2')
    assert out.returncode == 1
    assert 'Waiting for BCM2835/6/7/2711/2712...' in out.stdout
    assert time.monotonic() - start_t >= 0.6
    assert disk_of(hat, '1-1.3.2') is None


def test_rpiboot_serves_the_exact_usb_path_and_the_disk_appears_later(hat, port):
    usb_boot(port, 2)  # node 3
    usb_boot(port, 0)  # node 1
    assert rpiboot(hat, '-p', '1-1.3.4').returncode == 0
    assert disk_of(hat, '1-1.3.4') is None  # rpiboot exits before the disk appears
    name = wait_for(lambda: disk_of(hat, '1-1.3.4'))
    assert name == 'sda' and disk_of(hat, '1-1.3.2') is None
    scsi = os.path.realpath(os.path.join(hat.dir, 'sys', 'block', name, 'device'))
    with open(os.path.join(scsi, 'model')) as f:
        assert f.read() == 'mmcblk0         \n'
    with open(os.path.join(hat.dir, 'sys', 'block', name, 'size')) as f:
        assert int(f.read()) == 8 * 1024 * 1024 // 512
    by_path = os.path.join(hat.dir, 'dev', 'disk', 'by-path',
                           'platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.3.4:1.0-scsi-0:0:0:0')
    assert os.path.realpath(by_path) == os.path.realpath(hat.emmc(3))
    assert os.readlink(by_path) == '../../sda'
    assert hat.state()['nodes']['3']['disk'] == 'sda'
    # Writing the disk writes the node's eMMC.
    before = hat.control.hash(node=3)['sha256']
    with open(os.path.join(hat.dir, 'dev', name), 'r+b') as f:
        f.write(b'\x42' * 4096)
    assert hat.control.hash(node=3)['sha256'] != before
    # Without -p the next eligible device is served: node 1.
    assert rpiboot(hat).returncode == 0
    assert wait_for(lambda: disk_of(hat, '1-1.3.2')) == 'sdb'
    # Power off: the disk and its entries go away.
    port.exchange(b'd', b'\r\n')
    assert disk_of(hat, '1-1.3.2') is None
    assert not os.path.lexists(os.path.join(hat.dir, 'dev', 'sdb'))
    assert not os.path.lexists(os.path.join(hat.dir, 'sys', 'block', 'sdb'))
    assert disk_of(hat, '1-1.3.4') == 'sda'


def test_rpiboot_arguments(hat):
    out = subprocess.run([hat.rpiboot, '-x'], capture_output=True, text=True, check=False)
    assert out.returncode == 255 and 'Usage: rpiboot' in out.stderr
    out = subprocess.run([hat.rpiboot, '-d', os.path.join(hat.dir, 'no-such-dir')], capture_output=True, text=True, check=False)
    assert out.returncode == 1
    out = subprocess.run([hat.rpiboot, '-h'], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and '-p [pathname]' in out.stdout
    with open(hat.rpiboot) as f:
        assert f.readline() == '#!%s\n' % sys.executable


def test_strict_hub_needs_jumpers_removed_and_the_swap(hat, port):
    hat.control.set(strict_hub=True)
    usb_boot(port, 0)
    assert rpiboot(hat).returncode == 1  # jumpers fitted hold the hub in reset
    hat.control.set(jumpers=False)  # the hub loads a blank EEPROM: no swap, no USB
    port.exchange(b'd', b'\r\n')
    port.exchange(b'e', b'\r\n')
    assert rpiboot(hat).returncode == 1
    assert hat.state()['usb_hub']['port_works']['1'] is False


def test_unplug_cuts_off_an_open_writer(hat, port):
    usb_boot(port, 1)
    assert rpiboot(hat, '-p', '1-1.3.3').returncode == 0
    name = wait_for(lambda: disk_of(hat, '1-1.3.3'))
    fd = os.open(os.path.join(hat.dir, 'dev', name), os.O_RDWR)
    try:
        os.pwrite(fd, b'\x01' * 512, 0)
        reply = hat.control.unplug(2)
        assert reply['disk'] == name and reply['detached'] is True
        assert disk_of(hat, '1-1.3.3') is None
        assert not os.path.lexists(os.path.join(hat.dir, 'dev', name))
        assert os.fstat(fd).st_nlink == 0  # how a writer can tell the disk went away
        kept = hat.control.hash(node=2)['sha256']
        os.pwrite(fd, b'\x02' * 512, 0)
        os.fsync(fd)
        assert hat.control.hash(node=2)['sha256'] == kept
    finally:
        os.close(fd)
    with open(hat.emmc(2), 'rb') as f:
        assert f.read(512) == b'\x01' * 512
    assert rpiboot(hat, '-p', '1-1.3.3').returncode == 1  # gone until the next power cycle


def test_decoys(hat):
    decoys = hat.control.decoys()
    assert set(decoys) == {'usb-1-1.4', 'loop0', 'mmcblk0'}
    usb = disk_of(hat, '1-1.4')
    assert usb == decoys['usb-1-1.4']['disk']
    with open(os.path.join(hat.dir, 'sys', 'block', usb, 'device', 'model')) as f:
        assert f.read().strip() == 'mmcblk0'
    for name in ('loop0', 'mmcblk0', usb):
        assert os.path.isfile(os.path.join(hat.dir, 'dev', name))
        assert os.path.isdir(os.path.join(hat.dir, 'sys', 'block', name))
    assert os.path.islink(os.path.join(hat.dir, 'dev', 'disk', 'by-path', 'platform-fe340000.mmc'))
    for key in decoys:
        assert hat.control.hash(decoy=key)['intact'] is True
    with open(os.path.join(hat.dir, 'dev', 'loop0'), 'r+b') as f:
        f.write(b'oops')
    assert hat.control.hash(decoy='loop0')['intact'] is False
    with pytest.raises(ControlError):
        hat.control.decoys(['1-1.3.2'])
    with pytest.raises(ControlError):
        hat.control.decoys(['1-1.3.1'])  # the RP2040's port


# -- node consoles ----------------------------------------------------------------------------------

def make_bootable(path, hostname=None, with_fat=True):
    """An MBR with a FAT32 LBA partition at 1 MiB, optionally a real FAT holding a hostname file."""
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
        mbr = bytearray(512)
        entry = struct.pack('<B3sB3sII', 0, b'\0\0\0', 0x0C, b'\0\0\0', 2048, size // 512 - 2048)
        mbr[446:462] = entry
        mbr[510:512] = b'\x55\xaa'
        f.write(mbr)
    if with_fat and hostname:
        subprocess.run(['mformat', '-i', '%s@@%d' % (path, 2048 * 512), '-T', str(size // 512 - 2048), '-h', '1',
                        '-s', '32', '::'], check=True, capture_output=True, env=dict(os.environ, MTOOLS_SKIP_CHECK='1'))
        src = path + '.hostname'
        with open(src, 'w') as h:
            h.write(hostname + '\n')
        subprocess.run(['mcopy', '-i', '%s@@%d' % (path, 2048 * 512), src, '::hostname'], check=True,
                       capture_output=True, env=dict(os.environ, MTOOLS_SKIP_CHECK='1'))
        os.unlink(src)


def test_console_boot_log_ends_with_login_prompt(hat, port):
    make_bootable(hat.emmc(1))
    console = Port(hat.console(1))
    try:
        port.exchange(b'e', b'\r\n')
        out = console.read_until(b'node1 login: ', timeout=5)
        assert b'Booting Linux' in out and out.count(b'\n') == out.count(b'\r\n') > 20
    finally:
        console.close()
    assert hat.state()['nodes']['1']['mode'] == 'running'


@pytest.mark.skipif(not shutil.which('mformat'), reason='mtools not installed')
def test_console_uses_the_first_boot_hostname(hat, port):
    make_bootable(hat.emmc(2), hostname='worker-b')
    console = Port(hat.console(2))
    try:
        port.exchange(b'c1', b'channel 1\r\n')
        port.exchange(b'e', b'\r\n')
        console.read_until(b'worker-b login: ', timeout=5)
    finally:
        console.close()


def test_console_without_boot_media_and_in_usb_boot(hat, port):
    console = Port(hat.console(1))
    try:
        port.exchange(b'e', b'\r\n')
        console.read_until(b'no boot media', timeout=5)
        port.exchange(b'd', b'\r\n')
        port.exchange(b'U', b'\r\n')
        port.exchange(b'e', b'\r\n')
        console.read_until(b'waiting for rpiboot', timeout=5)
    finally:
        console.close()
    assert 'waiting for rpiboot' in hat.state()['nodes']['1']['console_tail']


# -- process life -----------------------------------------------------------------------------------

def test_start_stop_leaves_nothing_behind(tmp_path):
    directory = tmp_path / 'hat'
    hat = start(directory, **FAST)
    pid = hat.pid
    with pytest.raises(RuntimeError):
        start(directory)  # one simulator per directory
    state = hat.state_file_json()
    assert state['pid'] == pid and set(state['nodes']) == {'1', '2', '3', '4'}
    for key in ('en', 'run', 'nrpiboot', 'usb_boot_at_power_on', 'powered', 'current_ma', 'temperature_c', 'disk',
                'usb_path', 'boots', 'console_tail'):
        assert key in state['nodes']['1']
    hat.close()
    stop(directory)
    assert not alive(pid)
    left = sorted(os.listdir(str(directory)))
    assert left == ['emmc', 'hatsim.log', 'state.json']
    stop(directory)  # stopping twice is fine


def test_stop_kills_a_simulator_that_ignores_sigterm(tmp_path):
    directory = tmp_path / 'hat'
    hat = start(directory, **FAST)
    pid = hat.pid
    os.kill(pid, signal.SIGSTOP)  # a hung process: SIGTERM stays pending
    try:
        started = time.monotonic()
        stop(directory)
        assert time.monotonic() - started < 15
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not alive(pid)


def test_power_cycle_restores_the_power_up_state(hat, port):
    port.exchange(b'c2', b'channel 2\r\n')
    port.exchange(b'e', b'\r\n')
    with hat.i2c() as bus:
        bus.write(EMC, [0xEF, 0x01])
        assert bus.write(EEPROM, [0x00, 0x5A])['ok']
    hat.control.set(jumpers=False)
    hat.control.power_cycle(clear_log=True)
    state = hat.state()
    assert state['rp2040']['channel'] == 0 and state['rp2040']['log_total'] == 0
    assert not any(n['en'] or n['powered'] for n in state['nodes'].values())
    assert state['emc2301']['locked'] is False and state['jumpers'] is True
    assert state['eeprom']['hex'][:2] == '5a'  # non-volatile
    assert port.exchange(b'e', b'\r\n') == b'eEnable:0\r\n'


def test_control_client_errors(hat):
    with pytest.raises(ControlError):
        hat.control.request('no-such-op')
    with pytest.raises(ControlError):
        hat.control.set(emmc_size='1G')  # only at start
    with pytest.raises(ControlError):
        hat.control.unplug(7)
    with pytest.raises(ControlError):
        Control(os.path.join(hat.dir, 'nowhere'))
    assert hat.control.ping()['pid'] == hat.pid
    assert isinstance(I2C(os.path.join(hat.dir, 'i2c-1.sock')).transfer({'addr': INA, 'read': 2})['data'][0], list)
