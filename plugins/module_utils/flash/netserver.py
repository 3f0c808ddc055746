# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of the network flash: the plans, the HTTP server the agents talk to, the reports.

One server serves one run: for every node a plan keyed by the node's serial (the disk, the
compression, the image size and every bmap range with its SHA-256), the compressed image itself,
and an endpoint where each agent posts what it read back. Nothing else is served. The plan and
the report are plain text lines so that busybox sh on the node can read and write them:

    GET  /plan/<serial>    netflash-plan 1 / serial S / device D / compression C / image /image/S
                           / image_size N / range OFFSET LENGTH SHA256 ...
    GET  /image/<serial>   the compressed image, with Content-Length
    POST /report/<serial>  status ok|failed / error TEXT / download_status N / decoder_status N /
                           writer_status N / compressed_bytes N / image_bytes N /
                           content_digest SHA256 / digest OFFSET LENGTH SHA256 ...

The controller never trusts the agent's own verdict: `check_report` compares every digest with the
bmap itself.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ansible_collections.minicluster.cm4.plugins.module_utils.flash.errors import FlashError

PLAN_VERSION = 'netflash-plan 1'
COMPRESSIONS = ('xz', 'zstd', 'none')
_SERIAL = re.compile(r'^[0-9a-f]{8,16}$')
_SHA256 = re.compile(r'^[0-9a-f]{64}$')
_DEVICE = re.compile(r'^/dev/(mmcblk[0-9]|vd[a-z])$')
MAX_REPORT = 4 << 20
CHUNK = 1 << 20
COUNT_KEYS = ('download_status', 'decoder_status', 'writer_status', 'compressed_bytes', 'image_bytes')


class NetflashError(FlashError):
    """The network flash cannot start or a node's flash failed."""


def normalise_serial(serial):
    """A CM4 serial as the firmware prints it (hex, up to 16 digits), lower case, or an error."""
    text = str(serial).strip().lower()
    if text.startswith('0x'):
        text = text[2:]
    if not _SERIAL.match(text):
        raise NetflashError('serial %r is not 8 to 16 hex digits' % (serial,))
    return text


class Plan(object):
    """What one node writes: only the bmap's ranges, each with the SHA-256 it must read back."""

    def __init__(self, serial, device, compression, image_size, ranges):
        self.serial = normalise_serial(serial)
        if not isinstance(device, str) or not _DEVICE.match(device):
            raise NetflashError('device %r is not a whole eMMC disk (/dev/mmcblkN)' % (device,))
        if compression not in COMPRESSIONS:
            raise NetflashError('compression %r is not one of %s' % (compression, ', '.join(COMPRESSIONS)))
        self.device = device
        self.compression = compression
        self.image_size = int(image_size)
        self.ranges = []
        end = 0
        for offset, length, digest in ranges:
            if offset < end or length <= 0 or offset + length > self.image_size:
                raise NetflashError('range %d+%d out of order or outside the image' % (offset, length))
            if not digest or not _SHA256.match(digest):
                raise NetflashError('range %d+%d has no SHA-256 checksum: the network method needs a '
                                    'bmap with SHA-256 ranges (bmaptool format 2.0)' % (offset, length))
            self.ranges.append((int(offset), int(length), digest))
            end = offset + length

    @classmethod
    def from_bmap(cls, serial, device, compression, bmap):
        if bmap.checksum_type != 'sha256' or not bmap.has_checksums:
            raise NetflashError('bmap %s carries no SHA-256 range checksums: the network method needs '
                                'them (bmaptool create, format 2.0); use method usb' % (bmap.path,))
        ranges = [(start, end - start, digest) for start, end, digest in bmap.byte_ranges()]
        return cls(serial, device, compression, bmap.image_size, ranges)

    @property
    def image_path(self):
        return '/image/' + self.serial

    def text(self):
        lines = [PLAN_VERSION, 'serial ' + self.serial, 'device ' + self.device,
                 'compression ' + self.compression, 'image ' + self.image_path,
                 'image_size %d' % self.image_size]
        lines += ['range %d %d %s' % r for r in self.ranges]
        return '\n'.join(lines) + '\n'


