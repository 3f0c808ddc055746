# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fan curve: temperature -> fan output, linear between points, with hysteresis on the way down.

Pure functions and a small state object; no I/O. Output is RPM (closed-loop mode) or duty percent
(PWM mode): the curve does not care which.
"""

from __future__ import annotations

import math

# The TMP117's specified range (datasheet: -55 to 150 degC).
SENSOR_MIN_C = -55.0
SENSOR_MAX_C = 150.0
AGGREGATES = ('max', 'mean', 'median')


class CurveError(ValueError):
    """A curve that cannot drive a fan."""


def _number(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CurveError('%s must be a finite number, not %r' % (what, value))
    return float(value)


def check_points(points, low, high, unit):
    """Validate [[temp_c, output], ...]: at least two points, temperatures strictly rising inside the
    sensor's range, outputs never falling and inside [low, high]. Returns a list of float tuples."""
    if not isinstance(points, (list, tuple)) or len(points) < 2:
        raise CurveError('a fan curve needs at least two [temperature_c, %s] points, got %r' % (unit, points))
    out = []
    for i, point in enumerate(points):
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            raise CurveError('fan curve point %d must be [temperature_c, %s], not %r' % (i + 1, unit, point))
        temp = _number(point[0], 'fan curve point %d temperature' % (i + 1))
        value = _number(point[1], 'fan curve point %d %s' % (i + 1, unit))
        if not SENSOR_MIN_C <= temp <= SENSOR_MAX_C:
            raise CurveError('fan curve point %d: %g degC is outside the TMP117 range %g..%g degC'
                             % (i + 1, temp, SENSOR_MIN_C, SENSOR_MAX_C))
        if not low <= value <= high:
            raise CurveError('fan curve point %d: %g %s is outside %g..%g %s' % (i + 1, value, unit, low, high, unit))
        if out and temp <= out[-1][0]:
            raise CurveError('fan curve temperatures must rise from point to point: point %d (%g degC) follows %g degC'
                             % (i + 1, temp, out[-1][0]))
        if out and value < out[-1][1]:
            raise CurveError('fan curve outputs must not fall as temperature rises: point %d (%g %s) follows %g %s'
                             % (i + 1, value, unit, out[-1][1], unit))
        out.append((temp, value))
    return out


def interpolate(points, temp):
    """Output at temp: the first point's below the curve, the last one's above, linear in between."""
    if temp <= points[0][0]:
        return points[0][1]
    for (t0, v0), (t1, v1) in zip(points, points[1:]):
        if temp <= t1:
            return v0 + (v1 - v0) * (temp - t0) / (t1 - t0)
    return points[-1][1]


def aggregate(values, how):
    """One temperature from several sensors."""
    values = sorted(values)
    if not values:
        raise ValueError('no temperature to aggregate')
    if how == 'max':
        return values[-1]
    if how == 'mean':
        return sum(values) / len(values)
    if how == 'median':
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2.0
    raise ValueError('aggregate must be one of %s, not %r' % (', '.join(AGGREGATES), how))


class Curve(object):
    """Follows a rising temperature at once; follows a falling one only once it has dropped by more
    than the hysteresis, so a temperature wobbling around a point does not make the fan hunt."""

    def __init__(self, points, hysteresis_c):
        self.points = points
        self.hysteresis_c = hysteresis_c
        self.effective_c = None

    def reset(self):
        self.effective_c = None

    def output(self, temp):
        if self.effective_c is None or temp > self.effective_c:
            self.effective_c = temp
        elif temp < self.effective_c - self.hysteresis_c:
            self.effective_c = temp + self.hysteresis_c
        return interpolate(self.points, self.effective_c)
