# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A CM4 stand-in for the netflash agent: qemu-system-aarch64 -M virt booting the payload's own
Debian arm64 kernel and initramfs (profile `qemu`, which adds virtio drivers), a raw virtio disk
where the eMMC would be, and QEMU user networking, in which the guest reaches the host's loopback
at 10.0.2.2 and nothing else is served. The device tree QEMU generates is dumped and given a
root `serial-number` property, which is where the Raspberry Pi firmware puts a CM4's serial.
"""

from __future__ import annotations

import os
import subprocess

GUEST_ADDR = '10.0.2.15/24'
HOST_FROM_GUEST = '10.0.2.2'


def machine_args(payload, disk, memory=320):
    return ['qemu-system-aarch64', '-M', 'virt', '-cpu', 'cortex-a72', '-smp', '1', '-m', str(memory),
            '-display', 'none', '-monitor', 'none', '-no-reboot',
            '-kernel', os.path.join(payload, 'kernel8.img'), '-initrd', os.path.join(payload, 'initrd.img'),
            '-drive', 'file=%s,if=none,format=raw,id=emmc' % disk, '-device', 'virtio-blk-pci,drive=emmc',
            '-netdev', 'user,id=net0', '-device', 'virtio-net-pci,netdev=net0']


def dtb_with_serial(payload, disk, serial, path):
    subprocess.run(machine_args(payload, disk) + ['-M', 'virt,dumpdtb=%s' % path], check=True,
                   capture_output=True)
    subprocess.run(['fdtput', '-t', 's', path, '/', 'serial-number', serial], check=True)
    return path


class Guest(object):
    """One guest booted into the agent; it powers itself off when the agent is done."""

    def __init__(self, payload, disk, serial, port, workdir, name='guest'):
        self.console = os.path.join(workdir, '%s-console.log' % name)
        dtb = dtb_with_serial(payload, disk, serial, os.path.join(workdir, '%s.dtb' % name))
        cmdline = 'console=ttyAMA0 panic=-1 quiet netflash.server=http://%s:%d netflash.addr=%s' % (
            HOST_FROM_GUEST, port, GUEST_ADDR)
        self.proc = subprocess.Popen(machine_args(payload, disk) + [
            '-dtb', dtb, '-append', cmdline, '-serial', 'file:' + self.console],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError('guest did not power off within %ds; console:\n%s' % (timeout, self.log()[-3000:]))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self):
        try:
            with open(self.console, errors='replace') as f:
                return f.read()
        except OSError:
            return ''
