# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fake /sys and /dev under the simulator's directory, shaped like a Raspberry Pi 4's.

USB devices hang below the VL805 PCIe controller, one directory per hop of the port path:

  sys/devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb1   root hub
      1-1                  the VL805's own hub (2109:3431); the Pi 4's four ports are 1-1.1 .. 1-1.4
      1-1.3                the hat's USB2517 (0424:2517, maxchild 7, 1-1.3:1.0/1-1.3-port1..7)
      1-1.3/1-1.3.1        the RP2040 (2e8a:000a, 1-1.3.1:1.0/tty/ttyACM0; 2e8a:0003 in BOOTSEL)
      1-1.3/1-1.3.2 .. 5   nodes 1..4 while in USB boot
      1-1.3.2:1.0/host<H>/target<H>:0:0/<H>:0:0:0/{model,vendor,rev,type,state}
      1-1.3.2:1.0/host<H>/target<H>:0:0/<H>:0:0:0/block/sd<X>/{size,ro,removable,dev,uevent,device}
  sys/bus/usb/devices/<usb path>  -> the device directory
  sys/block/sd<X>                 -> the block directory
  dev/sd<X>                       -> the backing file (a regular file)
  dev/disk/by-path/platform-fd500000.pcie-pci-0000:01:00.0-usb-0:<ports>:1.0-scsi-0:0:0:0 -> ../../sd<X>
"""

from __future__ import annotations

import itertools
import os
import shutil

PCIE = 'devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0'
BY_PATH_PREFIX = 'platform-fd500000.pcie-pci-0000:01:00.0-usb-0:'
SD_MAJOR = 8
LOOP_MAJOR = 7
MMC_MAJOR = 179


def disk_letters(index):
    """0 -> 'a', 25 -> 'z', 26 -> 'aa' (the kernel's sd naming)."""
    name = ''
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord('a') + rest) + name
    return name


def split_usb_path(path):
    """'1-1.3.2' -> (1, [1, 3, 2])."""
    bus, dummy, ports = path.partition('-')
    return int(bus), [int(p) for p in ports.split('.')]


def _write(path, text):
    with open(path, 'w') as f:
        f.write(text)


_counter = itertools.count()


def _staging(final):
    """A fresh path outside sys/ and dev/ but on the same file system, so a rename is atomic and a
    walker of the tree never meets a half-built or half-removed directory."""
    root = final
    while os.path.basename(root) not in ('sys', 'dev'):
        root = os.path.dirname(root)
    staging = os.path.join(os.path.dirname(root), '.hatsim-staging')
    os.makedirs(staging, exist_ok=True)
    return os.path.join(staging, '%d-%s' % (next(_counter), os.path.basename(final)))


def _relink(link, target):
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)


