# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""minicluster-cm4-telemetry: the hat exporter, fan-curve daemon and status page in one service.

    minicluster-cm4-telemetry --config /etc/minicluster-cm4/telemetry.json
    minicluster-cm4-telemetry --check-config FILE      (exit 0, or one line on stderr and exit 2)

HTTP: / (status page), /metrics (Prometheus), /api/status and /api/history (JSON), /healthz.
A hat whose console or bus does not answer does not stop the service: it reports the fault and
recovers when the device answers. Only a bad configuration stops it (exit 2, which the unit does
not restart).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from prometheus_client import CollectorRegistry, CONTENT_TYPE_LATEST, ProcessCollector, generate_latest
    from prometheus_client import write_to_textfile
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    HAS_PROMETHEUS_CLIENT = True
except ImportError:  # pragma: no cover - depends on the controller
    HAS_PROMETHEUS_CLIENT = False

from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry import config as configuration
from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry import influx, page
from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry.metrics import HatCollector
from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry.monitor import HatMonitor

log = logging.getLogger('minicluster.telemetry')
EXIT_CONFIG = 2


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Service(object):

    def __init__(self, cfg):
        self.cfg = cfg
        self.writer = influx.InfluxWriter(cfg['influxdb']) if cfg['influxdb'] else None
        self.monitors = [HatMonitor(h, cfg['lock_dir'], cfg['state_dir'], cfg['history_seconds'],
                                    on_sample=self.sampled) for h in cfg['hats']]
        self.requests = {}
        self.requests_lock = threading.Lock()
        collector = HatCollector(self.monitors, self.service_metrics)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)
        # node_exporter has its own process_* series: the textfile carries only the hats'.
        self.textfile_registry = CollectorRegistry(auto_describe=False)
        self.textfile_registry.register(HatCollector(self.monitors))
        self.textfile_lock = threading.Lock()
        self.threads = []
        self.httpd = None

    def sampled(self, snapshot):
        if self.writer is not None:
            self.writer.put(influx.points(snapshot))
        if self.cfg['textfile']:
            with self.textfile_lock:
                try:
                    write_to_textfile(self.cfg['textfile'], self.textfile_registry)  # temporary file, then rename
                except (IOError, OSError) as exc:
                    log.warning('cannot write the textfile %s: %s', self.cfg['textfile'], exc)

    def count(self, path):
        with self.requests_lock:
            self.requests[path] = self.requests.get(path, 0) + 1

    def service_metrics(self):
        requests = CounterMetricFamily('minicluster_exporter_http_requests', 'HTTP requests served, by path.',
                                       labels=['path'])
        with self.requests_lock:
            for path, n in sorted(self.requests.items()):
                requests.add_metric([path], n)
        yield requests
        if self.writer is not None:
            yield CounterMetricFamily('minicluster_influxdb_points_written', 'Points InfluxDB accepted.',
                                      value=self.writer.written)
            yield CounterMetricFamily('minicluster_influxdb_points_dropped', 'Points dropped: queue full, or '
                                      'InfluxDB down or refusing them.', value=self.writer.dropped)
            yield GaugeMetricFamily('minicluster_influxdb_queue_points', 'Points waiting to be written.',
                                    value=self.writer.queued())
            yield GaugeMetricFamily('minicluster_influxdb_up', '1 when the last write to InfluxDB succeeded.',
                                    value=0.0 if self.writer.last_error else 1.0)

    def handler(self):
        service = self

        class Handler(BaseHTTPRequestHandler):
            server_version = 'minicluster-cm4-telemetry'

            def log_message(self, *args):  # pylint: disable=arguments-differ
                pass

            def _send(self, code, body, ctype):
                data = body if isinstance(body, bytes) else body.encode('utf-8')
                self.send_response(code)
                self.send_header('Content-Type', ctype)
                self.send_header('Content-Length', str(len(data)))
                self.send_header('Cache-Control', 'no-store')
                self.end_headers()
                if self.command != 'HEAD':
                    self.wfile.write(data)

            def do_GET(self):  # pylint: disable=invalid-name
                path = self.path.split('?', 1)[0]
                routes = {
                    '/': lambda: (page.page(min(m.cfg['sample_interval'] for m in service.monitors)),
                                  'text/html; charset=utf-8'),
                    '/metrics': lambda: (generate_latest(service.registry), CONTENT_TYPE_LATEST),
                    '/api/status': lambda: (page.status_json(service.monitors), 'application/json'),
                    '/api/history': lambda: (page.history_json(service.monitors), 'application/json'),
                    '/healthz': lambda: ('ok\n', 'text/plain'),
                }
                if path not in routes:
                    self._send(404, 'not found: try / or /metrics\n', 'text/plain')
                    return
                service.count(path)
                body, ctype = routes[path]()
                self._send(200, body, ctype)

            do_HEAD = do_GET

        return Handler

    def start(self):
        self.httpd = Server((self.cfg['listen_address'], self.cfg['listen_port']), self.handler())
        targets = [(self.httpd.serve_forever, 'http')]
        for mon in self.monitors:
            targets += [(mon.console_loop, 'console-%s' % mon.name), (mon.i2c_loop, 'i2c-%s' % mon.name)]
        if self.writer is not None:
            targets.append((self.writer.run, 'influxdb'))
        for target, name in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)
        log.info('serving http://%s:%d/ for hats %s', self.cfg['listen_address'], self.httpd.server_address[1],
                 ', '.join(m.name for m in self.monitors))

    def stop(self):
        for mon in self.monitors:
            mon.stop_event.set()
        if self.writer is not None:
            self.writer.stop_event.set()
            self.writer.wake.set()
        for thread in self.threads[1:]:
            thread.join(15)
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


def main(argv=None):
    parser = argparse.ArgumentParser(prog='minicluster-cm4-telemetry', description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--config', default='/etc/minicluster-cm4/telemetry.json')
    parser.add_argument('--check-config', metavar='FILE', help='check FILE and exit')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s', stream=sys.stderr)
    try:
        cfg = configuration.load(args.check_config or args.config)
    except configuration.ConfigError as exc:
        sys.stderr.write('minicluster-cm4-telemetry: %s\n' % exc)
        return EXIT_CONFIG
    if args.check_config:
        return 0
    if not HAS_PROMETHEUS_CLIENT:
        sys.stderr.write('minicluster-cm4-telemetry: the prometheus_client Python library is missing: install '
                         'python3-prometheus-client\n')
        return EXIT_CONFIG
    service = Service(cfg)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    try:
        service.start()
    except (OSError, IOError) as exc:
        sys.stderr.write('minicluster-cm4-telemetry: cannot listen on %s:%d: %s\n'
                         % (cfg['listen_address'], cfg['listen_port'], exc))
        return 1
    while not done.wait(3600):
        pass
    log.info('stopping')
    service.stop()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