def parse_report(text):
    """The agent's report as a dict; anything not in the format is an error, never ignored."""
    report = {'status': None, 'error': None, 'digests': []}
    for number, line in enumerate(text.splitlines(), 1):
        key, dummy, value = line.partition(' ')
        if key == 'status' and value in ('ok', 'failed'):
            report['status'] = value
        elif key == 'error':
            report['error'] = ''.join(ch for ch in value if ch.isprintable())[:300]
        elif key in COUNT_KEYS and value.strip().isdigit():
            report[key] = int(value)
        elif key == 'content_digest' and _SHA256.match(value):
            report['content_digest'] = value
        elif key == 'digest':
            parts = value.split()
            if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or not _SHA256.match(parts[2]):
                raise NetflashError('report line %d: malformed digest %r' % (number, value[:80]))
            report['digests'].append((int(parts[0]), int(parts[1]), parts[2]))
        elif line.strip():
            raise NetflashError('report line %d not understood: %r' % (number, line[:80]))
    if report['status'] is None:
        raise NetflashError('report carries no status line')
    return report


def check_report(plan, report, compressed_size):
    """None when the node wrote and read back exactly the plan, else a one-line reason."""
    if report['status'] != 'ok':
        return 'the node reported a failure: %s' % (report.get('error') or 'no reason given')
    for key in ('download_status', 'decoder_status', 'writer_status'):
        if report.get(key) != 0:
            return '%s %s' % (key.replace('_', ' '), report.get(key, 'missing'))
    if report.get('compressed_bytes') != compressed_size:
        return 'node received %s compressed bytes, the image has %d' % (report.get('compressed_bytes'), compressed_size)
    if report.get('image_bytes') != plan.image_size:
        return 'node decoded %s bytes, the image has %d' % (report.get('image_bytes'), plan.image_size)
    got = {(o, n): d for o, n, d in report['digests']}
    wrong = [(o, n) for o, n, digest in plan.ranges if got.get((o, n)) != digest]
    if wrong or len(got) != len(plan.ranges):
        first = wrong[0] if wrong else None
        return ('%d of %d ranges read back wrong or missing%s'
                % (len(wrong), len(plan.ranges), ' (first at byte %d)' % first[0] if first else ''))
    return None


def interface_addresses(interface):
    """IPv4 and IPv6 addresses configured on a network interface, from `ip -j addr show`."""
    try:
        out = subprocess.run(['ip', '-j', 'addr', 'show', 'dev', interface], capture_output=True,
                             text=True, check=False)
    except OSError as exc:
        raise NetflashError('cannot run ip to read the addresses of %s: %s' % (interface, exc)) from None
    if out.returncode != 0:
        raise NetflashError('interface %s does not exist on the controller' % interface)
    return [a['local'] for link in json.loads(out.stdout or '[]') for a in link.get('addr_info', [])]


def check_bind_address(address, interface, addresses=None):
    """Refuse a server address that is not the controller's own on the hat's interface."""
    addrs = interface_addresses(interface) if addresses is None else addresses
    if address not in addrs:
        raise NetflashError('controller address %s is not on the hat interface %s (it has %s): set '
                            'server_address to one of those' % (address, interface, ', '.join(addrs) or 'none'))


