# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The directory one `rpiboot -d` serves to one node for the network flash.

usbboot's second stage reads config.txt from that directory; `boot_ramdisk=1` makes it load
boot.img, a FAT image, and take every later file (start4.elf, fixup4.dat, the kernel, the
initramfs, the device tree, cmdline.txt) from inside it. boot.img is made with mkfs.vfat and
mcopy, never mounted. The node's address and the controller's server travel on the kernel command
line, so each node gets its own directory; the payload itself (tools/payload/build.py) is shared.
bootcode4.bin (or the bootfiles.bin that carries it) comes from the controller's usbboot install,
which is what rpiboot sends first.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile

from ansible_collections.minicluster.cm4.plugins.module_utils.flash.netserver import NetflashError

PAYLOAD_FILES = ('kernel8.img', 'initrd.img', 'start4.elf', 'fixup4.dat')
BOOT_CONFIG = """# netflash: the node boots the agent's kernel and initramfs from this ramdisk
arm_64bit=1
kernel=kernel8.img
initramfs initrd.img followkernel
device_tree=%s
enable_uart=1
"""
OUTER_CONFIG = """# Load boot.img as the boot file system (usbboot's second stage)
boot_ramdisk=1
"""
FIXED_TIME = 946684800  # 2000-01-01: boot.img depends on its contents only


def node_address(text, server_address):
    """The node's address/prefix, checked to share a subnet with the controller's address."""
    try:
        iface = ipaddress.ip_interface(str(text))
        server = ipaddress.ip_address(str(server_address))
    except ValueError as exc:
        raise NetflashError('%s: give node addresses as ADDRESS/PREFIX' % exc) from None
    if iface.network.prefixlen == iface.max_prefixlen or server not in iface.network:
        raise NetflashError('node address %s is not in the subnet of the controller address %s: the nodes '
                            'and the controller share the hat switch, give them one subnet' % (text, server_address))
    if iface.ip == server:
        raise NetflashError('node address %s is the controller address itself' % text)
    return str(iface)


def load_payload(payload_dir):
    """The build record of a built payload directory, after checking every file against it."""
    record_path = os.path.join(payload_dir, 'build-record.json')
    try:
        with open(record_path, encoding='utf-8') as f:
            record = json.load(f)
    except (OSError, ValueError) as exc:
        raise NetflashError('no usable payload in %s (%s): build it with tools/payload/build.py'
                            % (payload_dir, exc)) from None
    for name, digest in record.get('outputs', {}).items():
        path = os.path.join(payload_dir, name)
        h = hashlib.sha256()
        try:
            with open(path, 'rb') as f:
                for chunk in iter(lambda: f.read(1 << 20), b''):
                    h.update(chunk)
        except OSError as exc:
            raise NetflashError('payload file %s missing: rebuild the payload (%s)' % (path, exc.strerror)) from None
        if h.hexdigest() != digest:
            raise NetflashError('payload file %s does not match its build record: rebuild the payload' % path)
    if record.get('profile') != 'cm4':
        raise NetflashError('payload %s was built for profile %s, a node needs profile cm4'
                            % (payload_dir, record.get('profile')))
    return record


def cmdline(server_url, address):
    return ('console=ttyS1,115200 console=ttyAMA0,115200 panic=-1 netflash.server=%s netflash.addr=%s'
            % (server_url, address))


def make_boot_dir(payload_dir, bootfiles, out_dir, server_url, address):
    """Write config.txt, boot.img and the usbboot second stage into out_dir. Returns out_dir."""
    record = load_payload(payload_dir)
    dtbs = [n for n in record['outputs'] if n.endswith('.dtb')]
    if len(dtbs) != 1:
        raise NetflashError('payload %s should hold one device tree, it holds %d' % (payload_dir, len(dtbs)))
    if not os.path.isfile(bootfiles):
        raise NetflashError('usbboot second stage %s not found: install usbboot (rpiboot) or set bootfiles'
                            % bootfiles)
    for tool in ('mkfs.vfat', 'mcopy'):
        if shutil.which(tool) is None and not os.path.exists('/usr/sbin/' + tool):
            raise NetflashError('%s not found on the controller: install dosfstools and mtools' % tool)
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as stage:
        names = list(PAYLOAD_FILES) + dtbs
        for name in names:
            shutil.copyfile(os.path.join(payload_dir, name), os.path.join(stage, name))
        with open(os.path.join(stage, 'config.txt'), 'w', encoding='ascii') as f:
            f.write(BOOT_CONFIG % dtbs[0])
        with open(os.path.join(stage, 'cmdline.txt'), 'w', encoding='ascii') as f:
            f.write(cmdline(server_url, address) + '\n')
        names += ['config.txt', 'cmdline.txt']
        total = 0
        for name in names:
            os.utime(os.path.join(stage, name), (FIXED_TIME, FIXED_TIME))
            total += os.path.getsize(os.path.join(stage, name))
        img = os.path.join(stage, 'boot.img')
        kib = (total * 11 // 10) // 1024 + 4096
        mkfs = shutil.which('mkfs.vfat') or '/usr/sbin/mkfs.vfat'
        _run([mkfs, '-C', '-F', '32', '-n', 'NETFLASH', '-i', '4e455446', img, str(kib)])
        _run(['mcopy', '-m', '-i', img] + [os.path.join(stage, n) for n in names] + ['::/'])
        os.replace(img, os.path.join(out_dir, 'boot.img'))
    with open(os.path.join(out_dir, 'config.txt'), 'w', encoding='ascii') as f:
        f.write(OUTER_CONFIG)
    shutil.copyfile(bootfiles, os.path.join(out_dir, os.path.basename(bootfiles)))
    return out_dir


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetflashError('%s failed: %s' % (os.path.basename(cmd[0]),
                                               (proc.stderr.strip().splitlines() or ['exit %d' % proc.returncode])[-1]))
