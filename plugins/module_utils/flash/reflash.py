# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reflash nodes end to end: plan from the controller's records, then, per node, USB boot, rpiboot,
find the disk, write all disks from one decompression stream, verify, customise first boot,
release USB boot, power cycle and optionally watch the console for a boot line.

A node that fails at any step is released (USB boot off) and switched off at once, with one line
saying what failed where and what to do; the other nodes carry on. Nothing here knows Ansible:
the node_flash module turns options into a Reflash and its results into a task result.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

from ansible_collections.minicluster.cm4.plugins.module_utils.flash import disk as diskmod
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.bmap import parse_bmap
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.errors import FlashError
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.source import normalize_sha256
from ansible_collections.minicluster.cm4.plugins.module_utils.flash import firstboot as fbmod
from ansible_collections.minicluster.cm4.plugins.module_utils.flash import record as recmod
from ansible_collections.minicluster.cm4.plugins.module_utils.board import owner as ownermod

try:
    import serial
    HAS_SERIAL = True
except ImportError:  # pragma: no cover - depends on the controller
    serial = None
    HAS_SERIAL = False

DEFAULT_USB_PATHS = {1: '1-1.2.1', 2: '1-1.2.2', 3: '1-1.2.3', 4: '1-1.2.4'}
PAYLOAD_DIRS = ('/usr/share/rpiboot', '/usr/local/share/rpiboot', '/usr/share/usbboot', '/usr/local/share/usbboot',
                '/opt/usbboot', '~/usbboot')


STAGE_WORDS = {'source': 'reading the image', 'open': 'opening the disk', 'write': 'writing',
               'sync': 'flushing the disk', 'verify': 'read-back verification'}
STAGE_ADVICE = {
    'source': 'fix the image (corrupt, truncated, or not matching its bmap or sha256) and run again',
    'open': 'nothing was written to it',
    'write': "check the node's USB link (did the disk go away?) and run again",
    'sync': "check the node's USB link (did the disk go away?) and run again",
    'verify': 'run again, and suspect the eMMC if it repeats',
}


class ReflashError(Exception):
    """A problem found before any node is touched, with a message for the operator."""


def node_name(node):
    return 'node%d' % node


def find_executable(name):
    """Path of an executable given as a path or a name on PATH (also the sbin directories)."""
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    path = os.environ.get('PATH', '') + os.pathsep + '/usr/local/sbin:/usr/sbin:/sbin'
    return shutil.which(name, path=path)


def find_payload(payload, rpiboot_path=None):
    """The rpiboot payload directory: a path as given, else looked up in usbboot's install dirs."""
    if os.sep in payload:
        return payload if os.path.isdir(payload) else None
    dirs = []
    if rpiboot_path:
        here = os.path.dirname(os.path.realpath(rpiboot_path))
        dirs += [here, os.path.join(os.path.dirname(here), 'share', 'rpiboot')]
    dirs += [os.path.expanduser(d) for d in PAYLOAD_DIRS]
    for d in dirs:
        candidate = os.path.join(d, payload)
        if os.path.isdir(candidate):
            return candidate
    return None


def payload_search_dirs(rpiboot_path=None):
    dirs = []
    if rpiboot_path:
        dirs.append(os.path.dirname(os.path.realpath(rpiboot_path)))
    return dirs + list(PAYLOAD_DIRS)


class Job(object):
    """One node through a reflash."""

    def __init__(self, node, usb_path):
        self.node = node
        self.name = node_name(node)
        self.usb_path = usb_path
        self.record = None
        self.record_before = None
        self.reasons = []
        self.action = 'none'
        self.error = None
        self.step = None
        self.disk = None
        self.rpiboot = None
        self.write = None
        self.firstboot = None
        self.booted = False
        self.console_match = None
        self.power_actions = []
        self.started = None
        self.seconds = None
        self.claim = None
        self.interrupted = None

    @property
    def failed(self):
        return self.error is not None

    def result(self):
        out = dict(node=self.node, usb_path=self.usb_path, action=self.action, reasons=list(self.reasons),
                   changed=self.action in ('flashed', 'would flash') or (self.failed and self.step not in (None, 'preflight')),
                   failed=self.failed)
        if self.error:
            out['msg'] = self.error
            out['failed_step'] = self.step
        if self.disk is not None:
            out['disk'] = dict(name=self.disk.name, path=self.disk.path, size=self.disk.size, model=self.disk.model,
                               by_path=self.disk.by_path)
        if self.write is not None:
            out.update(self.write)
        if self.firstboot is not None:
            out['firstboot'] = self.firstboot
        if self.action == 'flashed':
            out['booted'] = self.booted
            if self.console_match is not None:
                out['console_match'] = self.console_match
        if self.seconds is not None:
            out['seconds'] = round(self.seconds, 2)
        if self.power_actions:
            out['power_actions'] = self.power_actions
        if self.interrupted:
            out['interrupted_run'] = self.interrupted
        return out