class _Handler(BaseHTTPRequestHandler):
    server_version = 'netflash'
    protocol_version = 'HTTP/1.1'

    def log_message(self, fmt, *args):
        self.server.run.event('http %s %s' % (self.address_string(), fmt % args))

    def _send(self, code, body, ctype='text/plain'):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serial(self, prefix):
        return self.server.run.lookup(self.path[len(prefix):])

    def do_GET(self):
        run = self.server.run
        if self.path.startswith('/plan/'):
            serial = self._serial('/plan/')
            if serial is None:
                run.unknown(self.path[len('/plan/'):], self.client_address[0])
                return self._send(404, 'no plan for this serial\n')
            run.event('plan served to %s (%s)' % (serial, self.client_address[0]))
            return self._send(200, run.plans[serial].text())
        if self.path.startswith('/image/'):
            serial = self._serial('/image/')
            if serial is None:
                return self._send(404, 'no image for this serial\n')
            return self._image(run, serial)
        return self._send(404, 'not found\n')

    def _image(self, run, serial):
        size = os.path.getsize(run.image)
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(size))
        self.end_headers()
        sent = 0
        with open(run.image, 'rb') as f:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
                run.progress(serial, sent, size)

    def do_POST(self):
        run = self.server.run
        serial = self._serial('/report/') if self.path.startswith('/report/') else None
        length = int(self.headers.get('Content-Length') or 0)
        if serial is None or not 0 < length <= MAX_REPORT:
            return self._send(404, 'no such report\n')
        body = self.rfile.read(length).decode('utf-8', 'replace')
        run.reported(serial, body)
        return self._send(200, 'recorded\n')


class NetflashRun(object):
    """The server of one run: plans by serial, one image, reports and progress by serial."""

    def __init__(self, address, port, plans, image, on_progress=None):
        self.plans = {p.serial: p for p in plans}
        self.image = image
        self.image_size = os.path.getsize(image)
        self.reports = {}
        self.strangers = {}
        self.events = []
        self.sent = {}
        self._on_progress = on_progress
        self._lock = threading.Condition()
        try:
            self.httpd = ThreadingHTTPServer((address, port), _Handler, bind_and_activate=False)
            self.httpd.allow_reuse_address = True
            self.httpd.daemon_threads = True
            self.httpd.server_bind()
            self.httpd.server_activate()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise NetflashError('port %d on %s is already in use: stop what listens there or set '
                                    'server_port to a free port' % (port, address)) from None
            raise NetflashError('cannot listen on %s port %d: %s' % (address, port, exc.strerror or exc)) from None
        self.httpd.run = self
        self.address, self.port = self.httpd.server_address[:2]
        self._thread = None

    @property
    def url(self):
        host = '[%s]' % self.address if ':' in self.address else self.address
        return 'http://%s:%d' % (host, self.port)

    def lookup(self, serial):
        """The plan's serial for the one a node presents: the same, or, for a plan given the 8 digits
        the bootloader prints, the 16 the device tree holds ending in them."""
        serial = serial.lower()
        if serial in self.plans:
            return serial
        if len(serial) == 16 and serial[8:] in self.plans:
            return serial[8:]
        return None

    def event(self, text):
        with self._lock:
            self.events.append((time.time(), text))

    def unknown(self, serial, client):
        # Named in error messages: only characters a serial may have, and not many.
        shown = ''.join(ch for ch in serial[:40] if ch.isalnum()) or '(none)'
        with self._lock:
            self.strangers[client] = shown
            self._lock.notify_all()

    def progress(self, serial, sent, total):
        with self._lock:
            self.sent[serial] = sent
        if self._on_progress:
            self._on_progress(serial, sent, total)

    def reported(self, serial, body):
        with self._lock:
            self.reports[serial] = body
            self._lock.notify_all()

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, name='netflash-http', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(10)

    def wait(self, serials, timeout, stop=None):
        """Wait until every serial reported (or stop() says so); returns the serials still missing."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                missing = [s for s in serials if s not in self.reports]
                left = deadline - time.monotonic()
                if not missing or left <= 0 or (stop and stop()):
                    return missing
                self._lock.wait(min(left, 1.0))

    def result(self, serial):
        """(ok, reason, report dict or None) for one serial after wait()."""
        body = self.reports.get(serial)
        if body is None:
            return False, 'no report from the node', None
        try:
            report = parse_report(body)
        except NetflashError as exc:
            return False, str(exc), None
        reason = check_report(self.plans[serial], report, self.image_size)
        return reason is None, reason, report

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
