# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the controller knows it wrote on each node, and the progress file of a running flash.

A node's eMMC cannot be read without putting the node in USB boot, which costs a power cycle. So
the controller records, per node, what it wrote and verified: the image's identity, the bmap's
digest and the first-boot settings' digest. A rerun compares with that record and touches nothing
when they match. A record is removed before a node is written and saved only after the node was
written, verified, customised and booted, so a record always describes a complete flash.

Layout under the state directory::

    flash/node<N>.json          the record of node N
    flash/progress.json         progress of the running (or last) flash, unless told otherwise
    flash/node<N>.lock          held while node N is being flashed
    flash/checked.json          digests of images (and bmaps) read through and found sound
"""

from __future__ import annotations

import json
import os
import time

from ansible_collections.minicluster.cm4.plugins.module_utils.common.files import atomic_write_json

RECORD_KEYS = ('image_digest', 'bmap_digest', 'firstboot_digest')


class FlashRecords(object):
    """Per-node flash records in state_dir/flash."""

    def __init__(self, state_dir):
        self.directory = os.path.join(state_dir, 'flash')

    def path(self, node):
        return os.path.join(self.directory, 'node%d.json' % node)

    def lock_path(self, node):
        return os.path.join(self.directory, 'node%d.lock' % node)

    def load(self, node):
        try:
            with open(self.path(node)) as f:
                data = json.load(f)
        except (IOError, OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def save(self, node, record):
        record = dict(record)
        record.setdefault('node', node)
        record.setdefault('when', time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
        atomic_write_json(self.path(node), record)
        return record

    def _checked_path(self):
        return os.path.join(self.directory, 'checked.json')

    def image_checked(self, key):
        """Whether an image (and bmap) with these digests was read through and found sound."""
        try:
            with open(self._checked_path()) as f:
                data = json.load(f)
        except (IOError, OSError, ValueError):
            return False
        return isinstance(data, dict) and key in data

    def remember_checked(self, key, keep=16):
        try:
            with open(self._checked_path()) as f:
                data = json.load(f)
            if not isinstance(data, dict):
                data = {}
        except (IOError, OSError, ValueError):
            data = {}
        data[key] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
        # The newest few: a controller flashes a handful of images.
        data = dict(sorted(data.items(), key=lambda kv: kv[1])[-keep:])
        atomic_write_json(self._checked_path(), data)

    def forget(self, node):
        try:
            os.unlink(self.path(node))
            return True
        except OSError:
            return False


def wanted(image_digest, bmap_digest, firstboot_digest):
    return {'image_digest': image_digest, 'bmap_digest': bmap_digest, 'firstboot_digest': firstboot_digest}


def differences(record, want):
    """Names of what differs between a node's record and what is wanted ([] = up to date)."""
    if not record:
        return ['no record']
    return [k for k in RECORD_KEYS if record.get(k) != want.get(k)]


def heartbeat_path(progress_path):
    """The file a poller touches each time it reads the progress (a flash with a watchdog checks its age)."""
    return progress_path + '.alive'


def _mib(n):
    return '%.1f' % (n / 1048576.0)


class ProgressFile(object):
    """A JSON file that a poller (the reflash role) reads while a flash runs.

    {"run": id, "pid", "started", "updated", "finished": bool, "ok": bool|null, "summary": "...",
     "nodes": {"1": {"phase": "writing", "bytes_done": n, "bytes_total": n, "percent": p, "error": ...}}}

    Writes are atomic (rename) and throttled to one per min_interval seconds, except phase changes
    and the final write.
    """

    def __init__(self, path, nodes, run_id=None, min_interval=0.5, clock=time.time):
        self.path = path
        self.clock = clock
        self.min_interval = min_interval
        self._last = 0.0
        self.written = False
        self._write_started = {}
        now = clock()
        self.data = {'run': run_id or '%d-%d' % (int(now), os.getpid()), 'pid': os.getpid(), 'started': now,
                     'updated': now, 'finished': False, 'ok': None, 'summary': '',
                     'nodes': dict((str(n), {'phase': 'queued', 'bytes_done': 0, 'bytes_total': 0, 'percent': 0.0})
                                   for n in nodes)}

    def node(self, node):
        return self.data['nodes'].setdefault(str(node), {'phase': 'queued', 'bytes_done': 0, 'bytes_total': 0,
                                                         'percent': 0.0})

    def phase(self, node, phase, error=None):
        entry = self.node(node)
        entry['phase'] = phase
        if phase == 'writing':
            self._write_started[str(node)] = self.clock()
        if error:
            entry['error'] = error
        self.write(force=True)

    def bytes(self, node, done, total, seconds=None):
        """Bytes written so far; seconds: the writer's own time for them, once it has finished."""
        entry = self.node(node)
        now = self.clock()
        started = self._write_started.setdefault(str(node), now)
        if seconds is not None:
            started = now - seconds
        entry['bytes_done'] = int(done)
        entry['bytes_total'] = int(total or 0)
        entry['percent'] = round(100.0 * done / total, 1) if total else 0.0
        elapsed = now - started
        # Rate over the whole write so far: steady enough for an ETA on a shared USB link.
        if elapsed > 0 and done:
            rate = done / elapsed
            entry['mb_per_s'] = round(rate / 1e6, 1)
            entry['eta_seconds'] = int(round((total - done) / rate)) if total and total >= done else None
        self.write()

    def summary(self):
        parts = []
        for name in sorted(self.data['nodes'], key=int):
            e = self.data['nodes'][name]
            if e.get('bytes_total'):
                text = 'node%s %s %s/%s MiB %.0f%%' % (name, e['phase'], _mib(e['bytes_done']), _mib(e['bytes_total']),
                                                       e['percent'])
                if e.get('mb_per_s') is not None:
                    text += ' %.1f MB/s' % e['mb_per_s']
                parts.append(text)
            else:
                parts.append('node%s %s' % (name, e['phase']))
        return ' | '.join(parts)

    def finish(self, ok):
        self.data['finished'] = True
        self.data['ok'] = bool(ok)
        self.write(force=True)

    def write(self, force=False):
        if not self.path:
            return
        now = self.clock()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        self.written = True
        self.data['updated'] = now
        self.data['summary'] = self.summary()
        try:
            atomic_write_json(self.path, self.data)
        except (IOError, OSError):
            # Progress is a convenience: never let it fail a flash.
            pass
