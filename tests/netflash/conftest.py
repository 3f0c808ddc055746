# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the network flash: the payload (built once per pins, cached under .build) and a
small image with SHA-256 ranges."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The system tests' module runner (moduletest), shared rather than copied.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'system'))

from netflash_helpers import REPO, Image, payload_build  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line('markers', 'qemu_many: slower QEMU guest runs, `make netflash-qemu`')


@pytest.fixture(scope='session')
def qemu_payload():
    return payload_build.build('qemu', log=lambda m: print(m, file=sys.stderr))


@pytest.fixture(scope='session')
def cm4_payload():
    return payload_build.build('cm4', log=lambda m: print(m, file=sys.stderr))


@pytest.fixture
def image(tmp_path):
    return Image(str(tmp_path))


@pytest.fixture(scope='session')
def node_image(tmp_path_factory):
    """A small Raspberry Pi OS shaped image (tools/mkimage.py) with its .xz and bmap: the path of the raw."""
    path = str(tmp_path_factory.mktemp('img') / 'node.img')
    subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'mkimage.py'), '-o', path, '--compress', 'xz',
                    '--size-mib', '40', '--boot-mib', '16', '--kernel-kib', '256', '--payload-kib', '512',
                    '--text-kib', '256'], check=True, stdout=subprocess.DEVNULL)
    return path
