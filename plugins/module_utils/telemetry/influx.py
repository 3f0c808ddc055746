# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hats' samples in InfluxDB line protocol, written by a thread that never blocks the sampler.

Points go into a bounded queue; a full queue drops the oldest point and counts it. The writer
sends batches to /write (1.x) or /api/v2/write (2.x), retries a failed batch with a growing pause,
and drops it (counted) after the retries or at once when the server rejects its content (HTTP 400).
"""

from __future__ import annotations

import base64
import collections
import http.client
import logging
import math
import ssl
import threading
from urllib.parse import urlencode, urlsplit

log = logging.getLogger('minicluster.telemetry')
MEASUREMENT_NODE = 'cm4_node'
MEASUREMENT_HAT = 'cm4_hat'
RETRIES = 3


def _escape_key(text):
    return str(text).replace('\\', '\\\\').replace(',', '\\,').replace('=', '\\=').replace(' ', '\\ ')


def _field(value):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, int):
        return '%di' % value
    if isinstance(value, float):
        return repr(value)
    return '"%s"' % str(value).replace('\\', '\\\\').replace('"', '\\"')


def line(measurement, tags, fields, seconds):
    """One point; fields that are None or not finite are left out; None when no field is left."""
    kept = [(k, v) for k, v in sorted(fields.items())
            if v is not None and not (isinstance(v, float) and not math.isfinite(v))]
    if not kept:
        return None
    tag_text = ''.join(',%s=%s' % (_escape_key(k), _escape_key(v)) for k, v in sorted(tags.items()))
    return '%s%s %s %d' % (_escape_key(measurement), tag_text,
                           ','.join('%s=%s' % (_escape_key(k), _field(v)) for k, v in kept), int(seconds))


def points(snapshot):
    """Line-protocol points of one monitor snapshot."""
    seconds = snapshot['time']
    hat = snapshot['hat']
    out = []
    for node, item in sorted(snapshot['nodes'].items()):
        out.append(line(MEASUREMENT_NODE, {'hat': hat, 'node': node}, {
            'current_a': item['current_a'], 'power_on': item['on'], 'usb_boot': item['usb_boot'],
            'temperature_c': item['temperature_c']}, seconds))
    fan = snapshot['fan']['reading'] or {}
    out.append(line(MEASUREMENT_HAT, {'hat': hat}, {
        'input_voltage_v': snapshot['input']['voltage_v'], 'input_current_a': snapshot['input']['current_a'],
        'input_power_w': snapshot['input']['power_w'], 'input_saturated': snapshot['input']['saturated'],
        'fan_rpm': fan.get('rpm'), 'fan_drive_ratio': fan.get('drive_ratio'), 'fan_stalled': fan.get('stalled'),
        'fan_regime': snapshot['fan']['regime']}, seconds))
    return [p for p in out if p is not None]


def endpoint(cfg):
    """(URL, headers) of the write endpoint."""
    headers = {'Content-Type': 'text/plain; charset=utf-8'}
    if cfg['version'] == 1:
        query = {'db': cfg['database'], 'precision': 's'}
        if cfg.get('retention_policy'):
            query['rp'] = cfg['retention_policy']
        if cfg.get('username'):
            token = base64.b64encode(('%s:%s' % (cfg['username'], cfg.get('password') or '')).encode('utf-8'))
            headers['Authorization'] = 'Basic ' + token.decode('ascii')
        return '%s/write?%s' % (cfg['url'], urlencode(sorted(query.items()))), headers
    query = {'org': cfg['org'], 'bucket': cfg['bucket'], 'precision': 's'}
    if cfg.get('token'):
        headers['Authorization'] = 'Token ' + cfg['token']
    return '%s/api/v2/write?%s' % (cfg['url'], urlencode(sorted(query.items()))), headers


def http_post(url, body, headers, timeout):
    """POST body to url; (status, first bytes of the reply). Raises OSError when the server is unreachable."""
    parts = urlsplit(url)
    if parts.scheme == 'https':
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request('POST', parts.path + ('?' + parts.query if parts.query else ''), body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(300).decode('utf-8', 'replace')
    except http.client.HTTPException as exc:
        raise OSError(str(exc) or type(exc).__name__)
    finally:
        conn.close()


class InfluxWriter(object):

    def __init__(self, cfg, post=http_post):
        self.cfg = cfg
        self.url, self.headers = endpoint(cfg)
        self.post = post
        self.queue = collections.deque()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.last_error = None

    def put(self, lines):
        """Queue points; never blocks. The oldest points make room when the queue is full."""
        with self.lock:
            for item in lines:
                if len(self.queue) >= self.cfg['max_queue']:
                    self.queue.popleft()
                    self.dropped += 1
                self.queue.append(item)
            if len(self.queue) >= self.cfg['batch_size']:
                self.wake.set()

    def queued(self):
        with self.lock:
            return len(self.queue)

    def _send(self, batch):
        """None when InfluxDB took the batch, else (retry?, error)."""
        body = ('\n'.join(batch) + '\n').encode('utf-8')
        try:
            status, text = self.post(self.url, body, self.headers, self.cfg['timeout'])
        except (OSError, ValueError) as exc:
            return True, '%s: %s' % (self.cfg['url'], exc)
        if 200 <= status < 300:
            return None
        # 4xx: the server will never take this batch (or these credentials); 408/429/5xx may pass later.
        return status >= 500 or status in (408, 429), 'HTTP %d from %s: %s' % (status, self.cfg['url'], text.strip()[:120])

    def flush(self):
        """Send what is queued, batch by batch. Returns False when the server could not take it."""
        while True:
            with self.lock:
                batch = [self.queue.popleft() for dummy in range(min(len(self.queue), self.cfg['batch_size']))]
            if not batch:
                return True
            delay = 0.5
            error = None
            for dummy in range(RETRIES):
                outcome = self._send(batch)
                if outcome is None:
                    self.written += len(batch)
                    error = None
                    break
                retry, error = outcome
                self.failures += 1
                if not retry or self.stop_event.wait(delay):
                    break
                delay *= 2
            self.last_error = error
            if error is not None:
                with self.lock:
                    self.dropped += len(batch)
                log.warning('InfluxDB write failed, %d points dropped: %s', len(batch), error)
                return False

    def run(self):
        while not self.stop_event.is_set():
            self.wake.wait(self.cfg['flush_interval'])
            self.wake.clear()
            self.flush()
        self.flush_once_on_stop()

    def flush_once_on_stop(self):
        with self.lock:
            batch = list(self.queue)[:self.cfg['batch_size']]
            self.dropped += len(self.queue) - len(batch)
            self.queue.clear()
        if batch:
            if self._send(batch) is None:
                self.written += len(batch)
            else:
                self.dropped += len(batch)
