# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-node current calibration of the hat: what one unit of a node's IMON reading is in mA.

The RP2040 reports each node's eFuse IMON voltage (millivolts labelled mA); the true current
depends on the eFuse's IMON gain and resistor. The INA226 measures the whole 12 V input, so
switching one node at a time and comparing the input-current step with the node's IMON step gives
that node's mA per unit. An "off" node is not at zero (EN only drops the CM4's GLOBAL_EN; the
card's converters and an NVMe drive stay powered), so the off reading is kept as its baseline.

The result lives on the controller as one JSON file per hat under the state directory:

    {"version": 1, "hat": "hat0", "nodes": {"2": {"ma_per_unit": 1.93, "baseline_units": 11.2,
     "step_units": 371.0, "step_ma": 716.0, "samples": 10, "calibrated_at": "2026-..."}}}

load() is the one reader (node_power, hat_info, telemetry).
"""

from __future__ import annotations

import json
import math
import os

from ansible_collections.minicluster.cm4.plugins.module_utils.common.files import atomic_write_json
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.lock import DEFAULT_HAT, check_hat_name

VERSION = 1
NODES = (1, 2, 3, 4)
# A node's IMON step below this many units is noise, not a node switching.
MIN_STEP_UNITS = 20.0
# Plausible mA per unit: far outside means the step was not this node's (or the INA226 lies).
MIN_MA_PER_UNIT = 0.05
MAX_MA_PER_UNIT = 50.0


class CalibrationError(Exception):
    """A calibration that cannot be made or read, with a message for the operator."""


def calibration_path(state_dir, hat=DEFAULT_HAT):
    return os.path.join(state_dir, 'minicluster-cm4.%s.calibration.json' % check_hat_name(hat))


def _finite_positive(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_entry(node, entry, path):
    if not isinstance(entry, dict):
        raise CalibrationError('%s: node %s is not an object; run the calibration again' % (path, node))
    if not _finite_positive(entry.get('ma_per_unit')):
        raise CalibrationError('%s: node %s has no valid ma_per_unit; run the calibration again' % (path, node))
    baseline = entry.get('baseline_units', 0.0)
    if not isinstance(baseline, (int, float)) or isinstance(baseline, bool) or not math.isfinite(baseline) or baseline < 0:
        raise CalibrationError('%s: node %s has an invalid baseline_units; run the calibration again' % (path, node))
    return dict(entry, ma_per_unit=float(entry['ma_per_unit']), baseline_units=float(baseline))


def load(state_dir, hat=DEFAULT_HAT):
    """{node (int): {'ma_per_unit', 'baseline_units', ...}} of the hat; {} when never calibrated.

    Raises CalibrationError when the file exists but is not a calibration this code wrote.
    """
    path = calibration_path(state_dir, hat)
    try:
        with open(path) as f:
            data = json.load(f)
    except (IOError, OSError):
        if os.path.exists(path):
            raise CalibrationError('cannot read the calibration %s: check its permissions' % path)
        return {}
    except ValueError as exc:
        raise CalibrationError('the calibration %s is not JSON (%s): run the calibration again' % (path, exc))
    if not isinstance(data, dict) or data.get('version') != VERSION or not isinstance(data.get('nodes'), dict):
        raise CalibrationError('%s is not a version %d calibration: run the calibration again' % (path, VERSION))
    out = {}
    for key, entry in data['nodes'].items():
        if key not in ('1', '2', '3', '4'):
            raise CalibrationError('%s names node %r: nodes are 1 to 4; run the calibration again' % (path, key))
        out[int(key)] = _check_entry(key, entry, path)
    return out


def save(state_dir, hat, nodes):
    """Merge {node: entry} into the hat's calibration, atomically (a reader sees old or new, never half)."""
    path = calibration_path(state_dir, hat)
    merged = dict((str(n), e) for n, e in load(state_dir, hat).items())
    for node, entry in nodes.items():
        merged[str(node)] = _check_entry(node, entry, path)
    return atomic_write_json(path, {'version': VERSION, 'hat': hat, 'nodes': merged})


def mean(values):
    return sum(values) / float(len(values))


def fit_step(node, off, on):
    """Calibration of one node from paired readings with the node off and on.

    off, on: lists of (imon_units, input_ma), each pair taken together. Returns the entry to store.
    Raises CalibrationError when the step is too small or the ratio is implausible.
    """
    if not off or not on:
        raise CalibrationError('node %d: no readings to calibrate from' % node)
    off_units, off_ma = mean([u for u, dummy in off]), mean([m for dummy, m in off])
    on_units, on_ma = mean([u for u, dummy in on]), mean([m for dummy, m in on])
    step_units = on_units - off_units
    step_ma = on_ma - off_ma
    if step_units < MIN_STEP_UNITS:
        raise CalibrationError('node %d: its IMON reading rose by only %.1f units when switched on (%.1f -> %.1f): '
                               'is a card in slot %d?' % (node, step_units, off_units, on_units, node))
    ratio = step_ma / step_units
    if not math.isfinite(ratio) or not MIN_MA_PER_UNIT <= ratio <= MAX_MA_PER_UNIT:
        raise CalibrationError('node %d: the input current changed by %.1f mA for an IMON step of %.1f units, %.3f mA '
                               'per unit, outside %s..%s: did another load change meanwhile? run it again'
                               % (node, step_ma, step_units, ratio, MIN_MA_PER_UNIT, MAX_MA_PER_UNIT))
    return {'ma_per_unit': round(ratio, 4), 'baseline_units': round(max(off_units, 0.0), 3),
            'step_units': round(step_units, 3), 'step_ma': round(step_ma, 3), 'samples': len(off) + len(on)}
