# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Unix stream socket server speaking one JSON object per line each way, a thread per client."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading

LOG = logging.getLogger('hatsim')
MAX_LINE = 1 << 20


class LineServer(object):
    """handler(request: dict) -> reply dict. Bad input gets {"ok": false, "error": ...}."""

    def __init__(self, path, handler, name):
        self.path = path
        self.handler = handler
        self.name = name
        if os.path.lexists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(64)
        self._clients = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._accept_loop, name=name, daemon=True)

    def start(self):
        self._thread.start()

    def _accept_loop(self):
        while not self._stopping:
            try:
                conn, dummy = self.sock.accept()
            except OSError:
                if self._stopping:
                    return
                continue
            with self._lock:
                if self._stopping:
                    conn.close()
                    return
                self._clients.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name=self.name + '-client', daemon=True).start()

    def _serve(self, conn):
        buf = b''
        try:
            while not self._stopping:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b'\n' in buf:
                    line, buf = buf.split(b'\n', 1)
                    if line.strip():
                        self._reply(conn, self._handle(line))
                if len(buf) > MAX_LINE:
                    self._reply(conn, {'ok': False, 'error': 'request line longer than %d bytes' % MAX_LINE})
                    return
        finally:
            with self._lock:
                self._clients.discard(conn)
            conn.close()

    def _handle(self, line):
        try:
            request = json.loads(line.decode('utf-8'))
        except (ValueError, UnicodeDecodeError) as exc:
            return {'ok': False, 'error': 'request is not JSON: %s' % exc}
        if not isinstance(request, dict):
            return {'ok': False, 'error': 'request must be a JSON object'}
        try:
            return self.handler(request)
        except ValueError as exc:
            return {'ok': False, 'error': str(exc)}
        except Exception as exc:  # pylint: disable=broad-except
            # A bug in one request must not take the bus down for everyone.
            LOG.exception('%s: request %r failed', self.name, request)
            return {'ok': False, 'error': 'internal error: %s' % exc}

    @staticmethod
    def _reply(conn, reply):
        try:
            conn.sendall(json.dumps(reply, separators=(',', ':')).encode('utf-8') + b'\n')
        except OSError:
            pass  # the client went away; its thread ends on the next recv

    def stop(self):
        self._stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        except OSError:
            pass
        self.sock.close()
        with self._lock:
            clients = list(self._clients)
        for conn in clients:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        try:
            os.unlink(self.path)
        except OSError:
            pass
