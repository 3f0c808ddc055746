# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the collection's modules and the simulated hat from system tests."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import random
import shutil
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


@contextlib.contextmanager
def running_sim(directory, *extra):
    """A simulator in directory for the duration of the block."""
    start_sim(directory, *extra)
    try:
        yield directory
    finally:
        stop_sim(directory)


def reset_sim(directory):
    """A shared simulator as just powered up, with no lock or state file left by an earlier test."""
    from hatsim.client import Control
    with Control(str(directory)) as control:
        control.power_cycle(clear_log=True)
    for name in ('lock', 'state'):
        shutil.rmtree(os.path.join(str(directory), name), ignore_errors=True)
    return directory


def run_in_process(name, args):
    """One module run inside this (worker) process, as AnsibleModule sees it: the result dict."""
    from ansible.module_utils.testing import patch_module_args
    module = importlib.import_module('ansible_collections.minicluster.cm4.plugins.modules.' + name)
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out):
        try:
            module.main()
        except SystemExit:
            pass
    return json.loads(out.getvalue())


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
