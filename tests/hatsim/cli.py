# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""python -m hatsim start|stop|run|status --dir DIR [options]"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

from hatsim import fake_rpiboot
from hatsim.options import add_arguments, options_from_args

PID_FILE = 'hatsim.pid'
LOG_FILE = 'hatsim.log'
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 3.0
# Everything `run` creates in DIR that must not outlive it.
RUNTIME_FILES = ('rp2040', 'rp2040-uart', 'console1', 'console2', 'console3', 'console4', 'i2c-1.sock',
                 'i2c-hub.sock', 'control.sock', 'gpio.sock', 'rpiboot', 'rp2040-bootrom.img', PID_FILE)


def _pid_alive(pid):
    """True if pid runs and is not a zombie."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != 'Z'


def _is_ours(pid, directory):
    """The pid is a `hatsim run` for this directory (not a recycled pid)."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            argv = [os.fsdecode(a) for a in f.read().split(b'\0')]
        cwd = os.readlink('/proc/%d/cwd' % pid)
    except OSError:
        return False
    if 'hatsim' not in argv or 'run' not in argv or '--dir' not in argv[:-1]:
        return False
    given = argv[argv.index('--dir') + 1]
    # `run` may have been given a relative --dir: resolve it where that process runs.
    return os.path.realpath(os.path.join(cwd, given)) == os.path.realpath(directory)


def read_pid(directory):
    try:
        with open(os.path.join(directory, PID_FILE)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def running_pid(directory):
    pid = read_pid(directory)
    if pid and _pid_alive(pid) and _is_ours(pid, directory):
        return pid
    return None


def cleanup(directory):
    for name in RUNTIME_FILES:
        path = os.path.join(directory, name)
        if os.path.lexists(path):
            os.unlink(path)
    for name in ('sys', 'dev', 'usbboot', '.hatsim-staging'):
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)