class ConsoleWatch(threading.Thread):
    """Reads a node console until a regex matches or it is told to stop."""

    def __init__(self, path, pattern, opener):
        super(ConsoleWatch, self).__init__()
        self.daemon = True
        self.path = path
        self.pattern = re.compile(pattern, re.MULTILINE)
        self.opener = opener
        self.port = None
        self.error = None
        self.match = None
        self.tail = ''
        self.done = threading.Event()
        self._stop_event = threading.Event()

    def open(self):
        self.port = self.opener(self.path)
        try:
            self.port.reset_input_buffer()
        except Exception:  # pylint: disable=broad-except
            pass

    def run(self):
        text = ''
        try:
            while not self._stop_event.is_set():
                data = self.port.read(4096)
                if not data:
                    continue
                text = (text + data.decode('utf-8', 'replace'))[-65536:]
                found = self.pattern.search(text)
                if found:
                    self.match = found.group(0)
                    break
        except Exception as exc:  # pylint: disable=broad-except
            self.error = str(exc)
        finally:
            lines = [line for line in text.replace('\r', '').split('\n') if line.strip()]
            self.tail = lines[-1] if lines else ''
            try:
                self.port.close()
            except Exception:  # pylint: disable=broad-except
                pass
            self.done.set()

    def stop(self):
        self._stop_event.set()


def open_console(path):
    if not HAS_SERIAL:
        raise ReflashError('pyserial is missing on the controller: install it to watch node consoles')
    return serial.serial_for_url(path, baudrate=115200, timeout=0.2)


