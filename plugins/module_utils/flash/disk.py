# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find the disk a CM4 in USB boot presents, and nothing else.

After rpiboot has loaded the mass-storage gadget, the node's eMMC shows up as a SCSI disk behind
the node's own port of the hat's USB hub. The only disk accepted for a node is one that

- hangs below that node's exact USB device in sysfs, on one of its interfaces:
  ``.../<usb path>/<usb path>:<config>.<interface>/host<H>/target<H>:<C>:<T>/<H>:<C>:<T>:<L>/block/<name>``
  compared component by component, so ``1-1.2.1`` never matches ``1-1.2.10`` or a device on a
  hub behind it (``1-1.2.1.4``);
- is a whole disk (no ``partition`` file) that the kernel's block class lists under the same
  sysfs path (``<root>/sys/block/<name>``);
- reports the gadget's SCSI inquiry: model ``mmcblk0`` (mass-storage-gadget64) or vendor
  ``RPi-MSD-`` (the legacy msd payload);
- has a device node ``<root>/dev/<name>`` that is what sysfs names: a block device whose
  major:minor equals sysfs ``dev`` and whose size equals sysfs ``size``. Below a root other than
  ``/`` (the simulator's fake system root) a regular file is accepted in its place, with the same
  size check, and a ``/dev/disk/by-path`` link for that USB port, when there is one, must point at
  the same node.

Everything lives below a configurable root (default ``/``) so that tests and the simulator can
present a fake ``sys`` and ``dev`` tree.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time

GADGET_MODEL = 'mmcblk0'
LEGACY_VENDOR = 'RPi-MSD-'
USB_PATH_RE = re.compile(r'^[0-9]+-[0-9]+(\.[0-9]+)*\Z')
SCSI_HOST_RE = re.compile(r'^host[0-9]+\Z')
SCSI_TARGET_RE = re.compile(r'^target[0-9]+:[0-9]+:[0-9]+\Z')
SCSI_DEVICE_RE = re.compile(r'^[0-9]+:[0-9]+:[0-9]+:[0-9]+\Z')
DISK_NAME_RE = re.compile(r'^sd[a-z]+\Z')
MASS_STORAGE_CLASS = '08'


class DiskError(Exception):
    """A disk that cannot be proven to be the node's, with a message for the operator."""


class DiskInfo(object):
    """A node's disk, proven to hang below its USB path."""

    def __init__(self, usb_path, name, path, real_path, sysfs, dev, size, model, vendor, by_path=None):
        self.usb_path = usb_path
        self.name = name
        self.path = path
        self.real_path = real_path
        self.sysfs = sysfs
        self.dev = dev
        self.size = size
        self.model = model
        self.vendor = vendor
        self.by_path = by_path

    def as_dict(self):
        return dict(usb_path=self.usb_path, name=self.name, path=self.path, sysfs=self.sysfs, dev=self.dev,
                    size=self.size, model=self.model, vendor=self.vendor, by_path=self.by_path)

    def __repr__(self):
        return 'DiskInfo(%s at %s, %s)' % (self.name, self.usb_path, self.path)


def check_usb_path(usb_path):
    """A sysfs USB device name such as 1-1.2.1 (bus-port.port...), nothing else."""
    if not isinstance(usb_path, str) or not USB_PATH_RE.match(usb_path):
        raise DiskError('USB path %r is not a sysfs USB device name such as 1-1.2.1: fix the usb_paths map'
                        % (usb_path,))
    return usb_path


def _join(root, *parts):
    return os.path.join(root, *[p.lstrip('/') for p in parts])


def _read(path, default=None):
    try:
        with open(path, 'rb') as f:
            return f.read().decode('ascii', 'replace').strip()
    except (IOError, OSError):
        return default


def _components(path):
    return [c for c in os.path.normpath(path).split(os.sep) if c]


def by_path_ports(usb_path):
    """The port part udev's path_id uses in /dev/disk/by-path: 1-1.2.1 -> 1.2.1."""
    return usb_path.split('-', 1)[1]


class _Candidate(object):
    def __init__(self, name, block_dir, interface):
        self.name = name
        self.block_dir = block_dir
        self.interface = interface


def _candidates(usb_dir, usb_path):
    """Block devices below an exact interface of the USB device: (name, real block dir, interface)."""
    interface_re = re.compile(r'^%s:[0-9]+\.[0-9]+$' % re.escape(usb_path))
    found = []
    try:
        entries = sorted(os.listdir(usb_dir))
    except OSError:
        return found
    for interface in entries:
        if not interface_re.match(interface):
            continue
        iface_dir = os.path.join(usb_dir, interface)
        iface_class = _read(os.path.join(iface_dir, 'bInterfaceClass'))
        if iface_class is not None and iface_class.lower() != MASS_STORAGE_CLASS:
            continue
        for host in _listdir(iface_dir, SCSI_HOST_RE):
            host_dir = os.path.join(iface_dir, host)
            for target in _listdir(host_dir, SCSI_TARGET_RE):
                target_dir = os.path.join(host_dir, target)
                for lun in _listdir(target_dir, SCSI_DEVICE_RE):
                    block = os.path.join(target_dir, lun, 'block')
                    for name in _listdir(block, DISK_NAME_RE):
                        found.append(_Candidate(name, os.path.realpath(os.path.join(block, name)), interface))
    return found


def _listdir(path, pattern):
    try:
        return sorted(e for e in os.listdir(path) if pattern.match(e))
    except OSError:
        return []


def _below(path, usb_real, usb_path):
    """True when path lies below the USB device usb_real, on an interface of that very device."""
    dev = _components(usb_real)
    comps = _components(path)
    if len(comps) <= len(dev) + 1 or comps[:len(dev)] != dev or dev[-1] != usb_path:
        return False
    return re.match(r'^%s:[0-9]+\.[0-9]+$' % re.escape(usb_path), comps[len(dev)]) is not None


def _device_size(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def probe(usb_path, root='/', identity=None):
    """The node's disk as it is now: DiskInfo, or None when it is not there (yet).

    Raises DiskError when something is there but cannot be proven to be the node's gadget disk:
    never falls back to any other disk. identity, when given, is (description, accept(vendor,
    model)) for a disk other than the CM4 gadget (the RP2040 boot ROM's drive).
    """
    check_usb_path(usb_path)
    usb_link = _join(root, 'sys/bus/usb/devices', usb_path)
    if not os.path.exists(usb_link):
        return None
    usb_real = os.path.realpath(usb_link)
    if os.path.basename(usb_real) != usb_path:
        raise DiskError('sysfs entry %s resolves to %s, not a device named %s: refusing to guess the disk'
                        % (usb_link, usb_real, usb_path))
    candidates = _candidates(usb_real, usb_path)
    if not candidates:
        return None
    if len(candidates) > 1:
        raise DiskError('USB device %s presents %d disks (%s): expected the single disk of the eMMC gadget'
                        % (usb_path, len(candidates), ', '.join(c.name for c in candidates)))
    cand = candidates[0]
    name = cand.name
    where = 'disk %s at USB path %s' % (name, usb_path)
    if not _below(cand.block_dir, usb_real, usb_path):
        raise DiskError('%s resolves to %s, outside %s: refusing it' % (where, cand.block_dir, usb_real))
    class_link = _join(root, 'sys/block', name)
    if not os.path.exists(class_link):
        # The kernel has not finished registering the disk: not there yet.
        return None
    if os.path.realpath(class_link) != cand.block_dir:
        raise DiskError('%s: %s points to %s, not to the disk below the USB device (%s): refusing it'
                        % (where, class_link, os.path.realpath(class_link), cand.block_dir))
    if os.path.exists(os.path.join(cand.block_dir, 'partition')):
        raise DiskError('%s is a partition, not a whole disk: refusing it' % where)
    scsi_dir = os.path.dirname(os.path.dirname(cand.block_dir))
    model = _read(os.path.join(cand.block_dir, 'device', 'model'))
    if model is None:
        model = _read(os.path.join(scsi_dir, 'model'), '')
    vendor = _read(os.path.join(cand.block_dir, 'device', 'vendor'))
    if vendor is None:
        vendor = _read(os.path.join(scsi_dir, 'vendor'), '')
    if identity is not None:
        if not identity[1](vendor, model):
            raise DiskError('%s reports vendor %r model %r, not %s: refusing it' % (where, vendor, model, identity[0]))
    elif model != GADGET_MODEL and vendor != LEGACY_VENDOR:
        raise DiskError('%s reports vendor %r model %r, not the CM4 gadget (model %s or vendor %s): refusing it'
                        % (where, vendor, model, GADGET_MODEL, LEGACY_VENDOR))
    sectors = _read(os.path.join(cand.block_dir, 'size'))
    try:
        size = int(sectors) * 512
    except (TypeError, ValueError):
        return None
    if size <= 0:
        # The gadget is there but has no medium yet.
        return None
    if _read(os.path.join(cand.block_dir, 'ro'), '0') != '0':
        raise DiskError('%s is read-only: is the eMMC write-protected?' % where)
    dev = _read(os.path.join(cand.block_dir, 'dev'), '')
    node = _join(root, 'dev', name)
    if not os.path.lexists(node):
        return None
    real = os.path.realpath(node)
    try:
        st = os.stat(real)
    except OSError:
        return None
    if stat.S_ISBLK(st.st_mode):
        rdev = '%d:%d' % (os.major(st.st_rdev), os.minor(st.st_rdev))
        if rdev != dev:
            raise DiskError('%s: %s is block device %s but sysfs names %s: refusing it' % (where, node, rdev, dev))
    elif stat.S_ISREG(st.st_mode) and os.path.realpath(root) != '/':
        # The simulator's disks are regular files below its fake root: the dev entry must be the
        # one sysfs names, which the checks above and below establish.
        pass
    else:
        raise DiskError('%s: %s is not a block device: refusing it' % (where, node))
    try:
        actual = _device_size(real)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENXIO, errno.ENOMEDIUM):
            return None
        raise DiskError('%s: cannot open %s: %s' % (where, node, exc.strerror))
    if actual != size:
        raise DiskError('%s: %s holds %d bytes but sysfs says %d: refusing it' % (where, node, actual, size))
    link = _by_path(root, usb_path, real, where)
    return DiskInfo(usb_path, name, node, real, cand.block_dir, dev, size, model, vendor, by_path=link)


def _by_path(root, usb_path, real, where):
    """The /dev/disk/by-path link for this USB port, cross-checked when udev made one."""
    directory = _join(root, 'dev/disk/by-path')
    marker = '-usb-0:%s:' % by_path_ports(usb_path)
    found = None
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return None
    for entry in entries:
        if marker not in entry or '-part' in entry or '-scsi-' not in entry:
            continue
        target = os.path.realpath(os.path.join(directory, entry))
        if target != real:
            raise DiskError('%s: %s points to %s, not to %s: refusing it'
                            % (where, os.path.join(directory, entry), target, real))
        found = os.path.join(directory, entry)
    return found


def still_there(info, root='/'):
    """True while the disk found earlier is still the one at the node's USB path."""
    try:
        current = probe(info.usb_path, root)
    except DiskError:
        return False
    return current is not None and current.sysfs == info.sysfs and current.dev == info.dev \
        and current.real_path == info.real_path


def wait_for_disk(usb_path, root='/', timeout=60.0, interval=0.5, clock=time.monotonic, sleep=time.sleep,
                  give_up=None):
    """Poll until the node's disk appears; DiskInfo, or DiskError after timeout seconds.

    give_up, when given, is called each round; a true value ends the wait early (e.g. rpiboot failed).
    """
    check_usb_path(usb_path)
    deadline = clock() + timeout
    while True:
        info = probe(usb_path, root)
        if info is not None:
            return info
        if give_up is not None and give_up():
            raise DiskError('gave up waiting for the disk at USB path %s' % usb_path)
        if clock() >= deadline:
            raise DiskError(_absent_reason(usb_path, root, timeout))
        sleep(interval)


def _absent_reason(usb_path, root, timeout):
    usb_link = _join(root, 'sys/bus/usb/devices', usb_path)
    if not os.path.exists(usb_link):
        return ('no USB device at %s after %ss (%s missing): check the node is in USB boot and the usb_paths map'
                % (usb_path, _num(timeout), usb_link))
    return ('USB device %s shows no eMMC disk after %ss: did rpiboot load the mass-storage gadget? '
            'raise disk_timeout on a slow controller' % (usb_path, _num(timeout)))


def _num(value):
    return ('%.1f' % value).rstrip('0').rstrip('.')
