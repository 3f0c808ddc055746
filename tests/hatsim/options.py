# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The simulator's options: one table feeds the command line, the control socket and state.json."""

from __future__ import annotations

import argparse
import re

# The hat's hub on the Pi 4's USB port 3: the RP2040 is 1-1.3.1, nodes 1..4 are 1-1.3.2 .. 1-1.3.5.
DEFAULT_HUB_PATH = '1-1.3'
NODES = (1, 2, 3, 4)
USB_PATH_RE = re.compile(r'^[1-9][0-9]*-[1-9][0-9]*(\.[1-9][0-9]*)*$')
SIZE_RE = re.compile(r'^([0-9]+)([KMGT]?)(i?B)?$', re.IGNORECASE)


def parse_size(text):
    """'256M', '1G', '1048576' -> bytes (binary units, like truncate(1))."""
    found = SIZE_RE.match(str(text).strip())
    if not found:
        raise ValueError('not a size: %r (use e.g. 256M or 1G)' % (text,))
    unit = found.group(2).upper()
    size = int(found.group(1)) * (1024 ** ' KMGT'.index(unit or ' '))
    if size <= 0 or size % 512:
        raise ValueError('an eMMC size must be a positive multiple of 512 bytes, not %r' % (text,))
    return size


def parse_hub_path(text):
    text = str(text).strip()
    if not USB_PATH_RE.match(text):
        raise ValueError('not a USB port path like 1-1.3: %r' % (text,))
    if len(text.split('.')) > 6:
        raise ValueError('the hub at %r leaves no tier for its devices' % (text,))
    return text


def parse_slots(text):
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [s for s in str(text).replace(' ', '').split(',') if s]
    slots = sorted(set(int(s) for s in items))
    bad = [s for s in slots if s not in NODES]
    if bad:
        raise ValueError('slots are numbered 1 to 4, not %r' % (bad,))
    return tuple(slots)


def parse_gains(text):
    """Each node's IMON gain, mA of 12 V input per IMON millivolt: '1.0,1.9,2.1,1.0' or a list."""
    items = list(text) if isinstance(text, (list, tuple)) else str(text).split(',')
    try:
        gains = tuple(float(g) for g in items)
    except (TypeError, ValueError):
        raise ValueError('IMON gains are four numbers, one per node: %r' % (text,))
    if len(gains) != 4 or not all(0 < g < 100 for g in gains):
        raise ValueError('IMON gains are four positive numbers below 100, one per node: %r' % (text,))
    return gains


def parse_addresses(items):
    if not isinstance(items, (list, tuple)) or any(isinstance(a, bool) or not isinstance(a, int) or not 0 <= a <= 0x7F
                                                   for a in items):
        raise ValueError('silent_addresses must be a list of I2C addresses 0..0x7f, not %r' % (items,))
    return tuple(sorted(set(items)))


class Options(object):
    """Every tunable of the simulated hat, with the defaults the contract documents."""

    # name: (default, converter, settable at run time through the control socket)
    FIELDS = {
        'jumpers': (True, bool, True),
        'emmc_size': (256 * 1024 * 1024, parse_size, False),
        'disk_delay': (1.0, float, True),
        'rpiboot_timeout': (3.0, float, True),
        'hub_path': (DEFAULT_HUB_PATH, parse_hub_path, False),
        'eeprom_image': (None, str, False),
        'write_cycle_ms': (5.0, float, True),
        'boot_delay': (0.5, float, True),
        'empty_slots': ((), parse_slots, True),
        'line_ending': ('crlf', str, True),
        'shunt_ohms': (0.1, float, True),
        'ambient_c': (22.0, float, True),
        'strict_hub': (False, bool, True),
        'hostnames': ({}, dict, True),
        'imon_gains': ((1.0, 1.0, 1.0, 1.0), parse_gains, True),
        # Faults, set at run time only: I2C addresses of the host bus that stop answering, and a
        # fan whose rotor is blocked (the EMC2301 sees no tach pulses and reports a stall).
        'silent_addresses': ((), parse_addresses, True),
        'fan_blocked': (False, bool, True),
    }

    def __init__(self, **values):
        for name, (default, dummy, dummy2) in self.FIELDS.items():
            setattr(self, name, default)
        self.update(values, startup=True)

    def update(self, values, startup=False):
        """Convert and store values; returns the names that changed. Raises ValueError."""
        changed = []
        for name, value in values.items():
            if name not in self.FIELDS:
                raise ValueError('unknown option %r' % (name,))
            dummy, convert, runtime = self.FIELDS[name]
            if not (startup or runtime):
                raise ValueError('option %r can only be given at start' % (name,))
            if value is None and name == 'eeprom_image':
                new = None
            elif convert is bool:
                if not isinstance(value, bool):
                    raise ValueError('option %r takes true or false' % (name,))
                new = value
            else:
                new = convert(value)
            if name == 'line_ending' and new not in ('crlf', 'lf'):
                raise ValueError('line_ending is crlf or lf, not %r' % (new,))
            if name in ('disk_delay', 'rpiboot_timeout', 'write_cycle_ms', 'boot_delay', 'shunt_ohms') and new < 0:
                raise ValueError('option %r cannot be negative' % (name,))
            if name == 'shunt_ohms' and new == 0:
                raise ValueError('the shunt cannot be 0 ohm')
            if name == 'hostnames':
                new = dict((str(int(k)), str(v)) for k, v in new.items())
            if getattr(self, name) != new:
                changed.append(name)
            setattr(self, name, new)
        return changed

    def as_dict(self):
        out = {}
        for name in self.FIELDS:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_argv(self):
        """Command-line arguments that reproduce these options (start -> run)."""
        argv = []
        defaults = Options.__new__(Options)
        for name, (default, dummy, dummy2) in self.FIELDS.items():
            setattr(defaults, name, default)
        if not self.jumpers:
            argv.append('--no-jumpers')
        if self.strict_hub:
            argv.append('--strict-hub')
        simple = {
            'emmc_size': str(self.emmc_size), 'disk_delay': repr(self.disk_delay),
            'rpiboot_timeout': repr(self.rpiboot_timeout), 'hub_path': self.hub_path,
            'write_cycle_ms': repr(self.write_cycle_ms), 'boot_delay': repr(self.boot_delay),
            'empty_slots': ','.join(str(s) for s in self.empty_slots), 'line_ending': self.line_ending,
            'shunt_ohms': repr(self.shunt_ohms), 'ambient_c': repr(self.ambient_c),
            'imon_gains': ','.join(repr(g) for g in self.imon_gains),
        }
        for name, text in simple.items():
            if getattr(self, name) != getattr(defaults, name):
                argv += ['--' + name.replace('_', '-'), text]
        if self.eeprom_image:
            argv += ['--eeprom-image', self.eeprom_image]
        for node, name in sorted(self.hostnames.items()):
            argv += ['--hostname', '%s=%s' % (node, name)]
        return argv


