# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.telemetry import curve

POINTS = [(30.0, 1000.0), (50.0, 3000.0), (70.0, 5000.0)]


@pytest.mark.parametrize('temp, rpm', [(-10, 1000), (30, 1000), (40, 2000), (45, 2500), (50, 3000), (65, 4500),
                                       (70, 5000), (120, 5000)])
def test_interpolates_between_points_and_holds_the_ends(temp, rpm):
    assert curve.interpolate(POINTS, temp) == pytest.approx(rpm)


def test_hysteresis_follows_a_rise_at_once_and_a_fall_only_past_the_band():
    c = curve.Curve(POINTS, 2.0)
    assert c.output(40.0) == pytest.approx(2000)
    assert c.output(45.0) == pytest.approx(2500)      # rising: at once
    assert c.output(43.5) == pytest.approx(2500)      # within 2 degC below: holds
    assert c.output(43.0) == pytest.approx(2500)      # exactly at the edge: holds
    assert c.output(42.0) == pytest.approx(2400)      # past the band: follows, 2 degC above the reading
    assert c.output(41.0) == pytest.approx(2300)      # still falling: follows, 2 degC behind
    assert c.output(42.5) == pytest.approx(2300)      # a small rise inside the band: holds
    assert c.output(44.5) == pytest.approx(2450)      # rising again: at once
    c.reset()
    assert c.output(35.0) == pytest.approx(1500)


@pytest.mark.parametrize('points, message', [
    ([[30, 1000]], 'at least two'),
    ([], 'at least two'),
    ('30:1000,40:2000', 'at least two'),
    ([[30, 1000], [30, 2000]], 'temperatures must rise'),
    ([[40, 1000], [30, 2000]], 'temperatures must rise'),
    ([[30, 3000], [40, 2000]], 'outputs must not fall'),
    ([[30, 1000], [160, 2000]], 'outside the TMP117 range -55..150 degC'),
    ([[-60, 1000], [40, 2000]], 'outside the TMP117 range'),
    ([[30, 100], [40, 2000]], 'point 1: 100 RPM is outside 500..16000 RPM'),
    ([[30, float('nan')], [40, 2000]], 'finite number'),
    ([[30, True], [40, 2000]], 'finite number'),
    ([[30, 1000, 5], [40, 2000]], 'must be [temperature_c, RPM]'),
])
def test_bad_curves_are_refused(points, message):
    with pytest.raises(curve.CurveError, match=None) as info:
        curve.check_points(points, 500, 16000, 'RPM')
    assert message in str(info.value)


def test_aggregates():
    assert curve.aggregate([40.0, 55.5, 41.0], 'max') == 55.5
    assert curve.aggregate([40.0, 50.0, 60.0, 10.0], 'mean') == 40.0
    assert curve.aggregate([40.0, 50.0, 60.0, 10.0], 'median') == 45.0
    with pytest.raises(ValueError):
        curve.aggregate([], 'max')
