# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures shared by the system tests."""

from __future__ import annotations

import pytest

from moduletest import start_sim, stop_sim


@pytest.fixture
def hat(tmp_path):
    """The directory of a simulated hat with default options, stopped after the test.

    Modules that need the simulator's richer handle (hatsim.testing) define their own `hat`.
    """
    directory = tmp_path / 'hat'
    start_sim(directory)
    try:
        yield directory
    finally:
        stop_sim(directory)