class Reflash(object):
    """Plan and carry out the reflash of some nodes. See the module's documentation for options."""

    def __init__(self, nodes, image, hat_factory, records, flash_fn, identity_fn, bmap=None, sha256=None,
                 force=False, usb_paths=None, rpiboot='rpiboot', rpiboot_payload='mass-storage-gadget64',
                 rpiboot_timeout=60.0, root='/', disk_timeout=60.0, firstboot=None, wait_for=None, consoles=None,
                 boot_timeout=180.0, verify=True, progress=None, check_mode=False, stagger=1.0, restart_delay=2.0,
                 flash_options=None, console_opener=open_console, lock_timeout=0.0, clock=time.monotonic,
                 sleep=time.sleep, poll_interval=0.25, check_fn=None, state_dir=None, run_info=None,
                 watchdog=0.0, heartbeat=None, before_touch=None):
        self.nodes = sorted(set(nodes))
        self.image = image
        self.bmap = bmap
        self.sha256 = sha256
        self.force = force
        self.usb_paths = dict(DEFAULT_USB_PATHS)
        self.usb_paths.update(usb_paths or {})
        self.rpiboot = rpiboot
        self.rpiboot_payload = rpiboot_payload
        self.rpiboot_timeout = rpiboot_timeout
        self.root = root
        self.disk_timeout = disk_timeout
        self.firstboot = firstboot or None
        self.wait_for = wait_for or None
        self.consoles = consoles or {}
        self.boot_timeout = boot_timeout
        self.verify = verify
        self.progress = progress
        self.check_mode = check_mode
        self.stagger = stagger
        self.restart_delay = restart_delay
        self.hat_factory = hat_factory
        self._hat = None
        self.records = records
        self.flash_fn = flash_fn
        self.identity_fn = identity_fn
        self.check_fn = check_fn
        self.flash_options = flash_options or {}
        self.console_opener = console_opener
        self.lock_timeout = lock_timeout
        self.clock = clock
        self.sleep = sleep
        self.poll_interval = poll_interval
        self.jobs = dict((n, Job(n, self.usb_paths.get(n))) for n in self.nodes)
        self.identity = None
        self.image_summary = None
        self.state_dir = state_dir if state_dir is not None else os.path.dirname(records.directory)
        self.run_info = run_info or {'run': '%d-%d' % (int(time.time()), os.getpid()), 'pid': os.getpid(),
                                     'started': time.time()}
        self.watchdog = watchdog
        self.heartbeat = heartbeat
        self.stop_reason = None
        # Called once everything is checked, right before the first node is claimed.
        self.before_touch = before_touch

    # -- helpers --------------------------------------------------------------------------------

    @property
    def hat(self):
        if self._hat is None:
            self._hat = self.hat_factory()
        return self._hat

    def _phase(self, job, phase):
        if self.progress is not None:
            self.progress.phase(job.node, phase, error=job.error)
        if job.claim is not None:
            job.claim.phase(phase)

    # -- stopping -------------------------------------------------------------------------------

    def request_stop(self, reason):
        """Ask a running flash to stop (from a signal handler): checked between and inside steps."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def stopping(self):
        """Why the flash must stop, or None: a stop request, or nobody polling its progress any more."""
        if self.stop_reason is None and self.watchdog and self.heartbeat:
            try:
                idle = time.time() - os.stat(self.heartbeat).st_mtime
            except OSError:
                idle = None
            if idle is not None and idle > self.watchdog:
                self.stop_reason = ('nobody has followed its progress for %ss: the play that started it was interrupted'
                                    % _num(idle))
        return self.stop_reason

    def _stop_jobs(self, jobs):
        """Fail and release the given jobs because the flash was told to stop."""
        reason = self.stopping()
        for job in jobs:
            if not job.failed:
                self._fail(job, job.step or 'preflight', 'flash stopped (%s) at step %s: writing stopped, USB boot '
                           'released and the node switched off; nothing is recorded as flashed: run the flash again'
                           % (reason, job.step or 'preflight'))
        self._release(jobs)

    def _fail(self, job, step, message):
        job.error = '%s: %s' % (job.name, message)
        job.step = step
        job.action = 'failed'
        self._phase(job, 'failed')

    def active(self, action='flash'):
        return [j for j in self.jobs.values() if j.action == action and not j.failed]

    def _release(self, jobs):
        """USB boot released and power off, for nodes that failed after being touched."""
        jobs = [j for j in jobs if j.step not in (None, 'preflight')]
        if not jobs:
            return
        try:
            results = self.hat.ensure([j.node for j in jobs], 'off', boot_mode='normal', stagger=self.stagger)
            for j in jobs:
                j.power_actions += list(results.get(j.node, {}).get('actions', []))
        except Exception as exc:  # pylint: disable=broad-except
            for j in jobs:
                j.error += ' (and releasing USB boot / powering off failed too: %s: switch node %d off by hand)' % (exc, j.node)

    # -- plan -----------------------------------------------------------------------------------

    def preflight(self):
        """Validate everything that needs no hardware; raises ReflashError for all nodes at once."""
        for job in self.jobs.values():
            if job.usb_path is None:
                raise ReflashError('usb_paths has no entry for node %d: add one (e.g. %s)' % (job.node, DEFAULT_USB_PATHS[job.node]))
            diskmod.check_usb_path(job.usb_path)
        if not os.path.isfile(self.image):
            raise ReflashError('image %s not found on the controller: check the image path' % self.image)
        if not os.access(self.image, os.R_OK):
            raise ReflashError('image %s is not readable: check its permissions' % self.image)
        if os.path.getsize(self.image) == 0:
            raise ReflashError('image %s is empty: give the real image (was a download cut short?)' % self.image)
        if self.bmap and not os.path.isfile(self.bmap):
            raise ReflashError('bmap %s not found on the controller: check the bmap path or leave bmap out' % self.bmap)
        if self.firstboot:
            for job in self.jobs.values():
                fbmod.normalise(self.firstboot_settings(job.node))
        if self.wait_for:
            try:
                re.compile(self.wait_for)
            except re.error as exc:
                raise ReflashError('wait_for %r is not a regular expression: %s' % (self.wait_for, exc))
            missing = [n for n in self.nodes if not self.consoles.get(n)]
            if missing:
                raise ReflashError('wait_for needs a console for node %s: add it to consoles (e.g. %d: /dev/ttyAMA%d)'
                                   % (', '.join(str(n) for n in missing), missing[0], missing[0]))
        if self.sha256:
            try:
                normalize_sha256(self.sha256)
            except ValueError:
                raise ReflashError('sha256 %r is not a SHA-256 hex digest (64 hex digits)' % self.sha256)
        if self.bmap:
            try:
                parse_bmap(self.bmap)
            except FlashError as exc:
                raise ReflashError('%s: use the bmap made for this image, or leave bmap out' % exc)
        try:
            ident = self.identity_fn(self.image, self.bmap)
        except (FlashError, OSError) as exc:
            raise ReflashError('cannot read image %s: %s' % (self.image, exc))
        self.identity = {
            'image_digest': 'sha256:%s' % ident['source_sha256'],
            'image_size': ident.get('source_size'),
            'bmap_digest': 'sha256:%s' % ident['bmap_sha256'] if ident.get('bmap_sha256') else None,
        }
        if self.sha256 and normalize_sha256(self.sha256) != ident['source_sha256']:
            raise ReflashError('SHA-256 of image %s is %s, expected %s: the file is corrupt or the checksum is for '
                               'another image; no node was touched'
                               % (self.image, ident['source_sha256'], normalize_sha256(self.sha256)))

    def firstboot_settings(self, node):
        """The first-boot settings of one node: {node} in the hostname becomes its number."""
        if not self.firstboot:
            return None
        settings = dict(self.firstboot)
        if settings.get('hostname'):
            settings['hostname'] = settings['hostname'].replace('{node}', str(node))
        password = settings.pop('password', None)
        if password is not None:
            if settings.get('password_hash'):
                raise ReflashError('firstboot: give password or password_hash, not both')
            if not settings.get('user'):
                raise ReflashError('firstboot.password needs user: name the user it belongs to')
            settings['password_hash'] = fbmod.hash_password(password, node, settings['user'])
        return settings

    def plan(self):
        """Decide which nodes need flashing from their records. Touches no hardware."""
        self.preflight()
        for job in self.jobs.values():
            want = self.wanted(job.node)
            job.record = job.record_before = self.records.load(job.node)
            if self.force:
                job.reasons = ['force']
            else:
                job.reasons = recmod.differences(job.record, want)
            job.action = 'flash' if job.reasons else 'none'
            if self.progress is not None:
                self.progress.node(job.node)['phase'] = 'queued' if job.reasons else 'up to date'
        return self.jobs

    def wanted(self, node):
        ident = self.identity or {}
        return recmod.wanted(ident.get('image_digest'), ident.get('bmap_digest'),
                             fbmod.settings_digest(self.firstboot_settings(node)))

    # -- apply ----------------------------------------------------------------------------------

    def run(self):
        """Plan, then (outside check mode) flash what the plan says. Returns the jobs."""
        self.plan()
        todo = self.active()
        if todo:
            self._check_image()
        if self.check_mode:
            for job in todo:
                job.action = 'would flash'
            return self.jobs
        if not todo:
            return self.jobs
        self._preflight_tools()
        if self.before_touch is not None:
            self.before_touch()
        try:
            self._claim(todo)
            try:
                self._flash(self.active())
            except Exception as exc:  # pylint: disable=broad-except
                # Whatever went wrong, no node is left powered in USB boot.
                touched = [j for j in self.jobs.values() if j.started is not None and not j.failed]
                for job in touched:
                    self._fail(job, job.step or 'preflight', 'unexpected error at step %s: %s: %s; the node was '
                               'switched off' % (job.step, type(exc).__name__, exc))
                self._release(touched)
        finally:
            self._unclaim()
        return self.jobs

    def _check_image(self):
        """Decompress the whole image once and check it against its bmap, before any node is touched.

        Remembered per image and bmap digest, so a rerun with the same files does not pay for it again.
        """
        if self.check_fn is None:
            return
        key = '%s %s' % (self.identity['image_digest'], self.identity['bmap_digest'])
        if self.records.image_checked(key):
            return
        try:
            self.check_fn(self.image, self.bmap)
        except (FlashError, OSError) as exc:
            raise ReflashError('%s; no node was touched' % exc)
        if not self.check_mode:
            self.records.remember_checked(key)

    def _preflight_tools(self):
        exe = find_executable(self.rpiboot)
        if exe is None:
            raise ReflashError('rpiboot executable %s not found on the controller: install usbboot (rpiboot) or set rpiboot to its path'
                               % self.rpiboot)
        self._rpiboot_exe = exe
        payload = find_payload(self.rpiboot_payload, exe)
        if payload is None:
            raise ReflashError('rpiboot payload %s not found (looked in %s): install usbboot or set rpiboot_payload to its directory'
                               % (self.rpiboot_payload, ', '.join(payload_search_dirs(exe))))
        self._payload = payload
        if self.firstboot:
            for tool in ('mtype', 'mcopy', 'mdir', 'mdel'):
                if find_executable(tool) is None:
                    raise ReflashError('%s not found on the controller: install mtools for firstboot' % tool)

    def _claim(self, jobs):
        """Take each node for this run; a node another run holds fails with that run's name."""
        info = dict(self.run_info, progress_file=getattr(self.progress, 'path', None))
        for job in jobs:
            claim = ownermod.Claim(self.state_dir, job.node, info)
            try:
                claim.acquire()
            except ownermod.NodeBusy as exc:
                self._fail(job, 'preflight', 'another run holds it: %s' % exc)
                continue
            job.claim = claim
            if claim.found and claim.found.get('run') != info.get('run'):
                # Left by a run that died: say what was found; this run reflashes the node.
                job.interrupted = dict((k, claim.found.get(k)) for k in
                                       ('run', 'pid', 'started', 'phase', 'interrupted_phase', 'released'))

    def _unclaim(self):
        for job in self.jobs.values():
            if job.claim is not None:
                job.claim.release()
                job.claim = None

    def _flash(self, todo):
        for job in todo:
            job.started = self.clock()
            # The eMMC is about to change: its old record no longer describes it.
            self.records.forget(job.node)
            job.record = None
        todo = self.active()
        if not todo:
            return
        for step in (self._usb_boot, self._run_rpiboot, self._wait_disks, self._write, self._customise, self._boot):
            if self.stopping():
                self._stop_jobs(self.active())
                break
            step(self.active())
        for job in self.jobs.values():
            if job.started is not None:
                job.seconds = self.clock() - job.started

    def _usb_boot(self, jobs):
        for job in jobs:
            job.step = 'usb boot'
            self._phase(job, 'usb boot')
        try:
            self._power_cycle(jobs, 'usb')
        except Exception as exc:  # pylint: disable=broad-except
            for job in jobs:
                self._fail(job, 'usb boot', 'could not power it into USB boot: %s' % exc)
            self._release(jobs)

    def _power_cycle(self, jobs, boot_mode):
        """Off (with the boot pin set), one restart delay for all, on: the nodes cycle together."""
        nodes = [j.node for j in jobs]
        off = self.hat.ensure(nodes, 'off', boot_mode=boot_mode, stagger=self.stagger)
        for job in jobs:
            job.power_actions += list(off.get(job.node, {}).get('actions', []))
        if any('off' in r.get('actions', []) for r in off.values()):
            self.sleep(self.restart_delay)
        on = self.hat.ensure(nodes, 'on', boot_mode=boot_mode, stagger=self.stagger)
        for job in jobs:
            job.power_actions += list(on.get(job.node, {}).get('actions', []))

    def _run_rpiboot(self, jobs):
        procs = {}
        logs = {}
        for job in jobs:
            job.step = 'rpiboot'
            self._phase(job, 'rpiboot')
            log = tempfile.TemporaryFile()
            logs[job.node] = log
            cmd = [self._rpiboot_exe, '-d', self._payload, '-p', job.usb_path]
            try:
                procs[job.node] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            except OSError as exc:
                self._fail(job, 'rpiboot', 'cannot run %s: %s: check rpiboot' % (self._rpiboot_exe, exc.strerror))
        deadline = self.clock() + self.rpiboot_timeout
        pending = dict(procs)
        while pending:
            for node, proc in list(pending.items()):
                if proc.poll() is not None:
                    del pending[node]
            if not pending or self.clock() >= deadline or self.stopping():
                break
            self.sleep(self.poll_interval)
        if self.stopping():
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for log in logs.values():
                log.close()
            self._stop_jobs(jobs)
            return
        for node, proc in procs.items():
            job = self.jobs[node]
            logs[node].seek(0)
            output = logs[node].read().decode('utf-8', 'replace')
            logs[node].close()
            last = [line.strip() for line in output.splitlines() if line.strip()]
            last = last[-1] if last else 'no output'
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                self._fail(job, 'rpiboot', 'rpiboot found no CM4 in USB boot at USB path %s within %ss (last output: %s): '
                           'check the node is seated and usb_paths maps node %d to its hub port'
                           % (job.usb_path, _num(self.rpiboot_timeout), last, job.node))
            elif proc.returncode != 0:
                self._fail(job, 'rpiboot', 'rpiboot failed at USB path %s (exit %d: %s): check the node is in USB boot '
                           'and usb_paths maps node %d to its hub port' % (job.usb_path, proc.returncode, last, job.node))
            else:
                job.rpiboot = last
        self._release([j for j in jobs if j.failed])

    def _wait_disks(self, jobs):
        for job in jobs:
            job.step = 'disk'
            self._phase(job, 'waiting for disk')
        deadline = self.clock() + self.disk_timeout
        pending = list(jobs)
        while pending:
            for job in list(pending):
                try:
                    info = diskmod.probe(job.usb_path, self.root)
                except diskmod.DiskError as exc:
                    self._fail(job, 'disk', '%s' % exc)
                    pending.remove(job)
                    continue
                if info is not None:
                    job.disk = info
                    pending.remove(job)
            if not pending:
                break
            if self.stopping():
                self._stop_jobs(jobs)
                return
            if self.clock() >= deadline:
                for job in pending:
                    self._fail(job, 'disk', diskmod._absent_reason(job.usb_path, self.root, self.disk_timeout))
                break
            self.sleep(self.poll_interval)
        self._release([j for j in jobs if j.failed])

    def _write(self, jobs):
        if not jobs:
            return
        by_name = {}
        for job in jobs:
            job.step = 'write'
            self._phase(job, 'writing')
            by_name[job.name] = job

        def progress(name, done, total):
            job = by_name.get(name)
            if job is not None and self.progress is not None:
                self.progress.bytes(job.node, done, total)

        def alive(name):
            job = by_name.get(name)
            return job is not None and not self.stopping() and diskmod.still_there(job.disk, self.root)

        targets = dict((j.name, j.disk.path) for j in jobs)
        try:
            results = self.flash_fn(self.image, targets, bmap_path=self.bmap, sha256=self.sha256, verify=self.verify,
                                    progress=progress, alive=alive, **self.flash_options)
        except Exception as exc:  # pylint: disable=broad-except
            for job in jobs:
                self._fail(job, 'write', 'writing %s to disk %s at USB path %s failed: %s'
                           % (os.path.basename(self.image), job.disk.name, job.usb_path, exc))
            self._release(jobs)
            return
        self.image_summary = getattr(results, 'image', None)
        if self.stopping():
            self._stop_jobs(jobs)
            return
        for job in jobs:
            r = results.get(job.name)
            if r is None:
                self._fail(job, 'write', 'the writer returned no result for disk %s' % job.disk.path)
                continue
            job.write = dict(bytes_written=r.bytes_written, verified=bool(r.verified),
                             bytes_verified=getattr(r, 'bytes_verified', None), content_digest=r.content_digest,
                             write_seconds=round(r.seconds or 0.0, 2),
                             mb_per_s=round(r.bytes_written / r.seconds / 1e6, 1) if r.seconds else None)
            if self.progress is not None:
                self.progress.bytes(job.node, r.bytes_written, (self.image_summary.mapped_size if self.image_summary else 0)
                                    or r.bytes_written, seconds=r.seconds or None)
            if not r.ok:
                stage = getattr(r, 'stage', None) or 'write'
                self._fail(job, 'verify' if stage == 'verify' else 'write', '%s failed on disk %s at USB path %s: %s: %s'
                           % (STAGE_WORDS.get(stage, stage), job.disk.name, job.usb_path, r.error,
                              STAGE_ADVICE.get(stage, 'run again')))
            elif self.verify and not r.verified:
                self._fail(job, 'verify', 'read-back of disk %s at USB path %s did not verify: run again, and suspect '
                           'the eMMC if it repeats' % (job.disk.name, job.usb_path))
        self._release([j for j in jobs if j.failed])

    def _customise(self, jobs):
        if not self.firstboot:
            return
        for job in jobs:
            job.step = 'firstboot'
            self._phase(job, 'first boot settings')
            try:
                job.firstboot = fbmod.apply(job.disk.path, self.firstboot_settings(job.node))
                _sync(job.disk.path)
            except (fbmod.FirstbootError, OSError) as exc:
                self._fail(job, 'firstboot', '%s (disk %s)' % (exc, job.disk.path))
        self._release([j for j in jobs if j.failed])

    def _boot(self, jobs):
        if not jobs:
            return
        watches = {}
        if self.wait_for:
            for job in jobs:
                path = self.consoles[job.node]
                watch = ConsoleWatch(path, self.wait_for, self.console_opener)
                try:
                    watch.open()
                except Exception as exc:  # pylint: disable=broad-except
                    self._fail(job, 'console', 'cannot open console %s: %s: check the consoles map' % (path, exc))
                    continue
                watches[job.node] = watch
        for job in jobs:
            job.step = 'boot'
            self._phase(job, 'booting')
        booting = [j for j in jobs if not j.failed]
        self._release([j for j in jobs if j.failed])
        try:
            if booting:
                self._power_cycle(booting, 'normal')
        except Exception as exc:  # pylint: disable=broad-except
            for watch in watches.values():
                watch.stop()
            for job in booting:
                self._fail(job, 'boot', 'could not release USB boot and power-cycle it: %s' % exc)
            self._release(booting)
            return
        for job in booting:
            job.booted = True
        for node, watch in watches.items():
            watch.start()
        deadline = self.clock() + self.boot_timeout
        for node, watch in watches.items():
            job = self.jobs[node]
            self._phase(job, 'waiting for console')
        for node, watch in watches.items():
            job = self.jobs[node]
            while not watch.done.is_set() and self.clock() < deadline and not self.stopping():
                watch.done.wait(min(self.poll_interval, max(0.0, deadline - self.clock())))
            watch.stop()
            watch.done.wait(2.0)
            if watch.match is not None:
                job.console_match = watch.match
            elif self.stopping():
                self._stop_jobs([job])
            elif watch.error:
                self._fail(job, 'console', 'reading console %s failed: %s' % (watch.path, watch.error))
            else:
                self._fail(job, 'console', 'no %r on console %s within %ss after boot (last line: %r): check enable_uart, '
                           'the consoles map and the image'
                           % (self.wait_for, watch.path, _num(self.boot_timeout), watch.tail[-80:]))
        self._release([j for j in booting if j.failed])
        for job in booting:
            if not job.failed:
                self._done(job)

    def _done(self, job):
        record = dict(self.wanted(job.node))
        record.update(usb_path=job.usb_path, image=os.path.abspath(self.image),
                      bmap=os.path.abspath(self.bmap) if self.bmap else None,
                      bytes_written=(job.write or {}).get('bytes_written'),
                      verified=(job.write or {}).get('verified'),
                      content_digest=(job.write or {}).get('content_digest'))
        job.record = self.records.save(job.node, record)
        job.action = 'flashed'
        job.step = None
        self._phase(job, 'done')


def _sync(path):
    """Flush what mtools wrote: fsync on a block device flushes its whole cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _num(value):
    return ('%.1f' % value).rstrip('0').rstrip('.')