def add_arguments(parser):
    """The options of `start` and `run`."""
    parser.add_argument('--dir', required=True, help='directory for ptys, sockets, images and state')
    parser.add_argument('--no-jumpers', dest='jumpers', action='store_false', default=True,
                        help='hub EEPROM jumpers not fitted: the hub bus is not joined to the Pi bus')
    parser.add_argument('--emmc-size', default='256M', help='size of each node eMMC (sparse file), default 256M')
    parser.add_argument('--disk-delay', type=float, default=1.0, help='seconds from rpiboot to the disk appearing')
    parser.add_argument('--rpiboot-timeout', type=float, default=3.0, help='seconds the fake rpiboot waits for a device')
    parser.add_argument('--hub-path', default=DEFAULT_HUB_PATH,
                        help="sysfs USB path of the hat's hub (RP2040 on its port 1, nodes 1..4 on ports 2..5)")
    parser.add_argument('--eeprom-image', default=None, help='initial 1 KiB contents of the hub EEPROM')
    parser.add_argument('--write-cycle-ms', type=float, default=5.0, help='24LC08 write cycle time')
    parser.add_argument('--boot-delay', type=float, default=0.5, help='seconds from power-on to the boot log')
    parser.add_argument('--empty-slots', default='', help='slots without a node card, e.g. 3,4')
    parser.add_argument('--line-ending', choices=('crlf', 'lf'), default='crlf', help='RP2040 newline translation')
    parser.add_argument('--shunt-ohms', type=float, default=0.1, help='INA226 shunt resistor (R173, 0R1)')
    parser.add_argument('--ambient-c', type=float, default=22.0, help='ambient temperature')
    parser.add_argument('--strict-hub', action='store_true', default=False,
                        help='rpiboot works only while the hub runs a configuration that swaps the node ports '
                             'and is out of reset (jumpers removed)')
    parser.add_argument('--imon-gains', default='1.0,1.0,1.0,1.0',
                        help='mA of 12 V input current per IMON millivolt of nodes 1..4 (what calibration recovers)')
    parser.add_argument('--hostname', action='append', default=[], metavar='N=NAME',
                        help='fallback hostname of node N when its boot partition names none')


def options_from_args(args):
    hostnames = {}
    for item in args.hostname:
        node, sep, name = item.partition('=')
        if not sep or not node.strip().isdigit() or int(node) not in NODES or not name:
            raise ValueError('--hostname takes N=NAME with N in 1..4, not %r' % (item,))
        hostnames[node.strip()] = name
    return Options(jumpers=args.jumpers, emmc_size=args.emmc_size, disk_delay=args.disk_delay,
                   rpiboot_timeout=args.rpiboot_timeout, hub_path=args.hub_path, eeprom_image=args.eeprom_image,
                   write_cycle_ms=args.write_cycle_ms, boot_delay=args.boot_delay, empty_slots=args.empty_slots,
                   line_ending=args.line_ending, shunt_ohms=args.shunt_ohms, ambient_c=args.ambient_c,
                   strict_hub=args.strict_hub, hostnames=hostnames, imon_gains=args.imon_gains)


def build_parser_for_options():
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return parser
