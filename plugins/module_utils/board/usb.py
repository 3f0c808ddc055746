# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hat's USB2517 hub in sysfs: found, proven to be the hat's, and its ports named.

The hat's hub (0424:2517) hangs on one of the controller's USB ports. Its downstream port 1 is
the RP2040 (2e8a:000a running its console firmware, 2e8a:0003 in BOOTSEL), ports 2..5 are the node
slots 1..4 (schematic nets USBDN1..5), ports 6 and 7 are not wired. A USB device's sysfs name is
its parent's name, a dot and the port number, so with the hub at ``1-1.2`` node N is ``1-1.2.(N+1)``.

Everything is read below a root (``/`` on the controller, a fake tree in tests) from
``sys/bus/usb/devices``, the way udev and lsusb see it. Nothing here writes.
"""

from __future__ import annotations

import os
import re

HUB_ID = ('0424', '2517')
RP2040_CONSOLE_ID = ('2e8a', '000a')
RP2040_BOOTSEL_ID = ('2e8a', '0003')
RP2040_PORT = 1
HUB_PORTS = 7
NODE_PORTS = {1: 2, 2: 3, 3: 4, 4: 5}
# bus-port.port...: the kernel's USB device names (never an interface such as 1-1.2:1.0).
USB_PATH_RE = re.compile(r"[1-9][0-9]{0,2}-[1-9][0-9]{0,2}(\.[1-9][0-9]{0,2}){0,6}")
DEVICES_DIR = 'sys/bus/usb/devices'

NOT_ENUMERATED = (
    "the hat's USB hub is not enumerated: either the three jumpers on the back of the hat are still "
    "fitted (they hold the hub in reset: remove them) or the hub's EEPROM is blank (without its D+/D- "
    "swap nothing behind the hub enumerates: fit the jumpers, run the hat role with "
    "hat_usb2517_manage=true, then remove them)")


class UsbError(Exception):
    """The hat's hub cannot be found or a given path is not the hat's, with what to do."""


def check_usb_path(path, what='USB path', fix=''):
    """A sysfs USB device name such as 1-1.3.2, or UsbError."""
    if not isinstance(path, str) or not USB_PATH_RE.fullmatch(path):
        raise UsbError('%s %r is not a sysfs USB device name such as 1-1.3.2 (bus-port.port...)%s' % (what, path, fix))
    return path


def port_path(hub_path, port):
    return '%s.%d' % (hub_path, port)


def node_path(hub_path, node):
    """Sysfs name of node N's USB port (1..4) behind the hat's hub."""
    return port_path(hub_path, NODE_PORTS[node])


def node_paths(hub_path):
    return dict((n, node_path(hub_path, n)) for n in NODE_PORTS)


def _read(path):
    try:
        with open(path, 'rb') as f:
            return f.read().decode('utf-8', 'replace').strip()
    except (IOError, OSError):
        return None


def device(root, usb_path):
    """{'path', 'id' ('vvvv:pppp'), 'vendor_id', 'product_id', 'product', 'manufacturer', 'serial',
    'speed', 'sysfs'} for the USB device of that sysfs name, or None when there is none."""
    directory = os.path.join(root, DEVICES_DIR, usb_path)
    vendor = _read(os.path.join(directory, 'idVendor'))
    product_id = _read(os.path.join(directory, 'idProduct'))
    if vendor is None or product_id is None:
        return None
    vendor, product_id = vendor.lower(), product_id.lower()
    return {
        'path': usb_path,
        'id': '%s:%s' % (vendor, product_id),
        'vendor_id': vendor,
        'product_id': product_id,
        'product': _read(os.path.join(directory, 'product')),
        'manufacturer': _read(os.path.join(directory, 'manufacturer')),
        'serial': _read(os.path.join(directory, 'serial')),
        'speed': _read(os.path.join(directory, 'speed')),
        'sysfs': os.path.realpath(directory),
    }


def devices(root):
    """Sysfs names of every USB device under root (interfaces and root hubs left out)."""
    try:
        names = os.listdir(os.path.join(root, DEVICES_DIR))
    except OSError:
        return []
    return sorted(n for n in names if USB_PATH_RE.fullmatch(n))


def _is(info, ids):
    return info is not None and (info['vendor_id'], info['product_id']) in ids


def rp2040(root, hub_path):
    """The device on the hub's port 1 when it is an RP2040, with 'mode' 'console' or 'bootsel'; else None."""
    info = device(root, port_path(hub_path, RP2040_PORT))
    if _is(info, (RP2040_CONSOLE_ID,)):
        return dict(info, mode='console')
    if _is(info, (RP2040_BOOTSEL_ID,)):
        return dict(info, mode='bootsel')
    return None


def hubs(root):
    """Sysfs names of every USB2517 under root."""
    return [n for n in devices(root) if _is(device(root, n), (HUB_ID,))]


def tty_of(root, usb_path):
    """The /dev name of the first tty (ttyACM*) on the device's interfaces, or None."""
    directory = os.path.join(root, DEVICES_DIR, usb_path)
    try:
        interfaces = sorted(n for n in os.listdir(directory) if n.startswith(usb_path + ':'))
    except OSError:
        return None
    for interface in interfaces:
        try:
            ttys = sorted(os.listdir(os.path.join(directory, interface, 'tty')))
        except OSError:
            continue
        if ttys:
            return '/dev/' + ttys[0]
    return None


