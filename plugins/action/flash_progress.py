# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Follows a background node_flash to its end: polls the flash_progress module and the async job
itself, prints one progress line per interval, and returns the flash's own result.

Polling here rather than with `until`/`retries` keeps the output to progress lines (no
"FAILED - RETRYING"), lets the task fail exactly when the flash failed, and lets Ctrl-C reach the
flash: the worker that runs this plugin gets SIGINT (or SIGTERM) from ansible-playbook, and the
plugin asks the flash to stop before it goes. Should even that be lost, the polls stop, and a flash
started with a watchdog stops by itself.
"""

from __future__ import annotations

import signal
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


class Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def _eta(seconds):
    if seconds is None:
        return '?'
    seconds = int(seconds)
    return '%d:%02d:%02d' % (seconds // 3600, seconds // 60 % 60, seconds % 60) if seconds >= 3600 else \
        '%d:%02d' % (seconds // 60, seconds % 60)


def progress_line(nodes):
    """'node1 writing 120.0/480.0 MiB 25% 31.2 MB/s ETA 0:12 | node2 booting' from the progress file's nodes."""
    parts = []
    for name in sorted(nodes, key=lambda k: int(k) if str(k).isdigit() else 0):
        entry = nodes[name] or {}
        text = 'node%s %s' % (name, entry.get('phase', '?'))
        total = entry.get('bytes_total') or 0
        if total:
            text += ' %.1f/%.1f MiB %.0f%%' % (entry.get('bytes_done', 0) / 1048576.0, total / 1048576.0,
                                               entry.get('percent', 0.0))
            if entry.get('mb_per_s') is not None:
                text += ' %.1f MB/s' % entry['mb_per_s']
            if entry.get('phase') == 'writing' and entry.get('eta_seconds') is not None:
                text += ' ETA %s' % _eta(entry['eta_seconds'])
        parts.append(text)
    return ' | '.join(parts)


class ActionModule(ActionBase):

    _VALID_ARGS = frozenset(('path', 'jid', 'interval', 'timeout', 'stop'))

    def _poll(self, args, task_vars, **extra):
        return self._execute_module(module_name='minicluster.cm4.flash_progress', module_args=dict(args, **extra),
                                    task_vars=task_vars)

    def _job(self, jid, task_vars):
        # Left for the module to expand, as async_wrapper expands it (with the remote $HOME).
        async_dir = self.get_shell_option('async_dir', default='~/.ansible_async')
        return self._execute_module(module_name='ansible.legacy.async_status', task_vars=task_vars,
                                    module_args={'jid': jid, '_async_dir': async_dir})

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        jid = args.get('jid')
        if not jid or args.get('stop'):
            result.update(self._poll(args, task_vars))
            return result
        try:
            interval = float(args.get('interval', 3.0))
            timeout = float(args.get('timeout', 7200.0))
        except (TypeError, ValueError):
            raise AnsibleActionFail('interval and timeout must be numbers of seconds')
        if not (0.2 <= interval <= 300 and 1 <= timeout <= 86400):
            raise AnsibleActionFail('interval must be from 0.2 to 300 seconds and timeout from 1 to 86400 seconds')
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, _raise_interrupted)
        try:
            return self._follow(result, args, jid, interval, timeout, task_vars)
        except Interrupted as exc:
            # Ask the flash to stop before this worker goes: it releases its nodes itself.
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
            self._poll(args, task_vars, stop=True)
            result.update(failed=True, stopped=True,
                          msg='interrupted (%s): the flash was told to stop; its nodes are switched off with USB boot '
                              'released and nothing is recorded as flashed' % exc)
            return result
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @staticmethod
    def _show(host, progress, last_line):
        line = progress_line(progress.get('nodes') or {}) or progress.get('msg', '')
        if line and line != last_line:
            display.display('%s: %s' % (host, line))
        return line

    def _follow(self, result, args, jid, interval, timeout, task_vars):
        started = time.monotonic()
        deadline = started + timeout
        last_line = None
        host = task_vars.get('inventory_hostname', '')
        while True:
            progress = self._poll(args, task_vars)
            if progress.get('failed'):
                result.update(progress)
                return result
            last_line = self._show(host, progress, last_line)
            job = self._job(jid, task_vars)
            if 'could not find job' in str(job.get('msg', '')):
                # The job file appears a moment after the job starts; a job that never shows up is lost.
                if time.monotonic() - started > 60:
                    result.update(failed=True, msg='flash job %s is unknown: %s' % (jid, job.get('msg')))
                    return result
            elif job.get('finished'):
                # The last line: where every node ended.
                self._show(host, self._poll(args, task_vars), last_line)
                break
            if time.monotonic() >= deadline:
                self._poll(args, task_vars, stop=True)
                result.update(failed=True, stopped=True,
                              msg='the flash did not end within %ss: it was told to stop (its nodes are switched off, '
                                  'nothing is recorded as flashed); raise the timeout and run again' % timeout)
                return result
            time.sleep(interval)
        # The flash's own result, with the same numbers the lines showed.
        for key in ('ansible_job_id', 'started', 'finished', 'results_file', 'stdout', 'stderr', 'invocation'):
            job.pop(key, None)
        result.update(job)
        return result