# -- run ------------------------------------------------------------------------------------------
def cmd_run(args):
    from hatsim.hat import Hat  # heavy imports only where needed
    directory = os.path.abspath(args.dir)
    os.makedirs(directory, exist_ok=True)
    ready_fd = args.ready_fd
    handler = logging.FileHandler(os.path.join(directory, LOG_FILE))
    handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(threadName)s: %(message)s'))
    log = logging.getLogger('hatsim')
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    def fail(message):
        log.error('%s', message)
        if ready_fd is not None:
            os.write(ready_fd, ('error: %s\n' % message).encode('utf-8'))
            os.close(ready_fd)
        else:
            sys.stderr.write('hatsim: %s\n' % message)
        return 1

    if running_pid(directory):
        return fail('a simulator already runs in %s (pid %d)' % (directory, running_pid(directory)))
    try:
        options = options_from_args(args)
    except ValueError as exc:
        return fail(str(exc))
    cleanup(directory)
    stop_event = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop_event.set())
    signal.signal(signal.SIGINT, lambda *a: stop_event.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        hat = Hat(directory, options)
        hat.start()
        fake_rpiboot.write_script(os.path.join(directory, 'rpiboot'), directory)
    except (OSError, ValueError) as exc:
        cleanup(directory)
        return fail('cannot start: %s' % exc)
    tmp = os.path.join(directory, PID_FILE + '.tmp')
    with open(tmp, 'w') as f:
        f.write('%d\n' % os.getpid())
    os.replace(tmp, os.path.join(directory, PID_FILE))
    log.info('hatsim running in %s, pid %d, options %s', directory, os.getpid(), options.as_dict())
    if ready_fd is not None:
        os.write(ready_fd, b'ready\n')
        os.close(ready_fd)
    else:
        sys.stdout.write(summary(directory, os.getpid(), options))
        sys.stdout.flush()
    while not stop_event.wait(3600):
        pass
    log.info('stopping')
    hat.stop()
    cleanup(directory)
    log.info('stopped')
    return 0


def summary(directory, pid, options):
    def rel(name):
        return os.path.join(directory, name)
    lines = ['hatsim running in %s (pid %d)' % (directory, pid)]
    for name in ('rp2040', 'rp2040-uart', 'console1', 'console2', 'console3', 'console4'):
        target = os.readlink(rel(name)) if os.path.islink(rel(name)) else 'absent (no USB console behind the hub)'
        lines.append('  %-9s %s -> %s' % (name, rel(name), target))
    jumpers = 'fitted' if options.jumpers else 'not fitted'
    lines.append('  i2c       unix:%s, unix:%s (jumpers %s)' % (rel('i2c-1.sock'), rel('i2c-hub.sock'), jumpers))
    lines.append('  control   %s' % rel('control.sock'))
    lines.append('  gpio      unix:%s (RP2040 RUN 25, BOOTSEL 21)' % rel('gpio.sock'))
    lines.append('  rpiboot   %s' % rel('rpiboot'))
    slots = ['%d:%s.%d%s' % (n, options.hub_path, n + 1, ' (empty)' if n in options.empty_slots else '') for n in range(1, 5)]
    lines.append('  usb hub   %s (RP2040 on %s.1)' % (options.hub_path, options.hub_path))
    lines.append('  nodes     %s' % ', '.join(slots))
    return '\n'.join(lines) + '\n'


# -- start / stop -----------------------------------------------------------------------------------
def _wait_ready(read_fd, child):
    """What the child wrote on its readiness pipe: b'ready' or b'error: ...' (b'' if it died mute)."""
    answer = b''
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while b'\n' not in answer and time.monotonic() < deadline:
            readable, dummy, dummy2 = select.select([read_fd], [], [], 0.1)
            if readable:
                chunk = os.read(read_fd, 4096)
                if not chunk:
                    break  # the child closed the pipe (or died)
                answer += chunk
            elif child.poll() is not None:
                break
    finally:
        os.close(read_fd)
    return answer


def cmd_start(args):
    directory = os.path.abspath(args.dir)
    os.makedirs(directory, exist_ok=True)
    pid = running_pid(directory)
    if pid:
        sys.stderr.write('hatsim: already running in %s (pid %d)\n' % (directory, pid))
        return 1
    try:
        options = options_from_args(args)
    except ValueError as exc:
        sys.stderr.write('hatsim: %s\n' % exc)
        return 2
    if options.eeprom_image:
        options.eeprom_image = os.path.abspath(options.eeprom_image)
    read_fd, write_fd = os.pipe()
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([package_parent] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    env['PYTHONDONTWRITEBYTECODE'] = '1'
    argv = [sys.executable, '-m', 'hatsim', 'run', '--dir', directory, '--ready-fd', str(write_fd)] + options.to_argv()
    with open(os.path.join(directory, LOG_FILE), 'ab') as log:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(write_fd,),
                                 start_new_session=True, cwd=directory, env=env)
    os.close(write_fd)
    answer = _wait_ready(read_fd, child)
    if answer.startswith(b'ready'):
        sys.stdout.write(summary(directory, child.pid, options))
        return 0
    if child.poll() is None:
        child.kill()
        child.wait()
    message = answer.decode('utf-8', errors='replace').strip() or 'no sign of life within %ds' % READY_TIMEOUT_S
    sys.stderr.write('hatsim: start failed: %s (see %s)\n' % (message, os.path.join(directory, LOG_FILE)))
    cleanup(directory)
    return 1


def cmd_stop(args):
    # Never hang a caller: if anything below blocks, say where and give up.
    faulthandler.dump_traceback_later(STOP_TIMEOUT_S * 2 + 10, exit=True)
    directory = os.path.abspath(args.dir)
    pid = read_pid(directory)
    if not pid or not _pid_alive(pid) or not _is_ours(pid, directory):
        cleanup(directory)
        sys.stdout.write('hatsim: not running in %s\n' % directory)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    cleanup(directory)
    if _pid_alive(pid):
        sys.stderr.write('hatsim: pid %d did not exit\n' % pid)
        return 1
    sys.stdout.write('hatsim: stopped (pid %d)\n' % pid)
    return 0


def cmd_status(args):
    directory = os.path.abspath(args.dir)
    pid = running_pid(directory)
    if pid:
        sys.stdout.write('hatsim: running in %s (pid %d)\n' % (directory, pid))
        return 0
    sys.stdout.write('hatsim: not running in %s\n' % directory)
    return 3


def build_parser():
    parser = argparse.ArgumentParser(prog='python -m hatsim', description='Simulator of the CM4 cluster hat')
    sub = parser.add_subparsers(dest='command')
    sub.required = True
    for name, helptext in (('start', 'start in the background and return when ready'),
                           ('run', 'run in the foreground until SIGTERM or Ctrl-C')):
        p = sub.add_parser(name, help=helptext)
        add_arguments(p)
        if name == 'run':
            p.add_argument('--ready-fd', type=int, default=None, help=argparse.SUPPRESS)
    for name, helptext in (('stop', 'stop the simulator of DIR'), ('status', 'tell whether it runs')):
        p = sub.add_parser(name, help=helptext)
        p.add_argument('--dir', required=True)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return {'start': cmd_start, 'run': cmd_run, 'stop': cmd_stop, 'status': cmd_status}[args.command](args)
