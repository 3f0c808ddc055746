# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tie the simulated hat (tests/hatsim) to the test nodes (tests/fleet), as the board ties a slot's
power to its CM4:

* a test node whose OS powers off (its nspawn process ends) while its slot is powered is *halted*
  on the hat (control op `halt`): its current drops to the halted level;
* a slot whose power goes off while its test node still runs kills that node at once, as a power
  cut kills a running CM4; this is logged as `cut-while-running`, which a graceful shutdown must
  never cause;
* a slot powered on again boots its test node.

    python -m doubles.hatlink start --hat HATDIR --fleet FLEETDIR --log FILE   # daemon, pid in FILE.pid
    python -m doubles.hatlink stop --log FILE

Events go to FILE, one JSON object a line: {time, node, event} with event halted, cut-while-running
or booted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from fleet import nodes as fleet_nodes
from hatsim.client import Control

POLL_S = 0.2


def _alive(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return b'systemd-nspawn' in handle.read()
    except OSError:
        return False


def _event(log, node, event, **extra):
    entry = dict(extra, time=time.time(), node=node, event=event)
    with open(log, 'a') as handle:
        handle.write(json.dumps(entry, sort_keys=True) + '\n')


def run(hat_dir, fleet_dir, log):
    control = Control(hat_dir)
    state = fleet_nodes.load(fleet_dir)
    by_number = dict((n['hat_node'], n) for n in state['nodes'])
    pids = dict((n['hat_node'], state['pids'][n['name']]) for n in state['nodes'])
    was_alive = dict((number, _alive(pid)) for number, pid in pids.items())
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        hat = control.state()['nodes']
        for number, node in by_number.items():
            slot = hat[str(number)]
            alive = _alive(pids[number])
            if alive and not slot['powered']:
                os.killpg(pids[number], signal.SIGKILL)
                alive = False
                _event(log, number, 'cut-while-running')
            elif was_alive[number] and not alive and slot['powered']:
                control.request('halt', node=number)
                _event(log, number, 'halted')
            elif not alive and slot['powered'] and slot['mode'] in ('booting', 'running', 'no_boot_media'):
                pids[number] = fleet_nodes._start(node)  # pylint: disable=protected-access
                alive = True
                _event(log, number, 'booted', pid=pids[number])
            was_alive[number] = alive
        time.sleep(POLL_S)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m doubles.hatlink')
    parser.add_argument('command', choices=('start', 'run', 'stop'))
    parser.add_argument('--hat')
    parser.add_argument('--fleet')
    parser.add_argument('--log', required=True)
    args = parser.parse_args(argv)
    pidfile = Path(args.log + '.pid')
    if args.command == 'stop':
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
            pidfile.unlink()
        return 0
    if args.command == 'run':
        run(args.hat, args.fleet, args.log)
        return 0
    pid = os.fork()
    if pid:
        pidfile.write_text(str(pid))
        return 0
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    errors = os.open(args.log + '.err', os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(errors, 2)
    try:
        run(args.hat, args.fleet, args.log)
    finally:
        os._exit(0)  # pylint: disable=protected-access


if __name__ == '__main__':
    sys.exit(main())