class FakeSys(object):

    def __init__(self, root):
        self.root = root
        self.sys = os.path.join(root, 'sys')
        self.dev = os.path.join(root, 'dev')
        for path in (self.sys, self.dev, os.path.join(root, '.hatsim-staging')):
            if os.path.lexists(path):
                shutil.rmtree(path)
        for sub in ('bus/usb/devices', 'block', PCIE, 'devices/virtual/block'):
            os.makedirs(os.path.join(self.sys, sub))
        os.makedirs(os.path.join(self.dev, 'disk', 'by-path'))
        self.disks = {}  # name -> {'usb_path', 'host', 'block_dir', 'backing', 'links'}
        self.usb_devices = {}  # usb path -> device dir

    # -- USB topology --------------------------------------------------------------------------
    def usb_dir(self, usb_path):
        bus, ports = split_usb_path(usb_path)
        parts = ['usb%d' % bus]
        for i in range(len(ports)):
            parts.append('%d-%s' % (bus, '.'.join(str(p) for p in ports[:i + 1])))
        return os.path.join(self.sys, PCIE, *parts)

    def _bus_link(self, usb_path, device_dir):
        link = os.path.join(self.sys, 'bus', 'usb', 'devices', usb_path)
        _relink(link, os.path.relpath(device_dir, os.path.dirname(link)))

    def add_hubs(self, usb_paths):
        """The root hub and every hop above the given device paths that is not there yet: the Pi 4's
        VL805 root port hub at 1-1, a generic hub elsewhere (the hat's hub is added by add_hub)."""
        for usb_path in usb_paths:
            bus, ports = split_usb_path(usb_path)
            root = os.path.join(self.sys, PCIE, 'usb%d' % bus)
            if not os.path.isdir(root):
                os.makedirs(root)
                self._attributes(root, '1d6b', '0002', 'xHCI Host Controller', 'Linux xhci-hcd', '0000:01:00.0',
                                 str(bus), '0')
                self._bus_link('usb%d' % bus, root)
            for i in range(1, len(ports)):
                hub = '%d-%s' % (bus, '.'.join(str(p) for p in ports[:i]))
                hub_dir = self.usb_dir(hub)
                if not os.path.isdir(hub_dir):
                    os.makedirs(hub_dir)
                    vid, pid, product = ('2109', '3431', 'USB2.0 Hub') if i == 1 else ('05e3', '0608', 'USB2.0 Hub')
                    self._attributes(hub_dir, vid, pid, product, None, None, str(bus), '.'.join(str(p) for p in ports[:i]))
                    _write(os.path.join(hub_dir, 'bDeviceClass'), '09\n')
                    self._bus_link(hub, hub_dir)

    def add_hub(self, hub_path, vid='0424', pid='2517', did='0000', strings=None, ports=7):
        """The hat's USB2517 at hub_path, as the kernel shows a hub: device class 09, maxchild, one
        interface with a port directory per downstream port. Replaces what was there."""
        self.remove_hub(hub_path)
        strings = strings or {}
        device_dir = self.add_usb_device(hub_path, vid, pid, strings.get('product') or '', strings.get('manufacturer'),
                                         strings.get('serial'))
        if not strings.get('product'):
            os.unlink(os.path.join(device_dir, 'product'))  # no string descriptor: no attribute
        _write(os.path.join(device_dir, 'bDeviceClass'), '09\n')
        _write(os.path.join(device_dir, 'bcdDevice'), did + '\n')
        _write(os.path.join(device_dir, 'maxchild'), '%d\n' % ports)
        interface = os.path.join(device_dir, '%s:1.0' % hub_path)
        for port in range(1, ports + 1):
            os.makedirs(os.path.join(interface, '%s-port%d' % (hub_path, port)))
        _write(os.path.join(interface, 'bInterfaceClass'), '09\n')
        self._bus_link(hub_path + ':1.0', interface)
        return device_dir

    def remove_hub(self, hub_path):
        """The hub leaves the bus with everything behind it."""
        prefix = hub_path + '.'
        for path in sorted((p for p in self.usb_devices if p.startswith(prefix)), key=len, reverse=True):
            self.remove_usb_device(path)
        link = os.path.join(self.sys, 'bus', 'usb', 'devices', hub_path + ':1.0')
        if os.path.lexists(link):
            os.unlink(link)
        self.remove_usb_device(hub_path)

    def add_rp2040(self, usb_path, bootsel=False, tty=None, serial='E6614C311B4A8A2C'):
        """The RP2040 on the hub's port 1: its CDC console (2e8a:000a, interface 0 with tty/<tty>) or,
        in BOOTSEL, its boot ROM (2e8a:0003, a mass-storage and a vendor interface)."""
        if bootsel:
            device_dir = self.add_usb_device(usb_path, '2e8a', '0003', 'RP2 Boot', 'Raspberry Pi', serial)
            for number, cls in ((0, '08'), (1, 'ff')):
                interface = os.path.join(device_dir, '%s:1.%d' % (usb_path, number))
                os.makedirs(interface)
                _write(os.path.join(interface, 'bInterfaceClass'), cls + '\n')
            return device_dir
        device_dir = self.add_usb_device(usb_path, '2e8a', '000a', 'Pico', 'Raspberry Pi', serial)
        for number, cls in ((0, '02'), (1, '0a'), (2, 'ff')):
            interface = os.path.join(device_dir, '%s:1.%d' % (usb_path, number))
            os.makedirs(interface)
            _write(os.path.join(interface, 'bInterfaceClass'), cls + '\n')
        if tty:
            os.makedirs(os.path.join(device_dir, '%s:1.0' % usb_path, 'tty', tty))
        return device_dir

    @staticmethod
    def _attributes(directory, vid, pid, product, manufacturer, serial, busnum, devpath):
        _write(os.path.join(directory, 'idVendor'), vid + '\n')
        _write(os.path.join(directory, 'idProduct'), pid + '\n')
        _write(os.path.join(directory, 'product'), product + '\n')
        if manufacturer:
            _write(os.path.join(directory, 'manufacturer'), manufacturer + '\n')
        if serial:
            _write(os.path.join(directory, 'serial'), serial + '\n')
        _write(os.path.join(directory, 'busnum'), busnum + '\n')
        _write(os.path.join(directory, 'devpath'), devpath + '\n')

    def add_usb_device(self, usb_path, vid, pid, product, manufacturer=None, serial=None):
        self.remove_usb_device(usb_path)
        self.add_hubs([usb_path])
        device_dir = self.usb_dir(usb_path)
        bus, ports = split_usb_path(usb_path)
        # Built aside and renamed into place: a poller never sees a half-made device.
        staging = _staging(device_dir)
        os.makedirs(staging)
        self._attributes(staging, vid, pid, product, manufacturer, serial, str(bus), '.'.join(str(p) for p in ports))
        os.rename(staging, device_dir)
        self._bus_link(usb_path, device_dir)
        self.usb_devices[usb_path] = device_dir
        return device_dir

    def remove_usb_device(self, usb_path):
        for name, disk in list(self.disks.items()):
            if disk.get('usb_path') == usb_path:
                self.remove_disk(name)
        link = os.path.join(self.sys, 'bus', 'usb', 'devices', usb_path)
        if os.path.lexists(link):
            os.unlink(link)
        device_dir = self.usb_devices.pop(usb_path, None)
        if device_dir and os.path.isdir(device_dir):
            doomed = _staging(device_dir)
            os.rename(device_dir, doomed)
            shutil.rmtree(doomed)

    def link_dev(self, name, target):
        """dev/<name> -> target (a tty the simulator serves, e.g. ttyACM0 -> the RP2040 pty)."""
        _relink(os.path.join(self.dev, name), os.path.relpath(target, self.dev))

    def unlink_dev(self, name):
        link = os.path.join(self.dev, name)
        if os.path.lexists(link):
            os.unlink(link)

    # -- block devices -------------------------------------------------------------------------
    def _free_name(self, prefix='sd'):
        used = set(self.disks)
        i = 0
        while prefix + disk_letters(i) in used:
            i += 1
        return prefix + disk_letters(i), i

    def _free_host(self):
        used = set(d['host'] for d in self.disks.values() if d.get('host') is not None)
        host = 0
        while host in used:
            host += 1
        return host

    def _block(self, block_dir, name, size_bytes, major, minor, removable):
        os.makedirs(block_dir)
        _write(os.path.join(block_dir, 'size'), '%d\n' % (size_bytes // 512))
        _write(os.path.join(block_dir, 'ro'), '0\n')
        _write(os.path.join(block_dir, 'removable'), '%d\n' % removable)
        _write(os.path.join(block_dir, 'dev'), '%d:%d\n' % (major, minor))
        _write(os.path.join(block_dir, 'uevent'), 'MAJOR=%d\nMINOR=%d\nDEVNAME=%s\nDEVTYPE=disk\n' % (major, minor, name))

    def _publish_block(self, staging, final, block_dir, name, backing, by_path=None):
        """Make a block device visible: /dev entries first, then the sysfs subtree in one rename."""
        dev_link = os.path.join(self.dev, name)
        _relink(dev_link, os.path.relpath(backing, self.dev))
        links = [dev_link]
        if by_path:
            link = os.path.join(self.dev, 'disk', 'by-path', by_path)
            _relink(link, '../../' + name)
            links.append(link)
        os.rename(staging, final)
        sys_link = os.path.join(self.sys, 'block', name)
        _relink(sys_link, os.path.relpath(block_dir, os.path.dirname(sys_link)))
        links.append(sys_link)
        return links

    def add_usb_disk(self, usb_path, backing, vendor, model, rev, serial=None):
        """A USB mass-storage disk on the device at usb_path; returns its name (sda, sdb ...)."""
        device_dir = self.usb_devices.get(usb_path)
        if device_dir is None:
            device_dir = self.add_usb_device(usb_path, '1d6b', '0104', 'Mass Storage Gadget', 'Raspberry Pi', serial)
        name, index = self._free_name()
        host = self._free_host()
        scsi = '%d:0:0:0' % host
        interface = os.path.join(device_dir, '%s:1.0' % usb_path)
        staging = _staging(interface)
        scsi_rel = os.path.join('host%d' % host, 'target%d:0:0' % host, scsi)
        scsi_dir = os.path.join(staging, scsi_rel)
        os.makedirs(scsi_dir)
        _write(os.path.join(staging, 'bInterfaceClass'), '08\n')
        _write(os.path.join(scsi_dir, 'vendor'), '%-8s\n' % vendor[:8])
        _write(os.path.join(scsi_dir, 'model'), '%-16s\n' % model[:16])
        _write(os.path.join(scsi_dir, 'rev'), '%-4s\n' % rev[:4])
        _write(os.path.join(scsi_dir, 'type'), '0\n')
        _write(os.path.join(scsi_dir, 'state'), 'running\n')
        self._block(os.path.join(scsi_dir, 'block', name), name, os.path.getsize(backing), SD_MAJOR, 16 * index, 1)
        os.symlink('../../../' + scsi, os.path.join(scsi_dir, 'block', name, 'device'))
        dummy, ports = split_usb_path(usb_path)
        by_path = '%s%s:1.0-scsi-0:0:0:0' % (BY_PATH_PREFIX, '.'.join(str(p) for p in ports))
        block_dir = os.path.join(interface, scsi_rel, 'block', name)
        links = self._publish_block(staging, interface, block_dir, name, backing, by_path)
        self.disks[name] = {'usb_path': usb_path, 'host': host, 'block_dir': block_dir, 'backing': backing,
                            'links': links, 'remove': interface}
        return name

    def remove_disk(self, name):
        disk = self.disks.pop(name, None)
        if disk is None:
            return
        for link in disk['links']:
            if os.path.lexists(link):
                os.unlink(link)
        if os.path.isdir(disk['remove']):
            # Renamed away first so the whole subtree vanishes at once.
            doomed = _staging(disk['remove'])
            os.rename(disk['remove'], doomed)
            shutil.rmtree(doomed)

    def add_loop(self, name, backing):
        final = os.path.join(self.sys, 'devices', 'virtual', 'block', name)
        staging = _staging(final)
        minor = int(name[4:] or 0)
        self._block(staging, name, os.path.getsize(backing), LOOP_MAJOR, minor, 0)
        os.makedirs(os.path.join(staging, 'loop'))
        _write(os.path.join(staging, 'loop', 'backing_file'), os.path.abspath(backing) + '\n')
        links = self._publish_block(staging, final, final, name, backing)
        self.disks[name] = {'usb_path': None, 'host': None, 'block_dir': final, 'backing': backing,
                            'links': links, 'remove': final}
        return name

    def add_mmc(self, name, backing):
        final = os.path.join(self.sys, 'devices', 'platform', 'emmc2bus')
        staging = _staging(final)
        card_rel = os.path.join('fe340000.mmc', 'mmc_host', 'mmc0', 'mmc0:aaaa')
        card_dir = os.path.join(staging, card_rel)
        os.makedirs(card_dir)
        _write(os.path.join(card_dir, 'name'), 'SD32G\n')
        _write(os.path.join(card_dir, 'type'), 'SD\n')
        self._block(os.path.join(card_dir, 'block', name), name, os.path.getsize(backing), MMC_MAJOR, 0, 0)
        os.symlink('../../../mmc0:aaaa', os.path.join(card_dir, 'block', name, 'device'))
        block_dir = os.path.join(final, card_rel, 'block', name)
        links = self._publish_block(staging, final, block_dir, name, backing, 'platform-fe340000.mmc')
        self.disks[name] = {'usb_path': None, 'host': None, 'block_dir': block_dir, 'backing': backing,
                            'links': links, 'remove': final}
        return name

    def remove_all(self):
        for path in (self.sys, self.dev, os.path.join(self.root, '.hatsim-staging')):
            if os.path.lexists(path):
                shutil.rmtree(path, ignore_errors=True)
