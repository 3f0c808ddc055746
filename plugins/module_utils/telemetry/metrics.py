# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus metrics of the hats, built at scrape time from the monitors' last readings.

Base units in names (amperes, volts, watts, celsius, seconds, ratio), a `hat` label on every
series and a `node` label 1..4 on per-node ones. A stale reading is left out (no sample) while its
age stays visible in minicluster_hat_sample_age_seconds, so a stale value is never served as fresh.
"""

from __future__ import annotations

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    HAS_PROMETHEUS_CLIENT = True
except ImportError:  # pragma: no cover - depends on the controller
    HAS_PROMETHEUS_CLIENT = False

from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry.monitor import NODES, SOURCES, tmp117_source

PREFIX = 'minicluster_'
REGIMES = ('curve', 'failsafe', 'not-owner', 'disabled', 'starting')


def _gauge(name, doc, labels):
    return GaugeMetricFamily(PREFIX + name, doc, labels=labels)


class HatCollector(object):
    """A prometheus_client custom collector over the monitors (and optional extra counters)."""

    def __init__(self, monitors, extra=None):
        self.monitors = monitors
        self.extra = extra

    def describe(self):
        return []

    def collect(self):
        hat_node = ['hat', 'node']
        m = {
            'power': _gauge('node_power_on', 'Node powered (1) or off (0), from its eFuse current.', hat_node),
            'current': _gauge('node_current_amperes', 'Node current from its eFuse IMON on the RP2040 ADC.', hat_node),
            'calibrated': _gauge('node_current_calibrated', '1 when the node current uses a stored calibration.', hat_node),
            'usb': _gauge('node_usb_boot', 'USB-boot pin (nRPIBOOT) asserted (1) or released (0), as last set on this '
                                           'controller; absent when unknown.', hat_node),
            'temp': _gauge('node_temperature_celsius', 'Temperature of the TMP117 under the node.', hat_node),
            'volts': _gauge('input_voltage_volts', 'Hat input voltage (INA226 bus voltage).', ['hat']),
            'amps': _gauge('input_current_amperes', 'Hat input current; absent while the shunt is saturated.', ['hat']),
            'watts': _gauge('input_power_watts', 'Hat input power; absent while the shunt is saturated.', ['hat']),
            'sat': _gauge('input_saturated', '1 when the INA226 shunt voltage is at its limit (current unknown).', ['hat']),
            'rpm': _gauge('fan_rpm', 'Fan speed measured by the EMC2301 tachometer.', ['hat']),
            'drive': _gauge('fan_drive_ratio', 'Fan PWM drive, 0 to 1 (EMC2301 Fan Setting / 255).', ['hat']),
            'target': _gauge('fan_target_rpm', 'Closed-loop target speed (absent in PWM mode).', ['hat']),
            'mode': _gauge('fan_mode', 'EMC2301 mode: 1 for the active one.', ['hat', 'mode']),
            'stall': _gauge('fan_stalled', '1 when the EMC2301 reports a stalled fan or failed spin-up.', ['hat']),
            'regime': _gauge('fan_regime', 'Fan control regime of this service: 1 for the active one.', ['hat', 'regime']),
            'curve_c': _gauge('fan_curve_input_celsius', 'Temperature the fan curve follows (the chosen aggregate).',
                              ['hat']),
            'up': _gauge('hat_source_up', '1 when the last attempt to read the source succeeded.', ['hat', 'source']),
            'age': _gauge('hat_sample_age_seconds', 'Age of the last good reading of the source.', ['hat', 'source']),
            'errors': CounterMetricFamily(PREFIX + 'hat_source_errors', 'Failed reads of the source.',
                                          labels=['hat', 'source']),
            'busy': CounterMetricFamily(PREFIX + 'hat_console_busy',
                                        'Samples skipped because another program held the hat console.', labels=['hat']),
            'changes': CounterMetricFamily(PREFIX + 'fan_regime_changes', 'Changes of the fan control regime.',
                                           labels=['hat']),
        }
        for mon in self.monitors:
            hat = mon.name
            console, dummy, dummy = mon.view('console')
            for node in NODES:
                labels = [hat, str(node)]
                if console:
                    item = console[node]
                    m['power'].add_metric(labels, 1.0 if item['on'] else 0.0)
                    m['current'].add_metric(labels, item['current_a'])
                    m['calibrated'].add_metric(labels, 1.0 if item['calibrated'] else 0.0)
                    if item['usb_boot'] is not None:
                        m['usb'].add_metric(labels, 1.0 if item['usb_boot'] else 0.0)
                temp, dummy, dummy = mon.view(tmp117_source(node))
                if temp and temp['celsius'] is not None:
                    m['temp'].add_metric(labels, temp['celsius'])
            ina, dummy, dummy = mon.view('ina226')
            if ina:
                m['volts'].add_metric([hat], ina['voltage_v'])
                m['sat'].add_metric([hat], 1.0 if ina['saturated'] else 0.0)
                if not ina['saturated']:
                    m['amps'].add_metric([hat], ina['current_a'])
                    m['watts'].add_metric([hat], ina['power_w'])
            fan, dummy, dummy = mon.view('emc2301')
            if fan:
                m['rpm'].add_metric([hat], fan['rpm'])
                m['drive'].add_metric([hat], fan['drive_ratio'])
                if fan['target_rpm'] is not None:
                    m['target'].add_metric([hat], fan['target_rpm'])
                for mode in ('rpm', 'pwm'):
                    m['mode'].add_metric([hat, mode], 1.0 if fan['mode'] == mode else 0.0)
                m['stall'].add_metric([hat], 1.0 if fan['stalled'] or fan['spin_up_failed'] else 0.0)
            for regime in REGIMES:
                m['regime'].add_metric([hat, regime], 1.0 if mon.regime == regime else 0.0)
            if mon.fan_aggregate_c is not None:
                m['curve_c'].add_metric([hat], mon.fan_aggregate_c)
            m['changes'].add_metric([hat], mon.regime_changes)
            for source in SOURCES:
                data, age, error = mon.view(source)
                m['up'].add_metric([hat, source], 0.0 if error else 1.0)
                if age is not None:
                    m['age'].add_metric([hat, source], round(age, 3))
                m['errors'].add_metric([hat, source], mon.counters(source)['errors'])
            m['busy'].add_metric([hat], mon.counters('console')['busy'])
        yield from m.values()
        if self.extra is not None:
            yield from self.extra()
