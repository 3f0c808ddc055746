# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reflash over the hat's gigabit switch (method network).

USB carries only the small netflash payload: every node is held in USB boot, rpiboot serves it a
directory whose boot.img boots the agent, and the agent pulls the compressed image from this
controller's HTTP server, writes the bmap's ranges to its own eMMC, reads them back and reports
the digests. The controller compares every digest with the bmap itself and records the node
exactly as the USB method does, so either method sees the other's records as up to date.

First-boot settings are written afterwards through the mass-storage path (a second rpiboot with
mass-storage-gadget64): they are a few kilobytes in the boot partition, the USB method's code
already edits and verifies them there, and the agent stays free of any FAT or cloud-init logic.

Failures fail closed like the USB method: USB boot released, node off, no record, and a message
that says whether method usb is the way out.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import threading

from ansible_collections.minicluster.cm4.plugins.module_utils.flash import netpayload
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.bmap import parse_bmap
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.netserver import (
    NetflashError,
    NetflashRun,
    Plan,
    check_bind_address,
    interface_addresses,
    normalise_serial,
)
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.reflash import (
    Reflash,
    ReflashError,
    find_executable,
    find_payload,
)

DEFAULT_BOOTFILES = '/usr/share/rpiboot/mass-storage-gadget64/bootfiles.bin'
COMPRESSION_BY_SUFFIX = (('.xz', 'xz'), ('.zst', 'zstd'), ('.zstd', 'zstd'), ('.img', 'none'), ('.raw', 'none'))
USB_WAY_OUT = 'method usb does not use the network: run again with method=usb'
EMMC_WAY_OUT = 'the eMMC read back wrong; method usb writes the same eMMC: suspect the card if it repeats'


def compression_of(image):
    for suffix, name in COMPRESSION_BY_SUFFIX:
        if image.endswith(suffix):
            return name
    raise ReflashError('image %s: method network streams .xz, .zst or raw .img images; recompress it or use '
                       'method usb' % image)


