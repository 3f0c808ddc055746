# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fake system root (sys/ and dev/) laid out like the kernel's, for disk discovery tests."""

from __future__ import annotations

import os

USB_BASE = 'sys/devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb1/1-1/1-1.2'


class FakeRoot(object):
    def __init__(self, root):
        self.root = str(root)
        self._host = 0
        self._letters = iter('abcdefghijklmnopqrstuvwxyz')
        for d in ('sys/block', 'sys/bus/usb/devices', 'dev/disk/by-path'):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)

    def p(self, *parts):
        return os.path.join(self.root, *parts)

    def _write(self, path, text):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)

    def _link(self, target, link):
        if os.path.lexists(link):
            os.unlink(link)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(target, os.path.dirname(link)), link)

    def usb_device(self, usb_path, parent=None):
        """A USB device directory (nested below parent's directory for a device behind a hub)."""
        base = parent if parent is not None else self.p(USB_BASE)
        d = os.path.join(base, usb_path)
        os.makedirs(d, exist_ok=True)
        self._link(d, self.p('sys/bus/usb/devices', usb_path))
        return d

    def usb_disk(self, usb_path, size=64 * 1024 * 1024, model='mmcblk0', vendor='Linux', parent=None,
                 interface='1.0', iface_class='08', name=None, dev_file=True, by_path=True, ro='0'):
        """A SCSI disk on a USB device's interface; dev/<name> is a sparse regular file."""
        udir = self.usb_device(usb_path, parent)
        host = self._host
        self._host += 1
        name = name or 'sd' + next(self._letters)
        iface = os.path.join(udir, '%s:%s' % (usb_path, interface))
        if iface_class is not None:
            self._write(os.path.join(iface, 'bInterfaceClass'), iface_class + '\n')
        scsi = os.path.join(iface, 'host%d' % host, 'target%d:0:0' % host, '%d:0:0:0' % host)
        self._write(os.path.join(scsi, 'model'), model.ljust(16) + '\n')
        self._write(os.path.join(scsi, 'vendor'), vendor.ljust(8) + '\n')
        block = os.path.join(scsi, 'block', name)
        self._write(os.path.join(block, 'size'), '%d\n' % (size // 512))
        self._write(os.path.join(block, 'ro'), ro + '\n')
        self._write(os.path.join(block, 'removable'), '1\n')
        self._write(os.path.join(block, 'dev'), '8:%d\n' % (16 * host))
        os.symlink('../../../%d:0:0:0' % host, os.path.join(block, 'device'))
        self._link(block, self.p('sys/block', name))
        if dev_file:
            with open(self.p('dev', name), 'wb') as f:
                f.truncate(size)
        if by_path:
            self._link(self.p('dev', name), self.p('dev/disk/by-path', 'platform-fd500000.pcie-pci-0000:01:00.0-usb-0:%s:%s-scsi-0:0:0:0'
                                                   % (usb_path.split('-', 1)[1], interface)))
        return name

    def loop(self, name='loop0', size=8 * 1024 * 1024):
        block = self.p('sys/devices/virtual/block', name)
        self._write(os.path.join(block, 'size'), '%d\n' % (size // 512))
        self._write(os.path.join(block, 'dev'), '7:0\n')
        self._link(block, self.p('sys/block', name))
        with open(self.p('dev', name), 'wb') as f:
            f.truncate(size)

    def controller_mmc(self, size=32 * 1024 * 1024):
        block = self.p('sys/devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0')
        self._write(os.path.join(block, 'size'), '%d\n' % (size // 512))
        self._write(os.path.join(block, 'dev'), '179:0\n')
        self._link(block, self.p('sys/block', 'mmcblk0'))
        with open(self.p('dev', 'mmcblk0'), 'wb') as f:
            f.truncate(size)

    def unplug(self, usb_path, name):
        os.unlink(self.p('sys/block', name))
        os.unlink(self.p('sys/bus/usb/devices', usb_path))
        os.unlink(self.p('dev', name))
