# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry import influx


def test_line_protocol_escapes_and_types():
    text = influx.line('cm4 node', {'hat': 'a b,c', 'node': '1'}, {'t': 41.5, 'on': True, 'n': 3, 'x': None,
                                                                   'r': 'fail"safe'}, 1700000000.7)
    assert text == 'cm4\\ node,hat=a\\ b\\,c,node=1 n=3i,on=true,r="fail\\"safe",t=41.5 1700000000'
    assert influx.line('m', {}, {'a': None, 'b': float('nan')}, 1) is None


def test_endpoints_of_both_versions():
    url, headers = influx.endpoint({'version': 1, 'url': 'http://h:8086', 'database': 'cm4', 'username': 'u',
                                    'password': 'p'})
    assert url == 'http://h:8086/write?db=cm4&precision=s'
    assert headers['Authorization'] == 'Basic dTpw'
    url, headers = influx.endpoint({'version': 2, 'url': 'http://h:8086', 'org': 'o', 'bucket': 'b', 'token': 'T'})
    assert url == 'http://h:8086/api/v2/write?bucket=b&org=o&precision=s'
    assert headers['Authorization'] == 'Token T'


CFG = {'version': 1, 'url': 'http://h:8086', 'database': 'cm4', 'batch_size': 2, 'max_queue': 3, 'flush_interval': 1,
       'timeout': 1}


class Poster(object):
    """Stands in for the HTTP POST: replies from a script (status, or an exception), then 204."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.bodies = []

    def __call__(self, url, body, headers, timeout):
        reply = self.replies.pop(0) if self.replies else 204
        if isinstance(reply, Exception):
            raise reply  # pylint: disable=raising-bad-type
        if reply == 204:
            self.bodies.append(body.decode())
        return reply, '{"error":"unable to parse"}' if reply == 400 else ''


def writer(replies):
    w = influx.InfluxWriter(CFG, post=Poster(replies))
    w.stop_event.wait = lambda delay: False   # no pause between retries in tests
    return w


def test_full_queue_drops_the_oldest_and_counts():
    w = writer([])
    w.put(['a 1', 'b 2', 'c 3', 'd 4'])
    assert w.queued() == 3 and w.dropped == 1
    assert w.flush() is True
    assert w.post.bodies == ['b 2\nc 3\n', 'd 4\n'] and w.written == 3


def test_a_batch_is_retried_then_dropped_and_counted():
    w = writer([ConnectionRefusedError(111, 'Connection refused'), 204])
    w.put(['a 1'])
    assert w.flush() is True and w.written == 1 and w.failures == 1 and w.last_error is None
    w = writer([503, OSError('timed out'), 500])
    w.put(['a 1', 'b 2'])
    assert w.flush() is False and w.dropped == 2 and w.failures == 3 and w.last_error.startswith('HTTP 500')


def test_a_rejected_batch_is_not_retried():
    w = writer([400])
    w.put(['a 1'])
    assert w.flush() is False and w.failures == 1 and w.dropped == 1
    assert w.last_error == 'HTTP 400 from http://h:8086: {"error":"unable to parse"}'


def test_post_to_a_closed_port_is_an_oserror():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    w = influx.InfluxWriter(dict(CFG, url='http://127.0.0.1:%d' % port))
    w.stop_event.wait = lambda delay: False
    w.put(['a 1'])
    assert w.flush() is False and w.dropped == 1 and 'refused' in w.last_error.lower()
