# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.board import calibration


def test_fit_step_recovers_the_gain():
    # Input current = 600 mA of everything else + 1.8 mA per unit of this node.
    off = [(12.0, 600.0 + 1.8 * 12.0), (12.4, 600.0 + 1.8 * 12.4)]
    on = [(380.0, 600.0 + 1.8 * 380.0), (376.0, 600.0 + 1.8 * 376.0)]
    entry = calibration.fit_step(2, off, on)
    assert entry['ma_per_unit'] == pytest.approx(1.8)
    assert entry['baseline_units'] == pytest.approx(12.2)
    assert entry['samples'] == 4


def test_fit_step_refuses_an_empty_slot():
    with pytest.raises(calibration.CalibrationError, match='node 3: .* is a card in slot 3'):
        calibration.fit_step(3, [(0.2, 600.0)], [(0.3, 600.5)])


def test_fit_step_refuses_an_implausible_ratio():
    # The input current fell while the node rose: another load changed meanwhile.
    with pytest.raises(calibration.CalibrationError, match='outside'):
        calibration.fit_step(1, [(1.0, 900.0)], [(400.0, 700.0)])


def test_save_merges_and_load_reads(tmp_path):
    state = str(tmp_path / 'state')
    assert calibration.load(state) == {}
    calibration.save(state, 'hat0', {1: {'ma_per_unit': 1.5, 'baseline_units': 2.0}})
    calibration.save(state, 'hat0', {2: {'ma_per_unit': 2.5, 'baseline_units': 3.0}})
    got = calibration.load(state)
    assert sorted(got) == [1, 2]
    assert got[1]['ma_per_unit'] == 1.5 and got[2]['baseline_units'] == 3.0
    assert os.listdir(state) == ['minicluster-cm4.hat0.calibration.json']
    # Another hat on the same controller has its own.
    assert calibration.load(state, 'hat1') == {}


@pytest.mark.parametrize('content', ['not json', '[]', '{"version": 9, "nodes": {}}',
                                     '{"version": 1, "nodes": {"5": {"ma_per_unit": 1}}}',
                                     '{"version": 1, "nodes": {"1": {"ma_per_unit": -1}}}',
                                     '{"version": 1, "nodes": {"1": {"ma_per_unit": "NaN"}}}'])
def test_load_refuses_what_it_did_not_write(tmp_path, content):
    path = calibration.calibration_path(str(tmp_path))
    with open(path, 'w') as f:
        f.write(content)
    with pytest.raises(calibration.CalibrationError, match='calibration'):
        calibration.load(str(tmp_path))


def test_save_refuses_invalid_entries(tmp_path):
    with pytest.raises(calibration.CalibrationError):
        calibration.save(str(tmp_path), 'hat0', {1: {'ma_per_unit': float('inf')}})
    assert not os.listdir(str(tmp_path))


def test_hat_name_is_checked(tmp_path):
    with pytest.raises(ValueError, match='hat name'):
        calibration.calibration_path(str(tmp_path), '../etc')
