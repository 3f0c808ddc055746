# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""`make test`: every test suite, several at a time, each a make target with a log of its own.

Side by side they keep both cores busy through their waits (test nodes booting, the simulated hat's
delays, SSH): about 24 min on two cores against 35-40 one after the other. Suites that share state
are in one lane and run one after the other: sanity and units share the ansible-test copy. Test
nodes of different suites never meet: each suite has its own name prefix and subnet.

Prints a line when a suite starts and ends, the tail of every log, and the whole log of a failure.
Exits 1 when any suite failed.
"""

import argparse
import os
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGS = os.path.join(REPO, '.build', 'test-logs')

# Lanes, longest first so the slowest start at once; the targets of a lane run in order, at the
# lane's niceness. The k3s scenario is the longest and decides when the run ends: it goes first; the
# short suites fill the gaps the long ones leave.
LANES = (
    (0, ('molecule-k3s',)),
    (2, ('molecule-fleet',)),
    (2, ('pytest-system',)),
    (10, ('sanity', 'units')),
    (10, ('molecule-hat', 'molecule-reflash', 'molecule-default')),
    (10, ('pytest-netflash', 'lint')),
)
TAIL = 4


def fmt(seconds):
    return '%dm%02ds' % divmod(int(round(seconds)), 60)


class Runner(object):

    def __init__(self, jobs, make):
        self.slots = threading.Semaphore(jobs)
        self.make = make
        self.lock = threading.Lock()
        self.results = []
        self.cpu = 0.0
        self.started = time.monotonic()

    def say(self, text):
        with self.lock:
            print('[%s] %s' % (fmt(time.monotonic() - self.started), text), flush=True)

    def run(self, target, nice=0):
        log = os.path.join(LOGS, target + '.log')
        with self.slots:
            self.say('%s: started (log %s)' % (target, os.path.relpath(log, REPO)))
            begin = time.monotonic()
            with open(log, 'wb') as out:
                proc = subprocess.Popen(['nice', '-n', str(nice), self.make, '--no-print-directory', target], cwd=REPO,
                                        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                # wait4: the CPU time of the suite and every process it waited for. Popen is told
                # the exit status, which it would otherwise wait for again.
                status, usage = os.wait4(proc.pid, 0)[1:]
                proc.returncode = rc = os.waitstatus_to_exitcode(status)
            took = time.monotonic() - begin
        cpu = usage.ru_utime + usage.ru_stime
        self.say('%s: %s in %s (CPU %s)' % (target, 'passed' if rc == 0 else 'FAILED (exit %d)' % rc, fmt(took), fmt(cpu)))
        with self.lock:
            self.results.append((target, rc, took, log))
            self.cpu += cpu

    def lane(self, targets, nice=0):
        for target in targets:
            self.run(target, nice)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=4, help='suites at once (default 4)')
    parser.add_argument('--only', default='', help='comma-separated targets to run (default: all)')
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error('--jobs must be 1 or more')
    everything = [t for dummy, lane in LANES for t in lane]
    only = [t for t in args.only.split(',') if t]
    unknown = sorted(set(only) - set(everything))
    if unknown:
        parser.error('unknown target(s) %s; known: %s' % (', '.join(unknown), ', '.join(everything)))
    lanes = [(tuple(t for t in lane if not only or t in only), nice) for nice, lane in LANES]
    lanes = [(lane, nice) for lane, nice in lanes if lane]

    os.makedirs(LOGS, exist_ok=True)
    runner = Runner(args.jobs, os.environ.get('MAKE', 'make'))
    threads = [threading.Thread(target=runner.lane, args=lane) for lane in lanes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    failed = [r for r in runner.results if r[1] != 0]
    for target, rc, took, log in runner.results:
        if rc == 0:
            with open(log, 'rb') as f:
                lines = f.read().decode('utf-8', 'replace').rstrip().splitlines()[-TAIL:]
            print('\n==== %s: passed in %s; last lines of %s' % (target, fmt(took), os.path.relpath(log, REPO)))
            print('\n'.join(lines))
    for target, rc, took, log in failed:
        print('\n==== %s: FAILED (exit %d) in %s; its log %s follows' % (target, rc, fmt(took), os.path.relpath(log, REPO)))
        with open(log, 'rb') as f:
            sys.stdout.write(f.read().decode('utf-8', 'replace'))
    print('\n%d suites in %s (CPU %s): %s' % (
        len(runner.results), fmt(time.monotonic() - runner.started), fmt(runner.cpu),
        'all passed' if not failed else 'FAILED: ' + ', '.join(r[0] for r in failed)))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
