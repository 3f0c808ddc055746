# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A timer thread: everything that happens 'later' on the hat (boot logs, disks, physics ticks)."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time

LOG = logging.getLogger('hatsim')


class Timer(object):
    """Handle of one scheduled call; cancel() makes it a no-op."""

    __slots__ = ('when', 'func', 'args', 'cancelled')

    def __init__(self, when, func, args):
        self.when = when
        self.func = func
        self.args = args
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


class Scheduler(object):
    """Runs callables at monotonic deadlines on one thread. Callbacks must not block for long."""

    def __init__(self):
        self._heap = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name='scheduler', daemon=True)

    def start(self):
        self._thread.start()

    def call_later(self, delay, func, *args):
        timer = Timer(time.monotonic() + max(0.0, delay), func, args)
        with self._cond:
            heapq.heappush(self._heap, (timer.when, next(self._order), timer))
            self._cond.notify()
        return timer

    def every(self, period, func):
        """Call func() every period seconds until stop (drift-free)."""
        state = {'next': time.monotonic() + period}

        def tick():
            try:
                func()
            finally:
                state['next'] += period
                now = time.monotonic()
                if state['next'] < now:
                    # Fell behind (a stalled machine): skip missed ticks instead of bursting.
                    state['next'] = now + period
                self.call_later(state['next'] - now, tick)
        return self.call_later(period, tick)

    def stop(self):
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5)

    def _run(self):
        while True:
            with self._cond:
                while not self._stopping:
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stopping:
                    return
                dummy, dummy2, timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            try:
                timer.func(*timer.args)
            except Exception:  # pylint: disable=broad-except
                # One faulty event must not stop the hat's clock.
                LOG.exception('scheduled call %r failed', timer.func)
