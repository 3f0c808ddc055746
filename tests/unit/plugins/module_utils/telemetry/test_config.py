# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry import config


def base(**hat):
    return {'hats': [dict({'name': 'alpha'}, **hat)]}


def test_defaults_follow_the_board():
    cfg = config.check(base())
    hat = cfg['hats'][0]
    assert hat['tmp117_addresses'] == {1: 0x49, 2: 0x48, 3: 0x4B, 4: 0x4A}
    assert hat['shunt_ohm'] == 0.1 and hat['ina226_address'] == 0x40 and hat['port'] == '/dev/ttyACM0'
    assert hat['hat_id'] == 'hat0' and hat['ma_per_unit'] is None and hat['uart_port'] is None
    assert hat['fan']['mode'] == 'rpm' and hat['fan']['enabled'] is True and hat['fan']['aggregate'] == 'max'
    assert hat['stale_after'] == 15.0          # three sample intervals
    assert cfg['influxdb'] is None and cfg['listen_port'] == 9842


@pytest.mark.parametrize('data, message', [
    ({'hats': []}, 'config.hats must be a non-empty list'),
    ({'hats': [{'name': 'a b'}]}, 'is not a valid name'),
    ({'hats': [{'name': 'a'}, {'name': 'a', 'port': '/dev/ttyACM1', 'i2c_bus': 2}]}, 'hat names must be distinct'),
    ({'hats': [{'name': 'a'}, {'name': 'b'}]}, 'two hats share the hat_id'),
    ({'hats': [{'name': 'a', 'hat_id': 'a'}, {'name': 'b', 'hat_id': 'b'}]}, 'two hats share the port'),
    (base(hat_id='hat 0'), 'is not a valid name'),
    (base(ma_per_unit=-1), 'ma_per_unit must be a positive number'),
    (base(fan={'curve': [[30, 2000]]}), 'config.hats[0].fan.curve: a fan curve needs at least two'),
    (base(fan={'curve': [[30, 2000], [20, 3000]]}), 'temperatures must rise'),
    (base(fan={'curve': [[30, 2000], [200, 3000]]}), 'outside the TMP117 range'),
    (base(fan={'mode': 'pwm', 'curve': [[30, 0], [60, 100]]}), 'outside 1..100 percent'),
    (base(fan={'sensors': [1, 5]}), 'sensors must be a list of distinct nodes'),
    (base(fan={'plausible_min_c': 50, 'plausible_max_c': 40}), 'plausible_min_c must be below'),
    (base(fan={'speed': 3}), 'unknown key speed'),
    (base(i2c_bus='/dev/spi0'), 'i2c_bus must be a bus number'),
    (base(tmp117_addresses={'1': 0x48}), 'two nodes share one address'),
    (base(tmp117_addresses={'5': 0x48}), "node '5' is not 1..4"),
    (base(sample_interval=float('inf')), 'must be a finite number'),
    (base(shunt_ohm=0), 'shunt_ohm must be a positive number'),
    (base(port='/dev/tty\nACM0'), 'contains a control character'),
    (dict(base(), influxdb={'url': 'influx:8086', 'database': 'cm4', 'version': 1}), 'is not a URL of an InfluxDB server'),
    (dict(base(), influxdb={'url': 'http://', 'org': 'o', 'bucket': 'b'}), 'is not a URL'),
    (dict(base(), influxdb={'url': 'http://h:99999', 'org': 'o', 'bucket': 'b'}), 'is not a URL'),
    (dict(base(), influxdb={'url': 'http://h:8086', 'version': 2}), 'org must be a non-empty string'),
    (dict(base(), textfile='relative.prom'), 'must be an absolute path'),
])
def test_bad_configurations_fail_with_one_line(data, message):
    with pytest.raises(config.ConfigError) as info:
        config.check(data)
    assert message in str(info.value)
    assert '\n' not in str(info.value)


def test_influxdb_url_is_normalised():
    cfg = config.check(dict(base(), influxdb={'url': 'https://influx.example:8086/', 'org': 'o', 'bucket': 'b', 'token': 't'}))
    assert cfg['influxdb']['url'] == 'https://influx.example:8086'


def test_load_reports_unreadable_and_non_json_files(tmp_path):
    with pytest.raises(config.ConfigError, match='cannot read'):
        config.load(str(tmp_path / 'missing.json'))
    bad = tmp_path / 'bad.json'
    bad.write_text('{"hats": [')
    with pytest.raises(config.ConfigError, match='is not JSON'):
        config.load(str(bad))
    good = tmp_path / 'good.json'
    good.write_text(json.dumps(base()))
    assert config.load(str(good))['hats'][0]['name'] == 'alpha'


def test_service_exits_2_on_a_bad_configuration_and_says_why(tmp_path, capsys):
    from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry import daemon
    bad = tmp_path / 'telemetry.json'
    bad.write_text(json.dumps(dict(base(), influxdb={'url': 'not a url', 'database': 'cm4', 'version': 1})))
    assert daemon.main(['--config', str(bad)]) == daemon.EXIT_CONFIG == 2   # the unit does not restart on 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'influxdb.url must be an http:// or https:// URL' in err
    assert daemon.main(['--check-config', str(bad)]) == 2
    bad.write_text(json.dumps(base()))
    assert daemon.main(['--check-config', str(bad)]) == 0
