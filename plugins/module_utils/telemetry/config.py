# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The telemetry service's configuration (one JSON file): checked whole before anything starts.

Every error is one line naming the key, what is wrong and what is expected. The same check runs
when the role writes the file (copy's validate), so a bad file never lands on the controller.
"""

from __future__ import annotations

import json
import math
import re

from urllib.parse import urlsplit

from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry import curve
from ansible_collections.minicluster.cm4.plugins.module_utils.transports import i2c
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.lock import DEFAULT_HAT

NODES = (1, 2, 3, 4)
DEFAULT_TMP117 = {1: 0x49, 2: 0x48, 3: 0x4B, 4: 0x4A}
DEFAULT_CURVE_RPM = [[30, 1200], [45, 2000], [60, 3500], [75, 5000]]
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$')
CONTROL_RE = re.compile(r'[\x00-\x1f\x7f]')
RPM_LIMITS = (500, 16000)
DUTY_LIMITS = (1, 100)


class ConfigError(ValueError):
    pass


def _known(data, where, keys):
    if not isinstance(data, dict):
        raise ConfigError('%s must be a mapping, not %r' % (where, data))
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ConfigError('%s: unknown key %s (known: %s)' % (where, ', '.join(unknown), ', '.join(sorted(keys))))


def _num(data, key, where, default, low, high, integer=False):
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError('%s.%s must be a finite number, not %r' % (where, key, value))
    if integer and int(value) != value:
        raise ConfigError('%s.%s must be a whole number, not %r' % (where, key, value))
    if not low <= value <= high:
        raise ConfigError('%s.%s is %r, outside %g..%g' % (where, key, value, low, high))
    return int(value) if integer else float(value)


def _text(data, key, where, default=None, required=False, pattern=None):
    value = data.get(key, default)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError('%s.%s must be a non-empty string, not %r' % (where, key, value))
    if CONTROL_RE.search(value):
        raise ConfigError('%s.%s contains a control character' % (where, key))
    if pattern is not None and not pattern.match(value):
        raise ConfigError('%s.%s %r is not a valid name (letters, digits, _ . -, up to 63)' % (where, key, value))
    return value


def _bool(data, key, where, default):
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError('%s.%s must be true or false, not %r' % (where, key, value))
    return value


def _address(value, where):
    if isinstance(value, bool) or not isinstance(value, int) or not 0x08 <= value <= 0x77:
        raise ConfigError('%s must be a 7-bit I2C address 0x08..0x77, not %r' % (where, value))
    return value


def _node_map(value, where, check, default):
    if value is None:
        return dict(default)
    if not isinstance(value, dict):
        return dict((n, check(value, where)) for n in NODES)
    out = dict(default)
    for key, item in value.items():
        try:
            node = int(key)
        except (TypeError, ValueError):
            node = None
        if node not in NODES:
            raise ConfigError('%s: node %r is not 1..4' % (where, key))
        out[node] = check(item, '%s.%s' % (where, key))
    return out


def _positive(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError('%s must be a positive number, not %r' % (where, value))
    return float(value)


def check_url(url, where):
    """An http(s) URL with a host, or ConfigError."""
    if not isinstance(url, str) or CONTROL_RE.search(url) or ' ' in url:
        raise ConfigError('%s must be an http:// or https:// URL, not %r' % (where, url))
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError('%s %r is not a URL: %s' % (where, url, exc))
    if parts.scheme not in ('http', 'https') or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError('%s %r is not a URL of an InfluxDB server (http[s]://host[:port][/path])' % (where, url))
    del port
    return url.rstrip('/')


def check_fan(data, where):
    data = {} if data is None else data
    _known(data, where, ('enabled', 'mode', 'curve', 'aggregate', 'sensors', 'hysteresis_c', 'interval',
                         'plausible_min_c', 'plausible_max_c', 'recover_after', 'poles', 'owner_file'))
    mode = data.get('mode', 'rpm')
    if mode not in ('rpm', 'pwm'):
        raise ConfigError('%s.mode must be rpm or pwm, not %r' % (where, mode))
    low, high = RPM_LIMITS if mode == 'rpm' else DUTY_LIMITS
    unit = 'RPM' if mode == 'rpm' else 'percent'
    points = data.get('curve', DEFAULT_CURVE_RPM if mode == 'rpm' else [[30, 30], [45, 50], [60, 75], [75, 100]])
    try:
        points = curve.check_points(points, low, high, unit)
    except curve.CurveError as exc:
        raise ConfigError('%s.curve: %s' % (where, exc))
    how = data.get('aggregate', 'max')
    if how not in curve.AGGREGATES:
        raise ConfigError('%s.aggregate must be one of %s, not %r' % (where, ', '.join(curve.AGGREGATES), how))
    sensors = data.get('sensors', list(NODES))
    if (not isinstance(sensors, list) or not sensors
            or any(isinstance(s, bool) or s not in NODES for s in sensors) or len(set(sensors)) != len(sensors)):
        raise ConfigError('%s.sensors must be a list of distinct nodes 1..4 whose TMP117 counts, not %r' % (where, sensors))
    out = {
        'enabled': _bool(data, 'enabled', where, True),
        'mode': mode,
        'curve': points,
        'aggregate': how,
        'sensors': sorted(sensors),
        'hysteresis_c': _num(data, 'hysteresis_c', where, 2.0, 0.0, 20.0),
        'interval': _num(data, 'interval', where, 2.0, 0.2, 60.0),
        'plausible_min_c': _num(data, 'plausible_min_c', where, -20.0, curve.SENSOR_MIN_C, curve.SENSOR_MAX_C),
        'plausible_max_c': _num(data, 'plausible_max_c', where, 110.0, curve.SENSOR_MIN_C, curve.SENSOR_MAX_C),
        'recover_after': _num(data, 'recover_after', where, 3, 1, 100, integer=True),
        'poles': _num(data, 'poles', where, 2, 1, 4, integer=True),
        'owner_file': _text(data, 'owner_file', where),
    }
    if out['plausible_min_c'] >= out['plausible_max_c']:
        raise ConfigError('%s: plausible_min_c must be below plausible_max_c' % where)
    return out


def check_hat(data, where):
    _known(data, where, ('name', 'hat_id', 'port', 'uart_port', 'i2c_bus', 'console_lock_timeout', 'command_timeout',
                         'on_threshold_ma',
                         'ma_per_unit', 'ina226_address', 'shunt_ohm', 'tmp117_addresses', 'sample_interval',
                         'stale_after', 'fan'))
    name = _text(data, 'name', where, required=True, pattern=NAME_RE)
    bus = data.get('i2c_bus', '1')
    try:
        i2c.parse_bus(bus)
    except ValueError as exc:
        raise ConfigError('%s.i2c_bus: %s' % (where, exc))
    out = {
        'name': name,
        'hat_id': _text(data, 'hat_id', where, DEFAULT_HAT, pattern=NAME_RE),
        'port': _text(data, 'port', where, '/dev/ttyACM0'),
        'uart_port': _text(data, 'uart_port', where),
        'i2c_bus': bus,
        'console_lock_timeout': _num(data, 'console_lock_timeout', where, 0.2, 0.0, 5.0),
        'command_timeout': _num(data, 'command_timeout', where, 2.0, 0.1, 30.0),
        'on_threshold_ma': _num(data, 'on_threshold_ma', where, 50.0, 0.0, 5000.0),
        'ma_per_unit': None if data.get('ma_per_unit') is None else _positive(data['ma_per_unit'], where + '.ma_per_unit'),
        'ina226_address': _address(data.get('ina226_address', 0x40), where + '.ina226_address'),
        'shunt_ohm': _positive(data.get('shunt_ohm', 0.1), where + '.shunt_ohm'),
        'tmp117_addresses': _node_map(data.get('tmp117_addresses'), where + '.tmp117_addresses', _address,
                                      DEFAULT_TMP117),
        'sample_interval': _num(data, 'sample_interval', where, 5.0, 0.5, 300.0),
        'fan': check_fan(data.get('fan'), where + '.fan'),
    }
    if len(set(out['tmp117_addresses'].values())) != 4:
        raise ConfigError('%s.tmp117_addresses: two nodes share one address' % where)
    out['stale_after'] = _num(data, 'stale_after', where, 3 * max(out['sample_interval'], out['fan']['interval']),
                              1.0, 3600.0)
    return out


def check_influxdb(data, where='influxdb'):
    if data is None:
        return None
    _known(data, where, ('url', 'version', 'database', 'retention_policy', 'org', 'bucket', 'token', 'username',
                         'password', 'batch_size', 'flush_interval', 'max_queue', 'timeout'))
    version = data.get('version', 2)
    if version not in (1, 2):
        raise ConfigError('%s.version must be 1 or 2, not %r' % (where, version))
    out = {
        'url': check_url(data.get('url'), where + '.url'),
        'version': version,
        'batch_size': _num(data, 'batch_size', where, 500, 1, 100000, integer=True),
        'flush_interval': _num(data, 'flush_interval', where, 10.0, 0.1, 3600.0),
        'max_queue': _num(data, 'max_queue', where, 20000, 1, 10000000, integer=True),
        'timeout': _num(data, 'timeout', where, 5.0, 0.1, 120.0),
    }
    if version == 1:
        out['database'] = _text(data, 'database', where, required=True)
        out['retention_policy'] = _text(data, 'retention_policy', where)
        out['username'] = _text(data, 'username', where)
        out['password'] = _text(data, 'password', where)
    else:
        out['org'] = _text(data, 'org', where, required=True)
        out['bucket'] = _text(data, 'bucket', where, required=True)
        out['token'] = _text(data, 'token', where)
    return out


def check(data):
    """The whole configuration, normalised, or ConfigError."""
    _known(data, 'config', ('listen_address', 'listen_port', 'textfile', 'lock_dir', 'state_dir', 'history_seconds',
                            'hats', 'influxdb'))
    hats = data.get('hats')
    if not isinstance(hats, list) or not hats:
        raise ConfigError('config.hats must be a non-empty list of hats')
    out = {
        'listen_address': _text(data, 'listen_address', 'config', '0.0.0.0'),
        'listen_port': _num(data, 'listen_port', 'config', 9842, 1, 65535, integer=True),
        'textfile': _text(data, 'textfile', 'config'),
        'lock_dir': _text(data, 'lock_dir', 'config', '/run/lock'),
        'state_dir': _text(data, 'state_dir', 'config', '/var/lib/minicluster-cm4'),
        'history_seconds': _num(data, 'history_seconds', 'config', 3600, 60, 86400, integer=True),
        'hats': [check_hat(h, 'config.hats[%d]' % i) for i, h in enumerate(hats)],
        'influxdb': check_influxdb(data.get('influxdb')),
    }
    for key in ('textfile', 'lock_dir', 'state_dir'):
        if out[key] is not None and not out[key].startswith('/'):
            raise ConfigError('config.%s must be an absolute path, not %r' % (key, out[key]))
    names = [h['name'] for h in out['hats']]
    if len(set(names)) != len(names):
        raise ConfigError('config.hats: hat names must be distinct, got %s' % ', '.join(names))
    for key in ('hat_id', 'port', 'i2c_bus'):
        values = [str(h[key]) for h in out['hats']]
        if len(set(values)) != len(values):
            raise ConfigError('config.hats: two hats share the %s %s' % (key, values))
    return out


def load(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (IOError, OSError) as exc:
        raise ConfigError('cannot read the telemetry configuration %s: %s' % (path, exc.strerror or exc))
    except ValueError as exc:
        raise ConfigError('the telemetry configuration %s is not JSON: %s' % (path, exc))
    return check(data)
