# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a CM4 prints on its UART while it boots, and what its eMMC holds (MBR, boot partition)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess

FAT_TYPES = (0x0B, 0x0C, 0x0E)
HOSTNAME_RE = re.compile(r'^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$')


def inspect_emmc(path):
    """{'bootable': bool, 'boot_lba': int|None, 'partition_type': int|None} from the MBR."""
    try:
        with open(path, 'rb') as f:
            mbr = f.read(512)
    except OSError:
        mbr = b''
    info = {'bootable': False, 'boot_lba': None, 'partition_type': None}
    if len(mbr) < 512 or mbr[510:512] != b'\x55\xaa':
        return info
    ptype = mbr[446 + 4]
    lba = struct.unpack('<I', mbr[446 + 8:446 + 12])[0]
    info['partition_type'] = ptype
    if ptype in FAT_TYPES and lba:
        info['bootable'] = True
        info['boot_lba'] = lba
    return info


def _mtype(image, offset, name):
    exe = shutil.which('mtype')
    if not exe:
        return None
    env = dict(os.environ, MTOOLS_SKIP_CHECK='1', MTOOLS_NO_VFAT='0')
    try:
        out = subprocess.run([exe, '-i', '%s@@%d' % (image, offset), '::' + name], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=5, env=env, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.decode('utf-8', errors='replace')


def _valid(name):
    name = (name or '').strip().strip('"\'')
    return name if HOSTNAME_RE.match(name) else None


def first_boot_hostname(image, boot_lba):
    """The hostname the first-boot files on the boot partition set, when mtools can read them."""
    offset = boot_lba * 512
    text = _mtype(image, offset, 'hostname')
    if text and _valid(text.splitlines()[0] if text.splitlines() else ''):
        return _valid(text.splitlines()[0])
    for name, pattern in (('user-data', r'^\s*hostname:\s*(\S+)'),
                          ('custom.toml', r'^\s*hostname\s*=\s*"?([^"\s]+)"?'),
                          ('firstrun.sh', r'(?:NEW_HOSTNAME=|imager_custom set_hostname\s+)["\']?([A-Za-z0-9-]+)')):
        text = _mtype(image, offset, name)
        if not text:
            continue
        found = re.search(pattern, text, re.MULTILINE)
        if found and _valid(found.group(1)):
            return _valid(found.group(1))
    return None


SERIALS = {1: '3f1c2a01', 2: '3f1c2a02', 3: '3f1c2a03', 4: '3f1c2a04'}


def bootloader_lines(node, usb=False):
    lines = [
        '',
        'RPi: BOOTLOADER release VERSION:4c9fb5e1 DATE: 2024/04/15 TIME: 14:12:54',
        'BOOTMODE: 0x06 partition 0 build-ts BUILD_TIMESTAMP=1713186774 serial %s boardrev c03141 stc 483112'
        % SERIALS.get(node, '3f1c2a00'),
        'AON_RESET: 00000003 PM_RSTS: 00001000',
        'POWER_OFF_ON_HALT: 0 WAIT_FOR_POWER_BUTTON: 0 power-on-reset: 1',
        'XHCI-STOP',
        'xHC0 ver: 256 HCS: 05000420 fc000031 00e70004 HCC: 002841eb',
    ]
    if usb:
        lines.append('Boot mode: USB-DEV (07) order f')
    else:
        lines += [
            'Boot mode: SD (01) order f4',
            'SD HOST: 200000000 CTL0: 0x00800000 BUS: 400000 Hz actual: 390625 HZ div: 512 (256) status: 0x1fff0000 delay: 276',
            'EMMC',
            'SD HOST: 200000000 CTL0: 0x00800f04 BUS: 200000000 Hz actual: 200000000 HZ div: 1 (0) status: 0x1fff0000 delay: 1',
        ]
    return lines


def boot_lines(node, info, hostname):
    """UART output of a normal boot from a bootable eMMC, ending just before the login prompt."""
    lba = info['boot_lba']
    lines = bootloader_lines(node) + [
        'OTP boardrev c03141 bootrom 48b0 48b0',
        'MBR: 0x%08x,  524288 type: 0x%02x' % (lba, info['partition_type']),
        'MBR: 0x%08x, 4194304 type: 0x83' % (lba + 524288),
        'MBR: 0x00000000,       0 type: 0x00',
        'MBR: 0x00000000,       0 type: 0x00',
        'Trying partition: 0',
        "type: 32 lba: %d oem: 'mkfs.fat' volume: ' bootfs     '" % lba,
        'rsc 32 fat-sectors 4033 c-count 516190 c-size 1',
        'Read config.txt bytes     1212 hnd 0x5',
        'Read start4.elf bytes  2252704 hnd 0x2f8',
        'Read fixup4.dat bytes     5461 hnd 0x2f5',
        'Firmware: 6f9ca1a4ce9d4b5c6ba1d7a1f2a5c7e8d1c3f6b2 Apr 15 2024 14:14:34',
        '0x00c03141 0x00000000 0x00000fff',
        'MEM GPU: 76 ARM: 948 TOTAL: 1024',
        'Starting start4.elf @ 0xfec00200 partition 0',
        '',
        '[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x410fd083]',
        '[    0.000000] Linux version 6.6.31+rpt-rpi-v8 (serge@raspberrypi.com) (aarch64-linux-gnu-gcc-12 (Debian 12.2.0-14) '
        '12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT Debian 1:6.6.31-1+rpt1 (2024-05-29)',
        '[    0.000000] KASLR enabled',
        '[    0.000000] random: crng init done',
        '[    0.000000] Machine model: Raspberry Pi Compute Module 4 Rev 1.1',
        '[    0.000000] Kernel command line: coherent_pool=1M 8250.nr_uarts=0 snd_bcm2835.enable_headphones=0 '
        'console=ttyAMA0,115200 console=tty1 root=PARTUUID=%08x-02 rootfstype=ext4 fsck.repair=yes rootwait' % (0x1a2b3c00 + node),
        '[    1.412365] mmc0: SDHCI controller on fe340000.mmc [fe340000.mmc] using ADMA',
        '[    1.523881] mmc0: new HS200 MMC card at address 0001',
        '[    1.531005] mmcblk0: mmc0:0001 BJTD4R 29.1 GiB',
        '[    1.540217]  mmcblk0: p1 p2',
        '[    2.204411] EXT4-fs (mmcblk0p2): mounted filesystem 0b4d2e66-1c2f-4d77-8a3f-5a0e6d1c2b3a ro with ordered data mode.',
        '[    2.512920] Run /sbin/init as init process',
        '[    3.141527] systemd[1]: Hostname set to <%s>.' % hostname,
        '[    4.930114] bcmgenet fd580000.ethernet eth0: Link is Up - 1Gbps/Full - flow control rx/tx',
        '',
        'Debian GNU/Linux 12 %s ttyAMA0' % hostname,
        '',
    ]
    return lines


def no_boot_media_lines(node, info):
    lines = bootloader_lines(node) + [
        'OTP boardrev c03141 bootrom 48b0 48b0',
    ]
    if info['partition_type'] is None:
        lines.append('MBR: 0x00000000,       0 type: 0x00')
    else:
        lines.append('MBR: 0x00000000,       0 type: 0x%02x' % info['partition_type'])
    lines += [
        'Trying partition: 0',
        'Failed to open device: mmcblk0: no boot media (no FAT boot partition on eMMC)',
        'Boot mode: RESTART (0f) order f4',
        'Retrying boot',
    ]
    return lines


def usb_rom_lines():
    # The boot ROM itself says nothing on the UART; this line stands for the SoC waiting on USB.
    return ['', 'BCM2711 boot ROM: nRPIBOOT asserted, USB device boot: waiting for rpiboot']


def usb_payload_lines(node, payload):
    lines = bootloader_lines(node, usb=True)
    if payload == 'mass-storage-gadget':
        lines += [
            'Loading boot.img ...',
            'Starting start4.elf @ 0xfec00200',
            '[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x410fd083]',
            '[    0.000000] Machine model: Raspberry Pi Compute Module 4 Rev 1.1',
            '[    1.530112] mmcblk0: mmc0:0001 BJTD4R 29.1 GiB',
            'mass-storage-gadget: exporting /dev/mmcblk0 over USB (inquiry mmcblk0)',
        ]
    elif payload == 'msd':
        lines += ['Loading msd.elf ...', 'USB mass storage device: mmcblk0']
    else:
        lines += ['Loading %s ...' % payload]
    return lines