class NetworkReflash(Reflash):
    """Reflash with method network. `network` holds the options of docs/netflash.md."""

    def __init__(self, nodes, image, network, addresses_fn=interface_addresses, **kwargs):
        super().__init__(nodes, image, **kwargs)
        net = dict(network or {})
        self.interface = net.get('interface') or 'eth0'
        self.server_address = net.get('server_address')
        self.server_port = int(net.get('server_port', 8370))
        self.node_addresses = dict(net.get('node_addresses') or {})
        self.serials = dict(net.get('serials') or {})
        self.payload_dir = net.get('payload')
        self.bootfiles = net.get('bootfiles') or DEFAULT_BOOTFILES
        self.device = net.get('device') or '/dev/mmcblk0'
        self.net_timeout = float(net.get('timeout', 1800.0))
        self.addresses_fn = addresses_fn
        self.plans = {}
        self._progress_lock = threading.Lock()

    # -- plan -----------------------------------------------------------------------------------

    def preflight(self):
        super().preflight()
        if not self.bmap:
            raise ReflashError('method network needs the image\'s bmap (per-range SHA-256): give bmap, or use method usb')
        self.compression = compression_of(self.image)
        if not self.server_address:
            raise ReflashError('method network needs server_address: the controller\'s address on %s' % self.interface)
        if not 0 < self.server_port < 65536:
            raise ReflashError('server_port %d is not a TCP port (1 to 65535)' % self.server_port)
        if not (math.isfinite(self.net_timeout) and self.net_timeout > 0):
            raise ReflashError('network timeout must be a positive number of seconds (got %s)' % self.net_timeout)
        if not re.match(r'^[A-Za-z0-9_.:-]{1,15}$', self.interface):
            raise ReflashError('interface %r is not a network interface name' % (self.interface,))
        try:
            check_bind_address(self.server_address, self.interface, self.addresses_fn(self.interface))
            bmap = parse_bmap(self.bmap)
            seen_addr, seen_serial = {}, {}
            for job in self.jobs.values():
                node = job.node
                if node not in self.serials:
                    raise ReflashError('serials has no entry for node %d: give the CM4 serial its bootloader '
                                       'prints (BOOTLOADER ... serial)' % node)
                if node not in self.node_addresses:
                    raise ReflashError('node_addresses has no entry for node %d: give it ADDRESS/PREFIX on the '
                                       'hat subnet' % node)
                serial = normalise_serial(self.serials[node])
                addr = netpayload.node_address(self.node_addresses[node], self.server_address)
                for value, seen, what in ((serial, seen_serial, 'serial'), (addr.split('/', maxsplit=1)[0], seen_addr, 'address')):
                    if value in seen:
                        raise ReflashError('nodes %d and %d have the same %s %s' % (seen[value], node, what, value))
                    seen[value] = node
                self.plans[node] = Plan.from_bmap(serial, self.device, self.compression, bmap)
                self.node_addresses[node] = addr
            netpayload.load_payload(self.payload_dir or '')
        except NetflashError as exc:
            raise ReflashError(str(exc)) from None

    # -- apply ----------------------------------------------------------------------------------

    def _preflight_tools(self):
        exe = find_executable(self.rpiboot)
        if exe is None:
            raise ReflashError('rpiboot executable %s not found on the controller: install usbboot (rpiboot) or set '
                               'rpiboot to its path' % self.rpiboot)
        self._rpiboot_exe = exe
        if not os.path.isfile(self.bootfiles):
            raise ReflashError('usbboot second stage %s not found: install usbboot or set bootfiles' % self.bootfiles)
        if self.firstboot:
            # First-boot settings go through the mass-storage path after the network write.
            super()._preflight_tools()
            self._msd_payload = self._payload
        elif find_payload(self.rpiboot_payload, exe) is None:
            self._msd_payload = None
        else:
            self._msd_payload = find_payload(self.rpiboot_payload, exe)

    def _flash(self, todo):
        for job in todo:
            job.started = self.clock()
        try:
            run = NetflashRun(self.server_address, self.server_port, [self.plans[j.node] for j in todo],
                              self.image, on_progress=self._on_progress)
        except NetflashError as exc:
            # Nothing touched yet: the records stay as they were.
            for job in todo:
                self._fail(job, 'preflight', str(exc))
            return
        workdir = tempfile.mkdtemp(prefix='netflash-')
        try:
            with run:
                self._boot_dirs(todo, run, workdir)
                for job in self.active():
                    # The eMMC is about to change: its old record no longer describes it.
                    self.records.forget(job.node)
                    job.record = None
                self._usb_boot(self.active())
                for job in self.active():
                    if self.stopping():
                        break
                    self._payload = job.netboot_dir
                    self._run_rpiboot([job])
                if self.stopping():
                    self._stop_jobs(self.active())
                self._await(run, self.active())
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if self.stopping():
            self._stop_jobs(self.active())
        if self.firstboot and self.active():
            jobs = self.active()
            self._usb_boot(jobs)
            self._payload = self._msd_payload
            self._run_rpiboot(self.active())
            self._wait_disks(self.active())
            self._customise(self.active())
        self._boot(self.active())
        for job in self.jobs.values():
            if job.started is not None:
                job.seconds = self.clock() - job.started

    def _boot_dirs(self, jobs, run, workdir):
        for job in jobs:
            try:
                job.netboot_dir = netpayload.make_boot_dir(
                    self.payload_dir, self.bootfiles, os.path.join(workdir, 'node%d' % job.node), run.url,
                    self.node_addresses[job.node])
            except NetflashError as exc:
                self._fail(job, 'preflight', str(exc))

    def _on_progress(self, serial, sent, total):
        if self.progress is None:
            return
        node = next((n for n, p in self.plans.items() if p.serial == serial), None)
        if node is not None:
            with self._progress_lock:
                self.progress.bytes(node, sent, total)

    def _await(self, run, jobs):
        if not jobs:
            return
        for job in jobs:
            job.step = 'network write'
            self._phase(job, 'writing over the network')
        serials = [self.plans[j.node].serial for j in jobs]

        def hopeless():
            # A node asked for a plan under a serial this run does not know, and every other
            # node has reported: nothing more will come.
            return bool(run.strangers) and len(run.reports) + len(run.strangers) >= len(serials)

        start = self.clock()
        run.wait(serials, self.net_timeout, stop=lambda: hopeless() or self.stopping())
        waited = self.clock() - start
        strangers = ', '.join('%s from %s' % (s, c) for c, s in sorted(run.strangers.items()))
        for job in jobs:
            plan = self.plans[job.node]
            ok, reason, report = run.result(plan.serial)
            if ok:
                mapped = sum(rng[1] for rng in plan.ranges)
                job.write = dict(bytes_written=mapped, verified=True, bytes_verified=mapped,
                                 content_digest=report.get('content_digest'), write_seconds=round(waited, 2))
                continue
            if report is None:
                extra = (' (a node asked for a plan as serial %s: check serials)' % strangers) if strangers else ''
                self._fail(job, 'network write', 'no report from serial %s over %s within %ss%s: %s'
                           % (plan.serial, self.interface, int(self.net_timeout), extra, USB_WAY_OUT))
            elif report.get('digests') and report.get('decoder_status') == 0 and report.get('download_status') == 0:
                self._fail(job, 'verify', '%s: %s' % (reason, EMMC_WAY_OUT))
            else:
                self._fail(job, 'network write', '%s: %s' % (reason, USB_WAY_OUT))
        self._release([j for j in jobs if j.failed])
