#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: flash_progress
short_description: Read the progress of a running node_flash
version_added: 0.1.0
description:
  - Reads the progress file that M(minicluster.cm4.node_flash) rewrites while it runs, and returns each
    node's step and bytes written, with a one-line summary in RV(msg).
  - Meant for an C(until) loop next to a node_flash started with C(async) and C(poll=0). The summary is
    shown on every retry, without extra verbosity.
  - With O(jid), the flash also counts as finished when its async job has ended (also when it ended
    before writing any progress).
author:
  - minicluster.cm4 developers (@minicluster)
attributes:
  check_mode:
    support: full
    description: Reads only.
  diff_mode:
    support: none
    description: Changes nothing.
  action:
    support: full
    description: An action plugin runs the module, checks the async job and always shows the summary.
  async:
    support: none
    description: Meant to poll an async task, not to be one.
options:
  path:
    description:
      - The progress file (the node_flash option C(progress_file)).
    type: path
    required: true
  jid:
    description:
      - The async job id of the node_flash task (C(ansible_job_id) of its registered result).
    type: str
'''

EXAMPLES = r'''
- name: Start the flash
  minicluster.cm4.node_flash:
    nodes: [1, 2, 3, 4]
    image: /srv/images/custom.img.xz
    progress_file: /tmp/flash-progress.json
  async: 3600
  poll: 0
  register: flash_job

- name: Follow it
  minicluster.cm4.flash_progress:
    path: /tmp/flash-progress.json
    jid: "{{ flash_job.ansible_job_id }}"
  register: progress
  until: progress.finished
  retries: 1800
  delay: 2
'''

RETURN = r'''
msg:
  description: One line, each node's step and bytes, for example C(node1 writing 812.0/2048.0 MiB (40%) | node2 ...).
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
  description: Per node (keys C("1") to C("4")) phase, bytes_done, bytes_total, percent and error.
  returned: always
  type: dict
'''

import json
import os

from ansible.module_utils.basic import AnsibleModule


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


def main():
    module = AnsibleModule(argument_spec=dict(path=dict(type='path', required=True), jid=dict(type='str')),
                           supports_check_mode=True)
    data = read_progress(module.params['path'])
    if data is None:
        module.exit_json(changed=False, finished=False, ok=None, nodes={}, msg='waiting for the flash to start')
    finished = bool(data.get('finished'))
    msg = data.get('summary') or 'starting'
    if not finished and data.get('pid') and not pid_alive(data['pid']):
        finished = True
        msg = 'the flash (pid %s) ended without finishing: %s' % (data['pid'], msg)
    module.exit_json(changed=False, finished=finished, ok=data.get('ok'), nodes=data.get('nodes') or {}, msg=msg)


if __name__ == '__main__':
    main()
