# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One owner per node: a flash claims the nodes it works on, and everything else that switches a
node asks first.

A claim is an exclusive flock() on ``<state_dir>/flash/node<N>.lock`` plus an owner file beside it
(``node<N>.owner.json``: run id, pid, start time, progress file, phase). The kernel drops the lock
when its holder dies however it dies, so:

- lock held            the node is being flashed: node_power refuses unless forced, a second flash
                       reports which run holds it;
- lock free, no owner  nobody works on the node;
- lock free, owner     the run that claimed it died without releasing it (killed): the owner file
                       says how far it got, and the next run reports and repairs it.

Switching a node takes the same lock shared for the length of the switch, so a flash cannot
start on a node in the middle of someone else's pin change.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time

from ansible_collections.minicluster.cm4.plugins.module_utils.common.files import atomic_write_json, ensure_dir

# Phases of a flash in which the node has not been touched, or has been handed back.
UNTOUCHED = ('queued', 'up to date', 'done', 'released')


class NodeBusy(Exception):
    """A node is owned by a flash; the message names the run and how to stop it."""


def flash_dir(state_dir):
    return os.path.join(state_dir, 'flash')


def lock_path(state_dir, node):
    return os.path.join(flash_dir(state_dir), 'node%d.lock' % node)


def owner_path(state_dir, node):
    return os.path.join(flash_dir(state_dir), 'node%d.owner.json' % node)


def read_owner(state_dir, node):
    try:
        with open(owner_path(state_dir, node)) as f:
            data = json.load(f)
    except (IOError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_owner(state_dir, node, data):
    atomic_write_json(owner_path(state_dir, node), data, sync=False)


def _try_lock(fd, mode):
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def was_touched(info):
    """Whether the run an owner file belongs to had started switching or writing its node."""
    phase = (info or {}).get('phase')
    if phase == 'released':
        phase = info.get('interrupted_phase')
    return phase not in UNTOUCHED


def describe(node, info):
    """'node 3 is being flashed by run R (pid P, since T, phase writing, progress in F)'."""
    info = info or {}
    started = info.get('started')
    when = time.strftime('%H:%M:%S UTC', time.gmtime(started)) if isinstance(started, (int, float)) else '?'
    text = 'node %d is being flashed by run %s (pid %s, since %s, phase %s' % (
        node, info.get('run', '?'), info.get('pid', '?'), when, info.get('phase', '?'))
    if info.get('progress_file'):
        text += ', progress in %s' % info['progress_file']
    return text + ')'


def stop_hint(nodes):
    return ('stop it with `ansible-playbook playbooks/reflash.yml -e abort=true -e nodes=%s`, or wait for it to finish'
            % ','.join(str(n) for n in nodes))


def holders(state_dir, nodes):
    """({node: owner info} of live flashes, {node: owner info} left by runs that died)."""
    live, dead = {}, {}
    for node in nodes:
        path = lock_path(state_dir, node)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            info = read_owner(state_dir, node)
            if info:
                dead[node] = info
            continue
        try:
            if _try_lock(fd, fcntl.LOCK_SH):
                info = read_owner(state_dir, node)
                if info:
                    dead[node] = info
            else:
                live[node] = read_owner(state_dir, node) or {}
        finally:
            os.close(fd)
    return live, dead


class Guard(object):
    """Shared locks on some nodes' flash locks for the length of a pin change (node_power).

    Raises NodeBusy naming the flash when one holds a node, unless force.
    """

    def __init__(self, state_dir, nodes, force=False):
        self.state_dir = state_dir
        self.nodes = list(nodes)
        self.force = force
        self._fds = []
        self.forced = {}
        self.dead = {}

    def __enter__(self):
        busy = {}
        for node in self.nodes:
            path = lock_path(self.state_dir, node)
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                # No lock file: no flash has ever claimed this node here.
                continue
            if _try_lock(fd, fcntl.LOCK_SH):
                self._fds.append(fd)
                info = read_owner(self.state_dir, node)
                if info and was_touched(info):
                    self.dead[node] = info
            else:
                os.close(fd)
                busy[node] = read_owner(self.state_dir, node) or {}
        if busy and not self.force:
            self.__exit__(None, None, None)
            raise NodeBusy('%s: %s; force=true switches it anyway and spoils that flash'
                           % ('; '.join(describe(n, busy[n]) for n in sorted(busy)), stop_hint(sorted(busy))))
        self.forced = busy
        return self

    def __exit__(self, *exc):
        while self._fds:
            fd = self._fds.pop()
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class Claim(object):
    """A flash run's exclusive hold on one node, with its owner file."""

    def __init__(self, state_dir, node, info, timeout=2.0, poll=0.05):
        self.state_dir = state_dir
        self.node = node
        self.info = dict(info, node=node, phase='queued')
        self.timeout = timeout
        self.poll = poll
        self.fd = None
        self.found = None

    def acquire(self):
        """Take the node; NodeBusy when another run has it. Sets found to the owner file a dead run left."""
        ensure_dir(flash_dir(self.state_dir))
        fd = os.open(lock_path(self.state_dir, self.node), os.O_RDWR | os.O_CREAT, 0o644)
        # A node_power switching the node holds the lock shared for a moment: wait that out.
        deadline = time.monotonic() + self.timeout
        while not _try_lock(fd, fcntl.LOCK_EX):
            if time.monotonic() >= deadline:
                os.close(fd)
                info = read_owner(self.state_dir, self.node)
                if info:
                    raise NodeBusy('%s: %s' % (describe(self.node, info), stop_hint([self.node])))
                raise NodeBusy('node %d is being switched by another process (lock %s held): run again'
                               % (self.node, lock_path(self.state_dir, self.node)))
            time.sleep(self.poll)
        self.fd = fd
        self.found = read_owner(self.state_dir, self.node)
        _write_owner(self.state_dir, self.node, self.info)
        return self

    def phase(self, phase):
        if self.fd is None or self.info.get('phase') == phase:
            return
        self.info['phase'] = phase
        try:
            _write_owner(self.state_dir, self.node, self.info)
        except (IOError, OSError):
            pass

    def release(self):
        """The node is handed back: the owner file goes, then the lock."""
        if self.fd is None:
            return
        try:
            os.unlink(owner_path(self.state_dir, self.node))
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def mark_released(state_dir, node, run, note):
    """Record in a dead run's owner file that its node was switched off and released."""
    info = read_owner(state_dir, node)
    if not info or info.get('run') != run:
        return
    info.update(phase='released', interrupted_phase=info.get('phase'), released=note, released_at=time.time())
    try:
        _write_owner(state_dir, node, info)
    except (IOError, OSError):
        pass


def forget(state_dir, node):
    try:
        os.unlink(owner_path(state_dir, node))
    except OSError:
        pass
