# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.board import usb

PCIE = 'sys/devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0'


class Tree(object):
    """A Pi 4's USB tree the way the kernel lays it out: nested device directories below the
    VL805's root hub, one link per device in sys/bus/usb/devices."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(os.path.join(self.root, 'sys/bus/usb/devices'))
        self.add('usb1', '1d6b', '0002', 'xHCI Host Controller')
        self.add('1-1', '2109', '3431', 'USB2.0 Hub')

    def _dir(self, name):
        if name.startswith('usb'):
            return os.path.join(self.root, PCIE, name)
        bus, ports = name.split('-')
        parts = ['usb' + bus]
        hops = ports.split('.')
        for i in range(len(hops)):
            parts.append('%s-%s' % (bus, '.'.join(hops[:i + 1])))
        return os.path.join(self.root, PCIE, *parts)

    def add(self, name, vid, pid, product=None, tty=None):
        d = self._dir(name)
        os.makedirs(d)
        for attr, value in (('idVendor', vid), ('idProduct', pid), ('product', product), ('speed', '480')):
            if value is not None:
                with open(os.path.join(d, attr), 'w') as f:
                    f.write(value + '\n')
        os.makedirs(os.path.join(d, '%s:1.0' % name))
        if tty:
            os.makedirs(os.path.join(d, '%s:1.0' % name, 'tty', tty))
        link = os.path.join(self.root, 'sys/bus/usb/devices', name)
        os.symlink(os.path.relpath(d, os.path.dirname(link)), link)
        os.symlink(os.path.relpath(os.path.join(d, '%s:1.0' % name), os.path.dirname(link)), link + ':1.0')
        return d

    def hat(self, hub='1-1.3', rp2040=('2e8a', '000a'), nodes=()):
        self.add(hub, '0424', '2517', 'USB2517')
        if rp2040:
            self.add(hub + '.1', rp2040[0], rp2040[1], 'Pico', tty='ttyACM0' if rp2040[1] == '000a' else None)
        for n in nodes:
            self.add('%s.%d' % (hub, n + 1), '0a5c', '2711', 'BCM2711 Boot')


@pytest.fixture
def tree(tmp_path):
    return Tree(tmp_path)


def test_finds_the_hub_and_derives_node_paths(tree):
    tree.hat('1-1.3', nodes=[2])
    hub = usb.find_hub(tree.root)
    assert hub.path == '1-1.3'
    assert hub.node_paths() == {1: '1-1.3.2', 2: '1-1.3.3', 3: '1-1.3.4', 4: '1-1.3.5'}
    assert hub.rp2040['mode'] == 'console'
    ports = hub.as_dict()['ports']
    assert [p['role'] for p in ports] == ['rp2040', 'node1', 'node2', 'node3', 'node4', 'unused', 'unused']
    assert ports[0]['device']['id'] == '2e8a:000a'
    assert ports[2]['device']['id'] == '0a5c:2711' and ports[1]['device'] is None
    assert usb.tty_of(tree.root, '1-1.3.1') == '/dev/ttyACM0'


def test_rp2040_in_bootsel_still_proves_the_hub(tree):
    tree.hat('1-1.1', rp2040=('2e8a', '0003'))
    assert usb.find_hub(tree.root).rp2040['mode'] == 'bootsel'


def test_a_usb2517_without_rp2040_on_port_1_is_rejected(tree):
    tree.add('1-1.2', '0424', '2517', 'another hub')
    tree.add('1-1.2.2', '2e8a', '000a', 'RP2040 on the wrong port')
    with pytest.raises(usb.UsbError, match=r"no USB2517 hub .* has the hat's RP2040 on its port 1 \(hubs at 1-1.2\)"):
        usb.find_hub(tree.root)
    with pytest.raises(usb.UsbError, match=r"the USB2517 hub at 1-1.2 is not the hat's: its port 1 holds nothing"):
        usb.find_hub(tree.root, '1-1.2')


def test_other_hubs_are_passed_over(tree):
    tree.add('1-1.2', '0424', '2517', 'a lookalike')
    tree.add('1-1.2.1', '0781', '5567', 'USB stick')
    tree.hat('1-1.4')
    assert usb.find_hub(tree.root).path == '1-1.4'


def test_no_hub_says_why_and_what_to_do(tree):
    with pytest.raises(usb.UsbError) as err:
        usb.find_hub(tree.root)
    text = str(err.value)
    assert 'no USB2517 hub (0424:2517)' in text and 'jumpers' in text and 'EEPROM is blank' in text
    assert '\n' not in text


def test_two_hats_need_a_choice(tree):
    tree.hat('1-1.2')
    tree.hat('1-1.3')
    with pytest.raises(usb.UsbError, match='more than one hat'):
        usb.find_hub(tree.root)
    assert usb.find_hub(tree.root, '1-1.3').path == '1-1.3'


@pytest.mark.parametrize('hub, message', [
    ('1-1.3.1', r'is 2e8a:000a \(Pico\), not the hat\'s USB2517 hub'),
    ('1-1', r'is 2109:3431'),
    ('1-1.4', r'there is no USB device at 1-1.4'),
    ('1-1.3:1.0', r'is not a sysfs USB device name'),
    ('../1-1.3', r'is not a sysfs USB device name'),
])
def test_a_hub_path_that_is_not_the_hats_hub(tree, hub, message):
    tree.hat('1-1.3')
    with pytest.raises(usb.UsbError, match=message):
        usb.find_hub(tree.root, hub)


def test_resolve_uses_given_paths_first_and_the_hub_for_the_rest(tree):
    tree.hat('1-1.2')
    assert usb.resolve_node_paths([1, 3], tree.root, {3: '1-1.4.7'}) == {1: '1-1.2.2', 3: '1-1.4.7'}
    # Every node given: no hub needed at all.
    assert usb.resolve_node_paths([2], '/nonexistent', {2: '1-2.5'}) == {2: '1-2.5'}


def test_resolve_refuses_duplicates_and_junk(tree):
    tree.hat('1-1.2')
    with pytest.raises(usb.UsbError, match='nodes 1 and 2 the same USB path 1-1.2.2'):
        usb.resolve_node_paths([1, 2], tree.root, {1: '1-1.2.2', 2: '1-1.2.2'})
    with pytest.raises(usb.UsbError, match="which is node 1's port"):
        usb.resolve_node_paths([1, 2], tree.root, {2: '1-1.2.2'})
    for junk in ('/dev/sda', '1-1.2.2\n', '', 7, None, '1-0.2'):
        with pytest.raises(usb.UsbError, match='is not a sysfs USB device name'):
            usb.resolve_node_paths([1], tree.root, {1: junk})
