# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The simulator's stand-in for Raspberry Pi's rpiboot (usbboot).

It takes rpiboot's arguments, serves one device in USB boot (the one at `-p PATH` when given, by
exact match), prints what rpiboot prints, and exits before the disk appears. With no eligible
device it prints `Waiting for BCM2835/6/7/2711/2712...` and gives up after the simulator's
rpiboot_timeout with exit status 1 (the real one waits forever). Unknown flags print the usage
to stderr and exit 255, as rpiboot's usage(1) does with exit(-1).

Payloads: `-d` naming a mass-storage-gadget* directory exposes the eMMC as a disk with SCSI model
`mmcblk0`; no `-d` (or `-d msd`) is the legacy msd (vendor `RPi-MSD-`); any other directory runs
a payload that exposes no disk; when that directory holds a boot.img (the netflash payload), the
node runs the netflash agent's stand-in (hatsim.netflash_node) against its eMMC.
"""

from __future__ import annotations

import os
import sys
import time

from hatsim.client import Control, ControlError

USAGE = """Usage: rpiboot
   or: rpiboot -d [directory]
Boot a Raspberry Pi in device mode either directly into a mass storage device
or provide a set of boot files from a directory.

   -d [directory] : Boot using files in this directory
   -l             : Loop forever
   -o             : Use files from overlay subdirectory if they exist (when using a custom directory)
                    USB Path (1-1.3.2 etc) will be added to the directory name (creating a separate overlay per path)
   -m delay       : Microseconds delay between checking for new devices (default 500)
   -v             : Verbose
   -s             : Signed using bootsig.bin
   -0/1/2/3/4/5/6 : Only look for CMs attached to USB port number 0-6
   -p [pathname]  : Only look for CM with USB pathname
   -i [serialno]  : Only look for a Raspberry Pi Device with a given serialno
   -j [path]      : Enable output of metadata JSON files in a given directory for BCM2712/2711
   -h             : This help
"""
WITH_VALUE = ('-d', '-p', '-m', '-i', '-j')
FLAGS = ('-l', '-o', '-v', '-s', '-0', '-1', '-2', '-3', '-4', '-5', '-6')
POLL_S = 0.1


class UsageError(Exception):
    pass


def parse(argv):
    opts = {'directory': None, 'usb_path': None, 'port': None, 'loop': False, 'verbose': False}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ('-h', '--help'):
            return None
        if arg in WITH_VALUE:
            if i + 1 >= len(argv):
                raise UsageError(arg)
            value = argv[i + 1]
            i += 2
            if arg == '-d':
                opts['directory'] = value
            elif arg == '-p':
                opts['usb_path'] = value
            elif arg == '-m' and not value.isdigit():
                raise UsageError(arg)
            continue
        if arg in FLAGS:
            if arg == '-l':
                opts['loop'] = True
            elif arg == '-v':
                opts['verbose'] = True
            elif arg[1].isdigit():
                opts['port'] = int(arg[1])
            i += 1
            continue
        raise UsageError(arg)
    return opts


def payload_of(directory):
    if directory is None:
        return 'msd'
    base = os.path.basename(os.path.normpath(directory))
    if base.startswith('mass-storage-gadget'):
        return 'mass-storage-gadget'
    return base or 'msd'


def say(text):
    sys.stdout.write(text + '\n')
    sys.stdout.flush()


def main(argv, sim_dir):
    try:
        opts = parse(argv)
    except UsageError:
        sys.stderr.write(USAGE)
        return 255
    if opts is None:
        sys.stdout.write(USAGE)
        return 0
    say('RPIBOOT: build-date Apr 15 2024 version 20240415~142116 7b6ed3a1')
    directory = opts['directory']
    if directory is not None and not os.path.isdir(directory):
        sys.stderr.write("Unable to open directory '%s'\n" % directory)
        return 1
    if opts['usb_path']:
        say('Restricting to port %s' % opts['usb_path'])
    boot_file = os.path.join(directory, 'bootcode4.bin') if directory else 'bootcode4.bin (built-in msd)'
    timeout = 3.0
    try:
        with Control(sim_dir, timeout=10) as control:
            timeout = float(control.ping().get('options', {}).get('rpiboot_timeout', timeout))
    except ControlError as exc:
        sys.stderr.write('rpiboot: %s\n' % exc)
    say('Loading: %s' % boot_file)
    say('Waiting for BCM2835/6/7/2711/2712...')
    served = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with Control(sim_dir, timeout=10) as control:
                reply = control.rpiboot(opts['usb_path'], opts['port'], payload_of(directory))
        except ControlError:
            reply = {'served': False}
        if reply.get('served'):
            served += 1
            if opts['verbose']:
                say('Found candidate Compute Module... Device located at %s' % reply['usb_path'])
            say('Loading: %s' % boot_file)
            say('Sending bootcode.bin')
            say('Successful read 4 bytes ')
            say('Waiting for BCM2835/6/7/2711/2712...')
            say('Loading: %s' % boot_file)
            say('Second stage boot server')
            say('Cannot open file config.txt')
            say('Cannot open file pieeprom.sig')
            if directory:
                say('Loading: %s' % os.path.join(directory, 'boot.img'))
                say('File read: boot.img')
            say('Second stage boot server done')
            if directory and payload_of(directory) not in ('mass-storage-gadget', 'msd') \
                    and os.path.exists(os.path.join(directory, 'boot.img')):
                start_netflash_node(sim_dir, reply['node'], directory)
            if not opts['loop']:
                return 0
            deadline = time.monotonic() + timeout
            say('Waiting for BCM2835/6/7/2711/2712...')
            continue
        time.sleep(POLL_S)
    return 0 if served else 1


def start_netflash_node(sim_dir, node, directory):
    """The served node boots the netflash payload: run its stand-in, detached, as the node would."""
    import subprocess
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    log = open(os.path.join(sim_dir, 'netflash-node%d.log' % node), 'ab')
    subprocess.Popen([sys.executable, '-m', 'hatsim.netflash_node', sim_dir, str(node), directory],
                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True)


SCRIPT = '''#!{python}
# rpiboot stand-in of the hat simulator running in {sim_dir}
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, {package_parent!r})
from hatsim.fake_rpiboot import main
sys.exit(main(sys.argv[1:], {sim_dir!r}))
'''


def write_script(path, sim_dir, python=None):
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = SCRIPT.format(python=python or sys.executable, sim_dir=sim_dir, package_parent=package_parent)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
