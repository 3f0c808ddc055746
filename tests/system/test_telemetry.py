# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The telemetry service against simulated hats, Debian's Prometheus, InfluxDB and Chromium.

One service runs for the whole module with two hats: `alpha`, simulated from the start, and
`beta`, whose console and bus do not exist when the service starts (the simulator comes up later,
and the service must pick it up). Faults are injected through the simulator's control socket.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.board import calibration
from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry.fanowner import owner_path
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.lock import DeviceLock, hat_lock_path
from hatsim.testing import start as start_hat, stop as stop_hat
from moduletest import REPO, run_module

DASHBOARD = os.path.join(REPO, 'roles', 'telemetry', 'files', 'dashboards', 'minicluster-cm4-hat.json')
DAEMON = 'ansible_collections.minicluster.cm4.plugins.module_utils.telemetry.daemon'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode('utf-8')


def wait_for(what, predicate, timeout=60, interval=0.2):
    """Poll until predicate() returns something truthy; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError('gave up waiting for %s (last: %r)' % (what, last))


SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def parse_metrics(text):
    """{(name, frozenset(labels)): value} of an exposition."""
    out = {}
    for line in text.splitlines():
        found = SAMPLE_RE.match(line)
        if not found:
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ''))
        out[(found.group(1), labels)] = float(found.group(3))
    return out


def metric(metrics, name, **labels):
    return metrics.get((name, frozenset((k, str(v)) for k, v in labels.items())))


def tmp117_addresses(state):
    return dict((n, item['address']) for n, item in state['tmp117'].items())


class Stack(object):
    """The processes of the module: simulators, the service, Prometheus, InfluxDB."""

    def __init__(self, root):
        self.root = root
        self.procs = {}
        self.alpha = None
        self.beta_dir = os.path.join(root, 'beta')
        self.beta = None
        self.port = free_port()
        self.url = 'http://127.0.0.1:%d' % self.port
        self.lock_dir = os.path.join(root, 'lock')
        self.state_dir = os.path.join(root, 'state')

    def spawn(self, name, argv, **kwargs):
        log = open(os.path.join(self.root, name + '.log'), 'w')
        self.procs[name] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **kwargs), log)
        return self.procs[name][0]

    def log(self, name):
        with open(os.path.join(self.root, name + '.log')) as f:
            return f.read()

    def stop(self, name):
        proc, log = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        return proc.returncode

    def metrics(self):
        return parse_metrics(get(self.url + '/metrics'))

    def status(self):
        return dict((h['hat'], h) for h in json.loads(get(self.url + '/api/status'))['hats'])


def start_influxdb(stack):
    influxd = shutil.which('influxd')
    if influxd is None:
        return None
    port, rpc = free_port(), free_port()
    data = os.path.join(stack.root, 'influxdb')
    conf = os.path.join(stack.root, 'influxdb.conf')
    with open(conf, 'w') as f:
        f.write('reporting-disabled = true\nbind-address = "127.0.0.1:%d"\n[meta]\n  dir = "%s/meta"\n'
                '[data]\n  dir = "%s/data"\n  wal-dir = "%s/wal"\n  query-log-enabled = false\n'
                '[http]\n  bind-address = "127.0.0.1:%d"\n  log-enabled = false\n'
                '[monitor]\n  store-enabled = false\n' % (rpc, data, data, data, port))
    stack.spawn('influxd', [influxd, '-config', conf])
    url = 'http://127.0.0.1:%d' % port
    wait_for('InfluxDB to answer', lambda: urllib.request.urlopen(url + '/ping', timeout=2).status == 204)
    body = urllib.parse.urlencode({'q': 'CREATE DATABASE cm4'}).encode()
    urllib.request.urlopen(url + '/query', data=body, timeout=10).read()
    return url


def influx_query(url, q):
    return json.loads(get(url + '/query?' + urllib.parse.urlencode({'db': 'cm4', 'q': q})))


@pytest.fixture(scope='module')
def stack(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('telemetry'))
    stack = Stack(root)
    try:
        stack.alpha = start_hat(os.path.join(root, 'alpha'), boot_delay=0.1)
        state = stack.alpha.state()
        addresses = tmp117_addresses(state)
        stack.influx_url = start_influxdb(stack)
        config = {
            'listen_address': '127.0.0.1', 'listen_port': stack.port, 'lock_dir': stack.lock_dir,
            'state_dir': stack.state_dir, 'textfile': os.path.join(root, 'textfile', 'minicluster_cm4.prom'),
            'hats': [],
        }
        os.makedirs(os.path.dirname(config['textfile']))
        for name, directory in (('alpha', stack.alpha.dir), ('beta', stack.beta_dir)):
            config['hats'].append({
                'name': name, 'hat_id': name, 'port': os.path.join(directory, 'rp2040'),
                'i2c_bus': 'unix:' + os.path.join(directory, 'i2c-1.sock'),
                'shunt_ohm': state['options']['shunt_ohms'], 'tmp117_addresses': addresses,
                'sample_interval': 0.5, 'stale_after': 2.0,
                'console_lock_timeout': 0.05, 'fan': {'interval': 0.3, 'recover_after': 2}})
        if stack.influx_url:
            config['influxdb'] = {'url': stack.influx_url, 'version': 1, 'database': 'cm4', 'flush_interval': 0.5}
        stack.config_path = os.path.join(root, 'telemetry.json')
        with open(stack.config_path, 'w') as f:
            json.dump(config, f)
        stack.config = config
        stack.service = stack.spawn('service', [sys.executable, '-m', DAEMON, '--config', stack.config_path])
        wait_for('the service to answer', lambda: get(stack.url + '/healthz') == 'ok\n')
        stack.prom_port = free_port()
        with open(os.path.join(root, 'prometheus.yml'), 'w') as f:
            f.write('global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n'
                    '  - job_name: hat\n    static_configs:\n      - targets: ["127.0.0.1:%d"]\n' % stack.port)
        stack.spawn('prometheus', ['prometheus', '--config.file=' + os.path.join(root, 'prometheus.yml'),
                                   '--storage.tsdb.path=' + os.path.join(root, 'tsdb'),
                                   '--web.listen-address=127.0.0.1:%d' % stack.prom_port, '--log.level=warn'])
        stack.prom_url = 'http://127.0.0.1:%d' % stack.prom_port
        yield stack
    finally:
        for name in list(stack.procs):
            stack.stop(name)
        for sim in (stack.alpha, stack.beta):
            if sim is not None:
                sim.close()
                stop_hat(sim.dir)


def sim_fan(sim):
    state = sim.state()['emc2301']
    return state['rpm_control'], state['drive']


def test_serves_the_simulated_hat(stack):
    def sampled():
        status = stack.status()
        alpha = status['alpha']
        return (alpha['console']['age_s'] is not None and alpha['input']['age_s'] is not None
                and (alpha['fan']['reading'] or {}).get('mode') == 'rpm' and status)
    status = wait_for('alpha sampled, its fan on the curve', sampled)
    text = get(stack.url + '/metrics')
    assert '# HELP minicluster_node_temperature_celsius ' in text
    assert '# TYPE minicluster_node_current_amperes gauge' in text
    metrics = parse_metrics(text)
    state = stack.alpha.state()
    for node in (1, 2, 3, 4):
        exported = metric(metrics, 'minicluster_node_temperature_celsius', hat='alpha', node=node)
        assert exported == pytest.approx(state['nodes'][str(node)]['temperature_c'], abs=1.0)
        assert metric(metrics, 'minicluster_node_power_on', hat='alpha', node=node) == 0.0
        # An off node draws a little (the eFuse and converters stay powered): close to, but not, zero.
        assert 0 < metric(metrics, 'minicluster_node_current_amperes', hat='alpha', node=node) < 0.05
    volts = metric(metrics, 'minicluster_input_voltage_volts', hat='alpha')
    assert 11.5 < volts < 12.1
    assert metric(metrics, 'minicluster_input_saturated', hat='alpha') == 0.0
    assert metric(metrics, 'minicluster_input_power_watts', hat='alpha') == pytest.approx(
        volts * metric(metrics, 'minicluster_input_current_amperes', hat='alpha'), rel=0.01)
    assert metric(metrics, 'minicluster_fan_mode', hat='alpha', mode='rpm') == 1.0
    assert metric(metrics, 'minicluster_fan_regime', hat='alpha', regime='curve') == 1.0
    assert status['alpha']['fan']['regime'] == 'curve'
    # Not a single value for the hat that is not there; its sources say why.
    assert metric(metrics, 'minicluster_node_current_amperes', hat='beta', node=1) is None
    assert metric(metrics, 'minicluster_hat_source_up', hat='beta', source='console') == 0.0
    assert 'cannot open the RP2040 console' in status['beta']['console']['error']
    # The textfile for node_exporter holds the same series and is always whole: it is written aside
    # and renamed over, so a reader never sees half of it.
    for dummy in range(20):
        with open(stack.config['textfile']) as f:
            textfile = f.read()
        assert textfile.endswith('\n') and 'minicluster_fan_regime_changes_total{hat="beta"}' in textfile
        time.sleep(0.05)
    assert 'minicluster_node_temperature_celsius{hat="alpha",node="1"}' in textfile
    assert 'process_' not in textfile


def test_powered_node_and_usb_boot_pin(stack, tmp_path):
    args = dict(port=stack.alpha.rp2040, hat='alpha', lock_dir=stack.lock_dir, state_dir=stack.state_dir, lock_timeout=10,
                node=2, state='on', boot_mode='usb')
    result = run_module('node_power', args, tmp_path)
    assert result.get('changed') is True, result

    def powered():
        m = stack.metrics()
        return metric(m, 'minicluster_node_power_on', hat='alpha', node=2) == 1.0 and m
    metrics = wait_for('node 2 reported on', powered)
    assert metric(metrics, 'minicluster_node_current_amperes', hat='alpha', node=2) > 0.3
    assert metric(metrics, 'minicluster_node_usb_boot', hat='alpha', node=2) == 1.0
    assert metric(metrics, 'minicluster_node_usb_boot', hat='alpha', node=1) is None   # never set: unknown
    result = run_module('node_power', dict(args, state='off', boot_mode='normal'), tmp_path)
    assert result.get('changed') is True, result
    wait_for('node 2 reported off with the pin released',
             lambda: metric(stack.metrics(), 'minicluster_node_usb_boot', hat='alpha', node=2) == 0.0
             and metric(stack.metrics(), 'minicluster_node_power_on', hat='alpha', node=2) == 0.0)


def test_stored_calibration_is_used_and_flagged(stack):
    assert metric(stack.metrics(), 'minicluster_node_current_calibrated', hat='alpha', node=3) == 0.0
    calibration.save(stack.state_dir, 'alpha', {3: {'ma_per_unit': 2.0, 'baseline_units': 0.5}})
    wait_for('node 3 calibrated', lambda: metric(stack.metrics(), 'minicluster_node_current_calibrated',
                                                 hat='alpha', node=3) == 1.0)
    metrics = stack.metrics()
    assert metric(metrics, 'minicluster_node_current_calibrated', hat='alpha', node=1) == 0.0
    assert metric(metrics, 'minicluster_node_current_calibrated', hat='beta', node=3) is None
    os.unlink(calibration.calibration_path(stack.state_dir, 'alpha'))


def test_sensor_that_stops_answering_sends_the_fan_to_full_and_back(stack):
    address = tmp117_addresses(stack.alpha.state())['3']
    wait_for('the curve in charge', lambda: sim_fan(stack.alpha)[0])
    stack.alpha.control.set(silent_addresses=[address])
    try:
        wait_for('full drive', lambda: sim_fan(stack.alpha) == (False, 255))
        status = stack.status()['alpha']
        assert status['fan']['regime'] == 'failsafe'
        assert 'node 3 TMP117' in status['fan']['reason']
        metrics = stack.metrics()
        assert metric(metrics, 'minicluster_fan_regime', hat='alpha', regime='failsafe') == 1.0
        assert metric(metrics, 'minicluster_hat_source_up', hat='alpha', source='tmp117-3') == 0.0
        # The other sensors still report.
        assert metric(metrics, 'minicluster_node_temperature_celsius', hat='alpha', node=1) is not None
        wait_for('the silent sensor dropped as stale',
                 lambda: metric(stack.metrics(), 'minicluster_node_temperature_celsius', hat='alpha', node=3) is None)
    finally:
        stack.alpha.control.set(silent_addresses=[])
    wait_for('back on the curve', lambda: sim_fan(stack.alpha)[0] and stack.status()['alpha']['fan']['regime'] == 'curve')
    log = stack.log('service')
    assert re.search(r'hat alpha fan: curve -> failsafe \(node 3 TMP117: no answer at .*0x%02x\)' % address, log), log
    assert 'hat alpha fan: failsafe -> curve' in log


def test_stalled_fan_goes_to_full_drive_and_back(stack):
    wait_for('the curve in charge', lambda: stack.status()['alpha']['fan']['regime'] == 'curve')
    stack.alpha.control.set(fan_blocked=True)
    try:
        wait_for('failsafe on a stall', lambda: 'fan stalled' in stack.status()['alpha']['fan']['reason']
                 and sim_fan(stack.alpha) == (False, 255))
        assert metric(stack.metrics(), 'minicluster_fan_stalled', hat='alpha') == 1.0
    finally:
        stack.alpha.control.set(fan_blocked=False)
    wait_for('back on the curve', lambda: stack.status()['alpha']['fan']['regime'] == 'curve' and sim_fan(stack.alpha)[0])
    assert metric(stack.metrics(), 'minicluster_fan_stalled', hat='alpha') == 0.0


def test_console_held_busy_serves_the_last_sample_with_its_age(stack, tmp_path):
    wait_for('a fresh console sample', lambda: stack.status()['alpha']['console']['age_s'] < 1.0)
    busy_before = metric(stack.metrics(), 'minicluster_hat_console_busy_total', hat='alpha')
    # A long node_power run: two restarts of 1.5 s each, all under the hat's lock. Its short lock
    # timeout proves the service never keeps it waiting.
    result = {}
    args = dict(port=stack.alpha.rp2040, hat='alpha', lock_dir=stack.lock_dir, state_dir=stack.state_dir, lock_timeout=1.0,
                nodes=[1, 4], state='restarted')
    worker = threading.Thread(target=lambda: result.update(run_module('node_power', args, tmp_path)))
    lock = DeviceLock(hat_lock_path('alpha', stack.lock_dir), timeout=10)
    with lock:
        # While someone holds the console the service keeps answering, with an age that grows.
        ages = []
        for dummy in range(6):
            status = stack.status()['alpha']
            ages.append(status['console']['age_s'])
            time.sleep(0.5)
        assert ages == sorted(ages) and ages[-1] > ages[0] + 2.0, ages
        assert 'console busy' in status['console']['error']
        metrics = stack.metrics()
        # Older than stale_after: no value, only the age.
        assert metric(metrics, 'minicluster_node_current_amperes', hat='alpha', node=1) is None
        assert metric(metrics, 'minicluster_hat_sample_age_seconds', hat='alpha', source='console') > 2.0
        assert metric(metrics, 'minicluster_hat_console_busy_total', hat='alpha') > busy_before
        # Temperatures come over I2C and stay fresh.
        assert metric(metrics, 'minicluster_node_temperature_celsius', hat='alpha', node=1) is not None
    worker.start()
    worker.join(120)
    assert result.get('failed') is not True and result.get('changed') is True, result
    wait_for('fresh values after the run', lambda: metric(stack.metrics(), 'minicluster_node_power_on',
                                                          hat='alpha', node=4) == 1.0)
    run_module('node_power', dict(args, state='off'), tmp_path)


def test_second_hat_recovers_when_its_devices_appear(stack):
    assert stack.status()['beta']['input']['error']
    stack.beta = start_hat(stack.beta_dir, boot_delay=0.1)
    wait_for('beta sampled', lambda: metric(stack.metrics(), 'minicluster_input_voltage_volts', hat='beta')
             and metric(stack.metrics(), 'minicluster_node_current_amperes', hat='beta', node=1) is not None)
    wait_for('beta fan on its curve', lambda: stack.status()['beta']['fan']['regime'] == 'curve'
             and sim_fan(stack.beta)[0])
    # Until then its fan was in failsafe, with the reason logged once.
    assert 'hat beta fan: starting -> failsafe' in stack.log('service')


def test_fan_module_refuses_while_the_service_owns_the_fan(stack, tmp_path):
    bus = stack.config['hats'][0]['i2c_bus']
    result = run_module('fan', dict(i2c_bus=bus, lock_dir=stack.lock_dir, mode='pwm', duty_percent=30), tmp_path)
    assert result.get('failed') is True, result
    assert 'minicluster-cm4-telemetry hat alpha (pid %d)' % stack.service.pid in result['msg']
    assert owner_path(bus, stack.lock_dir) in result['msg']
    assert sim_fan(stack.alpha)[0]   # still the service's closed loop


def test_every_dashboard_query_returns_data(stack):
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    exprs = [t['expr'] for p in dashboard['panels'] for t in p['targets']]
    assert len(exprs) >= 7

    def query(expr):
        expr = expr.replace('$hat', '.+')
        now = time.time()
        url = '%s/api/v1/query_range?%s' % (stack.prom_url, urllib.parse.urlencode(
            {'query': expr, 'start': now - 300, 'end': now, 'step': 2}))
        reply = json.loads(get(url))
        assert reply['status'] == 'success', reply
        return reply['data']['result']
    wait_for('Prometheus scraping the service', lambda: query('up{job="hat"} == 1'))
    for expr in exprs:
        result = wait_for('data for %s' % expr, lambda e=expr: query(e), timeout=30)
        assert any(series['metric'].get('hat') == 'alpha' for series in result), (expr, result)
    variable = dashboard['templating']['list'][1]['query']['query']
    assert variable == 'label_values(minicluster_node_power_on, hat)'
    hats = json.loads(get('%s/api/v1/label/hat/values' % stack.prom_url))['data']
    assert {'alpha', 'beta'} <= set(hats)


def test_influxdb_receives_the_samples(stack):
    if not stack.influx_url:
        pytest.skip('influxd is not installed')
    rows = wait_for('points in InfluxDB', lambda: influx_query(
        stack.influx_url, "SELECT last(temperature_c) FROM cm4_node WHERE hat='alpha' GROUP BY node")['results'][0]
        .get('series'))
    assert sorted(s['tags']['node'] for s in rows) == ['1', '2', '3', '4']
    hat = influx_query(stack.influx_url, "SELECT last(input_voltage_v) FROM cm4_hat WHERE hat='alpha'")
    assert 11.5 < hat['results'][0]['series'][0]['values'][0][1] < 12.1
    metrics = stack.metrics()
    assert metric(metrics, 'minicluster_influxdb_points_written_total') > 0
    assert metric(metrics, 'minicluster_influxdb_up') == 1.0


def chromium_dom(url, user_data_dir, budget_ms):
    argv = ['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
            '--disable-component-update', '--disable-sync', '--no-first-run', '--user-data-dir=' + user_data_dir,
            '--virtual-time-budget=%d' % budget_ms, '--dump-dom', url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def text_of(dom, element_id):
    found = re.search(r'id="%s"[^>]*>([^<]*)<' % re.escape(element_id), dom)
    return found.group(1) if found else None


def test_status_page_renders_in_headless_chromium(stack, tmp_path):
    html = get(stack.url + '/')
    assert not re.search(r'(src|href)=|https?://|@import', html), 'the page must not load anything from elsewhere'
    requests_before = metric(stack.metrics(), 'minicluster_exporter_http_requests_total', path='/api/status') or 0
    # The simulated nodes warm and cool as the fan follows its curve: the page shows a reading taken
    # somewhere between these two states.
    state_before = stack.alpha.state()
    dom = chromium_dom(stack.url + '/', str(tmp_path / 'chromium'), 8000)
    state_after = stack.alpha.state()
    updates = int(re.search(r'<body data-updates="(\d+)"', dom).group(1))
    assert updates >= 2, dom[:2000]   # it refreshed by itself, more than once
    requests_after = metric(stack.metrics(), 'minicluster_exporter_http_requests_total', path='/api/status')
    assert requests_after >= requests_before + updates
    for node in (1, 2, 3, 4):
        shown = text_of(dom, 'hat-alpha-node%d-temp' % node)
        assert shown and shown.endswith('\u00b0C'), (node, shown)
        span = [s['nodes'][str(node)]['temperature_c'] for s in (state_before, state_after)]
        assert min(span) - 1.0 <= float(shown.split()[0]) <= max(span) + 1.0, (node, shown, span)
        assert text_of(dom, 'hat-alpha-node%d-power' % node) == 'off'
    assert re.match(r'\d+ RPM, drive \d+ %, rpm mode', text_of(dom, 'hat-alpha-fan'))
    assert re.match(r'[\d.]+ W at 1[12]\.\d\d V', text_of(dom, 'hat-alpha-input'))
    assert 'id="hat-beta"' in dom
    points = int(re.search(r'id="hat-alpha" data-points="(\d+)"', dom).group(1))
    assert points > 20   # the plots drew the history


def test_service_stops_cleanly_leaving_the_fan_at_full_drive(stack):
    assert stack.stop('service') == 0
    for sim in (stack.alpha, stack.beta):
        if sim is not None:
            assert sim_fan(sim) == (False, 255)
    assert 'hat alpha fan: left at full drive on exit' in stack.log('service')
