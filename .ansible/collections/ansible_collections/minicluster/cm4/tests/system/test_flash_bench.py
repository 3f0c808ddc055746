# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""`make bench` in miniature: a tiny image through all three methods, and the summary line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAST_LINE = re.compile(r'^flash-bench ours/dd=\d+\.\d\d ours/bmaptool=\d+\.\d\d '
                       r'written/mapped=(\d+\.\d\d) verified=(\d)/4$')


@pytest.mark.skipif(not all(shutil.which(t) for t in ('xz', 'dd', 'bmaptool')),
                    reason='needs xz, dd and bmaptool')
def test_flash_bench_tiny(tmp_path):
    # Ratios at this size measure start-up costs, not flashing; only the shape is checked.
    run = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'flash_bench.py'), '--size', '8M',
                          '--emmc-size', '16M', '--methods', 'ours,dd,bmaptool', '--dir', str(tmp_path)],
                         check=True, capture_output=True, text=True, timeout=300)
    lines = run.stdout.strip().splitlines()
    match = LAST_LINE.match(lines[-1])
    assert match, lines[-1]
    assert match.groups() == ('1.00', '4')
    assert [line.split()[0] for line in lines if re.match(r'^(ours|dd|bmaptool) +wall', line)] == \
        ['ours', 'dd', 'bmaptool']
    assert not os.path.exists(tmp_path / 'targets')
