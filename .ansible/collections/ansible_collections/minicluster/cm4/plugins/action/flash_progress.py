# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs the flash_progress module, folds in the async job's state, and always shows the summary.

Module results cannot ask to be displayed; an action plugin can (as debug does), so an until loop
on this task prints each node's progress on every retry at normal verbosity.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):

    _VALID_ARGS = frozenset(('path', 'jid'))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        jid = args.get('jid')
        progress = self._execute_module(module_name='minicluster.cm4.flash_progress', module_args=args,
                                        task_vars=task_vars)
        result.update(progress)
        if jid and not progress.get('failed') and not progress.get('finished'):
            async_dir = self._remote_expand_user(self.get_shell_option('async_dir', default='~/.ansible_async'))
            job = self._execute_module(module_name='ansible.legacy.async_status', task_vars=task_vars,
                                       module_args={'jid': jid, '_async_dir': async_dir})
            if job.get('failed') and 'could not find job' in str(job.get('msg', '')):
                result.update(failed=True, msg='flash job %s is unknown: %s' % (jid, job.get('msg')))
            elif job.get('finished'):
                result['finished'] = True
        if not result.get('finished'):
            # Shown on every retry: keep it to the one-line summary.
            for key in ('nodes', 'ok', 'invocation'):
                result.pop(key, None)
        result['_ansible_verbose_always'] = True
        return result
