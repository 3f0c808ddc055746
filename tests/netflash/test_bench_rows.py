# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""`make bench`'s usb and network rows in miniature: the rows appear, the USB-shaped run writes
and verifies all four targets, the network row names its bound, and the last line ends with
network/usb. At this size the ratio measures fixed costs (payload, boot), so only its form is
checked."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from netflash_helpers import REPO


@pytest.mark.skipif(not all(shutil.which(t) for t in ('xz', 'bmaptool')), reason='needs xz and bmaptool')
def test_bench_usb_and_network_rows(tmp_path):
    run = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'flash_bench.py'), '--size', '8M',
                          '--emmc-size', '16M', '--methods', 'ours,usb,network', '--usb-rate', '400',
                          '--node-boot', '0', '--payload-size', '1M', '--dir', str(tmp_path)],
                         check=True, capture_output=True, text=True, timeout=300)
    lines = run.stdout.strip().splitlines()
    assert re.match(r'^flash-bench ours/dd=n/a ours/bmaptool=n/a written/mapped=1\.00 verified=4/4 '
                    r'network/usb=\d+\.\d\d$', lines[-1]), lines[-1]
    usb = [line for line in lines if line.startswith('usb ')]
    assert len(usb) == 1 and 'verified 4/4' in usb[0] and 'behind one 400 MB/s link' in usb[0]
    net = [line for line in lines if line.startswith('network ')]
    assert len(net) == 1 and re.search(r'bound: (link|decoder|emmc write|controller serving);', net[0]), net


def test_bench_refuses_a_rate_that_is_not_finite(tmp_path):
    run = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'flash_bench.py'), '--usb-rate', 'inf',
                          '--dir', str(tmp_path)], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2 and '--usb-rate must be a positive finite number' in run.stderr
