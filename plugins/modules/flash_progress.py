#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: flash_progress
short_description: Follow a running node_flash to its end, showing each node's progress
version_added: 0.1.0
description:
  - Follows a M(minicluster.cm4.node_flash) started with C(async) and C(poll=0) through the progress
    file it rewrites, and prints one line per O(interval) with each node's phase, bytes written,
    percent, rate (MB/s) and estimated time left. When the flash ends, the task's result is the
    flash's own result (it fails when a node failed), with the same numbers.
  - Each poll also tells the flash that someone is still following it (a heartbeat file next to the
    progress file), so a flash started with the C(watchdog) option stops cleanly when the polls stop,
    for example because the play was interrupted with Ctrl-C.
  - Ctrl-C (or SIGTERM) while it follows asks the flash to stop at once, the same as O(stop=true).
  - Without O(jid), the module alone returns one snapshot of the progress file.
author:
  - minicluster.cm4 developers (@minicluster)
attributes:
  check_mode:
    support: full
    description: Reads only (the heartbeat file is touched).
  diff_mode:
    support: none
    description: Changes nothing.
  action:
    support: full
    description: An action plugin polls the module and the async job until the flash ends, and prints progress.
  async:
    support: none
    description: Meant to follow an async task, not to be one.
options:
  path:
    description:
      - The progress file (the node_flash option C(progress_file)).
    type: path
    required: true
  jid:
    description:
      - The async job id of the node_flash task (C(ansible_job_id) of its registered result). With it, the task
        waits for the flash to end and returns its result.
    type: str
  interval:
    description:
      - Seconds between polls, and between progress lines. From 0.2 to 300.
    type: float
    default: 3.0
  timeout:
    description:
      - Seconds to follow at most; when they run out the flash is asked to stop and the task fails. From 1 to 86400.
    type: float
    default: 7200.0
  stop:
    description:
      - Ask the flash that writes O(path) to stop (SIGTERM). It stops writing, releases USB boot, switches its
        nodes off and records nothing as flashed.
    type: bool
    default: false
'''

EXAMPLES = r'''
- name: Start the flash
  minicluster.cm4.node_flash:
    nodes: [1, 2, 3, 4]
    image: /srv/images/custom.img.xz
    progress_file: /var/lib/minicluster-cm4/flash/progress-manual.json
    watchdog: 60
  async: 3600
  poll: 0
  register: flash_job

- name: Follow it to the end (fails when a node failed)
  minicluster.cm4.flash_progress:
    path: /var/lib/minicluster-cm4/flash/progress-manual.json
    jid: "{{ flash_job.ansible_job_id }}"
    interval: 5
'''

RETURN = r'''
msg:
  description: One line, each node's phase and bytes, for example C(node1 writing 812.0/2048.0 MiB 40% 11.9 MB/s ETA 1:44 | node2 ...);
    once the flash ended, the flash's own message.
  returned: always
  type: str
finished:
  description: Whether the flash has ended (successfully or not).
  returned: always
  type: bool
ok:
  description: Whether every node succeeded, once finished; null before.
  returned: always
  type: bool
nodes:
  description: Per node (keys C("1") to C("4")) phase, bytes_done, bytes_total, percent, mb_per_s, eta_seconds and error;
    with O(jid) once finished, the flash's own per-node list.
  returned: always
  type: raw
stopped:
  description: Whether a stop was sent to the flash.
  returned: always
  type: bool
'''

import json
import os
import signal


from ansible.module_utils.basic import AnsibleModule
from ansible_collections.minicluster.cm4.plugins.module_utils.common import validate
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.record import heartbeat_path


def pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError) as exc:
        return getattr(exc, 'errno', None) == 1  # EPERM: alive, not ours
    return True


def read_progress(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (IOError, OSError):
        return None
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def touch(path):
    try:
        with open(path, 'a'):
            os.utime(path, None)
    except (IOError, OSError):
        pass


def main():
    module = validate.ansible_module(
        AnsibleModule, argument_spec=dict(
            path=dict(type='path', required=True), jid=dict(type='str'), interval=dict(type='float', default=3.0),
            timeout=dict(type='float', default=7200.0), stop=dict(type='bool', default=False)),
        supports_check_mode=True)
    p = module.params
    try:
        validate.text('path', p['path'], empty=False)
        validate.text('jid', p['jid'])
        validate.number('interval', p['interval'], 0.2, 300, unit='seconds')
        validate.number('timeout', p['timeout'], 1, 86400, unit='seconds')
    except validate.InvalidOption as exc:
        module.fail_json(msg=str(exc))
    data = read_progress(p['path'])
    if os.path.isdir(os.path.dirname(p['path']) or '.'):
        touch(heartbeat_path(p['path']))
    if data is None:
        module.exit_json(changed=False, finished=False, ok=None, nodes={}, stopped=False,
                         msg='waiting for the flash to start')
    finished = bool(data.get('finished'))
    msg = data.get('summary') or 'starting'
    alive = bool(data.get('pid')) and pid_alive(data['pid'])
    stopped = False
    if p['stop'] and not finished and alive:
        try:
            os.kill(int(data['pid']), signal.SIGTERM)
            stopped = True
        except OSError as exc:
            module.fail_json(msg='cannot stop the flash (pid %s): %s' % (data['pid'], exc.strerror))
    if not finished and data.get('pid') and not alive:
        finished = True
        msg = 'the flash (pid %s) ended without finishing: %s' % (data['pid'], msg)
    module.exit_json(changed=stopped, finished=finished, ok=data.get('ok'), nodes=data.get('nodes') or {}, msg=msg,
                     stopped=stopped)


if __name__ == '__main__':
    main()
