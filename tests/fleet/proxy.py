# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small forwarding HTTP proxy (GET and HEAD, absolute URIs, no CONNECT) for apt in the nodes.

The nodes have no route out; the machine reaches the Debian archive. apt in a node is pointed at
this proxy on the bridge address (Acquire::http::Proxy), exactly as a node behind an apt proxy on
a real network. Only hosts named on the command line are forwarded to.

    python -m fleet.proxy --listen 10.0.0.1:3142 --allow deb.debian.org
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import socketserver
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te',
              'trailers', 'transfer-encoding', 'upgrade', 'proxy-connection'}


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    allowed: frozenset = frozenset()

    def _forward(self):
        url = urlsplit(self.path)
        if url.scheme != 'http' or url.hostname not in self.allowed:
            self.send_error(403, f'not forwarded: {url.scheme}://{url.hostname}')
            return
        upstream = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        path = url.path + ('?' + url.query if url.query else '')
        try:
            upstream.request(self.command, path or '/', headers=headers)
            resp = upstream.getresponse()
        except OSError as exc:
            self.send_error(502, f'upstream {url.hostname}: {exc}')
            return
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        length = resp.getheader('Content-Length')
        if self.command == 'HEAD' or length is not None:
            self.end_headers()
            if self.command != 'HEAD':
                shutil.copyfileobj(resp, self.wfile, 1 << 16)
        else:
            # Unknown length: close the connection to mark the end of the body.
            self.send_header('Connection', 'close')
            self.close_connection = True
            self.end_headers()
            shutil.copyfileobj(resp, self.wfile, 1 << 16)
        upstream.close()

    do_GET = _forward
    do_HEAD = _forward

    def log_message(self, fmt, *args):
        sys.stderr.write('%s %s\n' % (self.address_string(), fmt % args))


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m fleet.proxy')
    parser.add_argument('--listen', required=True, help='ADDRESS:PORT')
    parser.add_argument('--allow', action='append', required=True, help='upstream host name')
    parser.add_argument('--tag', help='the fleet prefix, so that its clean-up finds this process')
    args = parser.parse_args(argv)
    host, _sep, port = args.listen.rpartition(':')
    Handler.allowed = frozenset(args.allow)
    socketserver.TCPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == '__main__':
    main()
