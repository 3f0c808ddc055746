# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pytest helpers: start a simulator in a directory and always stop it.

    from hatsim.testing import running_hat

    def test_something(tmp_path):
        with running_hat(tmp_path / 'hat', empty_slots=(4,)) as hat:
            hat.control.set(jumpers=False)
            ... hat.rp2040, hat.console(1), hat.i2c_bus, hat.rpiboot, hat.state() ...

Options are the command-line ones with underscores: jumpers=False, emmc_size='64M',
disk_delay=0.2, rpiboot_timeout=1, hub_path='1-1.3', eeprom_image=path, write_cycle_ms=5,
boot_delay=0.1, empty_slots=(3, 4), line_ending='lf', shunt_ohms=0.1, ambient_c=22,
strict_hub=True, hostnames={1: 'alpha'}.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

from hatsim.client import Control, I2C

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_args(**options):
    argv = []
    for name, value in options.items():
        flag = '--' + name.replace('_', '-')
        if name == 'jumpers':
            if not value:
                argv.append('--no-jumpers')
        elif name == 'strict_hub':
            if value:
                argv.append('--strict-hub')
        elif name in ('empty_slots', 'imon_gains'):
            argv += [flag, ','.join(str(v) for v in value)]
        elif name == 'hostnames':
            for node, hostname in sorted(value.items()):
                argv += ['--hostname', '%s=%s' % (node, hostname)]
        else:
            argv += [flag, str(value)]
    return argv


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([PACKAGE_PARENT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    return env


def start(directory, **options):
    """`python -m hatsim start`; raises RuntimeError with its output if it fails."""
    out = subprocess.run([sys.executable, '-m', 'hatsim', 'start', '--dir', str(directory)] + cli_args(**options),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), check=False, timeout=60)
    if out.returncode != 0:
        raise RuntimeError('hatsim start failed (%d): %s' % (out.returncode, out.stdout.decode(errors='replace')))
    return SimulatedHat(directory)


def stop(directory):
    out = subprocess.run([sys.executable, '-m', 'hatsim', 'stop', '--dir', str(directory)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), check=False, timeout=60)
    if out.returncode != 0:
        raise RuntimeError('hatsim stop failed (%d): %s' % (out.returncode, out.stdout.decode(errors='replace')))


class SimulatedHat(object):
    """Paths and clients of a running simulator."""

    def __init__(self, directory):
        self.dir = os.path.abspath(str(directory))
        self.rp2040 = self.path('rp2040')
        self.rp2040_uart = self.path('rp2040-uart')
        self.gpio = 'unix:' + self.path('gpio.sock')
        self.i2c_bus = 'unix:' + self.path('i2c-1.sock')
        self.i2c_hub_bus = 'unix:' + self.path('i2c-hub.sock')
        self.control_socket = self.path('control.sock')
        self.rpiboot = self.path('rpiboot')
        self.state_file = self.path('state.json')
        self.sys_root = self.dir
        self._control = None

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def console(self, node):
        return self.path('console%d' % node)

    def emmc(self, node):
        return self.path('emmc', 'node%d.img' % node)

    @property
    def pid(self):
        with open(self.path('hatsim.pid')) as f:
            return int(f.read())

    @property
    def control(self):
        if self._control is None:
            self._control = Control(self.dir)
        return self._control

    def i2c(self, hub=False):
        return I2C(self.path('i2c-hub.sock' if hub else 'i2c-1.sock'))

    def state(self):
        """A fresh state from the simulator (state.json can be up to one event behind a reader)."""
        return self.control.state()

    def state_file_json(self):
        with open(self.state_file) as f:
            return json.load(f)

    def close(self):
        if self._control is not None:
            self._control.close()
            self._control = None


def fixture(scope='function', **options):
    """A pytest fixture running a simulator with these options: `hat = hatsim.testing.fixture(boot_delay=0.1)`."""
    import pytest  # only test code needs it

    @pytest.fixture(scope=scope)
    def hat(tmp_path_factory):
        with running_hat(tmp_path_factory.mktemp('hatsim') / 'hat', **options) as sim:
            yield sim
    return hat


@contextlib.contextmanager
def running_hat(directory=None, **options):
    """Start a simulator (in directory, or a new temporary one), yield a SimulatedHat, always stop it."""
    made = directory is None
    directory = tempfile.mkdtemp(prefix='hatsim-') if made else str(directory)
    hat = start(directory, **options)
    try:
        yield hat
    finally:
        hat.close()
        stop(directory)
        if made:
            shutil.rmtree(directory, ignore_errors=True)
