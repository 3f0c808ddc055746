# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-side helpers: a context manager and a pytest fixture factory for a running fleet.

    from fleet.testing import running_fleet, ssh

    with running_fleet(tmp_path / 'fleet', prefix='t9', subnet='10.231.19.0/24') as state:
        ssh(state, 'node1', 'uname -n')

In a conftest.py, `fleet_fixture(prefix, subnet)` makes a session-scoped fixture of it.
"""

from __future__ import annotations

import contextlib
import subprocess

from fleet import nodes


@contextlib.contextmanager
def running_fleet(directory, prefix, subnet, count=4, **kwargs):
    state = nodes.create(directory, prefix, subnet, count, **kwargs)
    try:
        yield state
    finally:
        nodes.destroy(directory, prefix)


def node(state, name):
    for item in state['nodes']:
        if item['name'] == name:
            return item
    raise KeyError(name)


def ssh(state, name, command, check=True, input=None):
    """Run a shell command on a node as root; returns the CompletedProcess (text)."""
    argv = ['ssh', '-i', state['key'], '-o', f'UserKnownHostsFile={state["known_hosts"]}',
            '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes',
            f'root@{node(state, name)["address"]}', command]
    return subprocess.run(argv, check=check, capture_output=True, text=True, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)


def fleet_fixture(prefix, subnet, count=4, scope='session'):
    import pytest

    @pytest.fixture(scope=scope)
    def fleet(tmp_path_factory):
        with running_fleet(tmp_path_factory.mktemp(f'fleet-{prefix}'), prefix, subnet,
                           count) as state:
            yield state
    return fleet