class Hub(object):
    """The hat's hub: its path, the RP2040 on port 1 and the node ports."""

    def __init__(self, root, path, rp2040_info):
        self.root = root
        self.path = path
        self.rp2040 = rp2040_info

    def node_paths(self):
        return node_paths(self.path)

    def ports(self):
        """What is on each downstream port: [{port, path, role, device}], device None when empty."""
        roles = dict((port, 'node%d' % node) for node, port in NODE_PORTS.items())
        roles[RP2040_PORT] = 'rp2040'
        out = []
        for port in range(1, HUB_PORTS + 1):
            path = port_path(self.path, port)
            info = device(self.root, path)
            out.append({'port': port, 'path': path, 'role': roles.get(port, 'unused'),
                        'device': None if info is None else dict((k, info[k]) for k in ('id', 'product', 'manufacturer', 'serial'))})
        return out

    def as_dict(self):
        return {'path': self.path, 'rp2040': None if self.rp2040 is None else self.rp2040['mode'],
                'ports': self.ports()}


def _prove(root, hub_path):
    info = device(root, hub_path)
    if info is None:
        raise UsbError('there is no USB device at %s under %s: give the path of the hat\'s hub '
                       '(lsusb -t shows it), or leave it out to find the hub' % (hub_path, os.path.join(root, DEVICES_DIR)))
    if not _is(info, (HUB_ID,)):
        raise UsbError("USB device %s is %s (%s), not the hat's USB2517 hub (%s:%s): give the hub's own path or leave it out"
                       % (hub_path, info['id'], info['product'] or 'no product string', HUB_ID[0], HUB_ID[1]))
    found = rp2040(root, hub_path)
    if found is None:
        other = device(root, port_path(hub_path, RP2040_PORT))
        raise UsbError("the USB2517 hub at %s is not the hat's: its port 1 holds %s, not the hat's RP2040 (%s:%s, or %s:%s "
                       "in BOOTSEL)%s" % (hub_path, other['id'] if other else 'nothing', RP2040_CONSOLE_ID[0], RP2040_CONSOLE_ID[1],
                                          RP2040_BOOTSEL_ID[0], RP2040_BOOTSEL_ID[1], _why_port1_empty(other)))
    return Hub(root, hub_path, found)


def _why_port1_empty(other):
    if other is not None:
        return ''
    return (': when it is the hat\'s hub, its EEPROM lacks the D+/D- swap of the downstream ports (write the '
            'stock configuration with the hat role and hat_usb2517_manage=true) or the RP2040 has no firmware')


def find_hub(root='/', hub_path=None):
    """The hat's hub as a Hub; hub_path, when given, must be it. Raises UsbError saying why and what to do."""
    if hub_path is not None:
        return _prove(root, check_usb_path(hub_path, 'hub path'))
    candidates = hubs(root)
    if not candidates:
        raise UsbError('no USB2517 hub (%s:%s) under %s: %s' % (HUB_ID[0], HUB_ID[1], os.path.join(root, DEVICES_DIR),
                                                                NOT_ENUMERATED))
    hats = [h for h in candidates if rp2040(root, h) is not None]
    if not hats:
        raise UsbError("no USB2517 hub under %s has the hat's RP2040 on its port 1 (hubs at %s): the hub's EEPROM may lack "
                       "the D+/D- swap of its downstream ports (write the stock configuration with the hat role and "
                       "hat_usb2517_manage=true), or the RP2040 has no firmware"
                       % (os.path.join(root, DEVICES_DIR), ', '.join(candidates)))
    if len(hats) > 1:
        raise UsbError('more than one hat: USB2517 hubs with an RP2040 on port 1 at %s: name the one to use (usb_hub)'
                       % ', '.join(hats))
    return Hub(root, hats[0], rp2040(root, hats[0]))


def resolve_node_paths(nodes, root='/', usb_paths=None, hub_path=None):
    """{node: sysfs USB path} for the nodes: given paths win, the others come from the hat's hub.

    The hub is searched only when a node has no given path. Given paths must be well-formed and
    distinct (two nodes on one port would flash one disk twice).
    """
    given = dict(usb_paths or {})
    for node, path in given.items():
        check_usb_path(path, fix=': fix the usb_paths entry of node %s' % node)
    seen = {}
    for node, path in sorted(given.items()):
        if path in seen:
            raise UsbError('usb_paths gives nodes %s and %s the same USB path %s: each node has its own hub port'
                           % (seen[path], node, path))
        seen[path] = node
    out = dict((n, given[n]) for n in nodes if n in given)
    missing = [n for n in nodes if n not in out]
    if missing or hub_path is not None:
        hub = find_hub(root, hub_path)
        derived = hub.node_paths()
        for n in missing:
            if derived[n] in seen:
                raise UsbError('usb_paths gives node %s the USB path %s, which is node %d\'s port on the hat\'s hub'
                               % (seen[derived[n]], derived[n], n))
            out[n] = derived[n]
    return out
