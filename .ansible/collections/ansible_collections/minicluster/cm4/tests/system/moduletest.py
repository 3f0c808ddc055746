# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the collection's modules and the simulated hat from system tests."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = os.path.join(REPO, 'plugins', 'modules')


def start_sim(directory, *extra):
    subprocess.run([sys.executable, '-m', 'hatsim', 'start', '--dir', str(directory)] + list(extra), check=True,
                   stdout=subprocess.DEVNULL)


def stop_sim(directory):
    subprocess.run([sys.executable, '-m', 'hatsim', 'stop', '--dir', str(directory)], check=False,
                   stdout=subprocess.DEVNULL)


def sim_state(directory):
    with open(os.path.join(str(directory), 'state.json')) as f:
        return json.load(f)


def run_module(name, args, tmp, check_mode=False, diff=False, timeout=300):
    """Run a module the way Ansible's local connection does, minus the packaging.

    The result carries what the module printed under '_stdout', to prove secrets stay out of it.
    """
    args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    path = os.path.join(str(tmp), 'args-%d-%d.json' % (os.getpid(), random.getrandbits(48)))
    with open(path, 'w') as f:
        json.dump({'ANSIBLE_MODULE_ARGS': args}, f)
    proc = subprocess.run([sys.executable, os.path.join(MODULES, name + '.py'), path], capture_output=True, text=True,
                          timeout=timeout, check=False)
    os.unlink(path)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError('module %s printed no JSON: %s %s' % (name, proc.stdout, proc.stderr))
    result['_stdout'] = proc.stdout
    return result
