# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Telemetry benchmark against the simulated hat, one run, ratios printed.

    python3 tools/telemetry_bench.py [--reads 20]

    ours      GET /api/status from the running service: every node's power, current and
              temperature, the input and the fan, with their ages
    hat_info  what a user runs otherwise: the hat_info module (here executed directly, without
              ansible-playbook's own start-up, which would only add to it)
Then how long the service keeps the hat console locked: a competitor (what node_power does) takes
the lock over and over while the service samples every 0.5 s, and the longest wait is reported.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests'))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'system'))
sys.path.insert(0, os.path.join(ROOT, '.build', 'collections'))

from hatsim.testing import running_hat  # noqa: E402
from moduletest import run_module  # noqa: E402
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.lock import DeviceLock, hat_lock_path  # noqa: E402

DAEMON = 'ansible_collections.minicluster.cm4.plugins.module_utils.telemetry.daemon'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--reads', type=int, default=20)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix='telemetry-bench-')
    # The service and the module run as their own processes, finding the collection the way tests do.
    os.environ['PYTHONPATH'] = os.pathsep.join([os.path.join(ROOT, 'tests'), os.path.join(ROOT, '.build', 'collections')])
    env = dict(os.environ)
    with running_hat(os.path.join(work, 'hat')) as hat:
        state = hat.state()
        addresses = dict((n, s['address']) for n, s in state['tmp117'].items())
        port = free_port()
        lock_dir = os.path.join(work, 'lock')
        config = {'listen_address': '127.0.0.1', 'listen_port': port, 'lock_dir': lock_dir,
                  'state_dir': os.path.join(work, 'state'),
                  'hats': [{'name': 'bench', 'port': hat.rp2040, 'i2c_bus': hat.i2c_bus, 'shunt_ohm': state['options']['shunt_ohms'],
                            'tmp117_addresses': addresses, 'sample_interval': 0.5}]}
        with open(os.path.join(work, 'config.json'), 'w') as f:
            json.dump(config, f)
        service = subprocess.Popen([sys.executable, '-m', DAEMON, '--config', os.path.join(work, 'config.json')], env=env,
                                   stderr=subprocess.DEVNULL)
        try:
            url = 'http://127.0.0.1:%d/api/status' % port
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if json.loads(urllib.request.urlopen(url, timeout=5).read())['hats'][0]['console']['age_s'] is not None:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            started = time.monotonic()
            for dummy in range(args.reads):
                json.loads(urllib.request.urlopen(url, timeout=5).read())
            ours = (time.monotonic() - started) / args.reads
            module_args = dict(port=hat.rp2040, i2c_bus=hat.i2c_bus, lock_dir=lock_dir, state_dir=os.path.join(work, 'state'))
            reads = max(3, args.reads // 4)
            started = time.monotonic()
            for dummy in range(reads):
                result = run_module('hat_info', module_args, work)
                assert not result.get('failed'), result
            baseline = (time.monotonic() - started) / reads

            lock = DeviceLock(hat_lock_path('hat0', lock_dir), timeout=10, poll=0.001)
            waits = []
            end = time.monotonic() + 10
            while time.monotonic() < end:
                t0 = time.monotonic()
                with lock:
                    waits.append(time.monotonic() - t0)
                time.sleep(0.01)
        finally:
            service.terminate()
            service.wait(30)
    shutil.rmtree(work, ignore_errors=True)
    print('telemetry-bench read: ours %.1f ms, hat_info %.0f ms per full reading of the hat' % (ours * 1000, baseline * 1000))
    print('telemetry-bench console lock: %d acquisitions by a competitor over 10 s, longest wait %.1f ms'
          % (len(waits), max(waits) * 1000))
    print('telemetry-bench hat_info/ours=%.0f lock-wait-max-ms=%.1f' % (baseline / ours, max(waits) * 1000))


if __name__ == '__main__':
    main()
