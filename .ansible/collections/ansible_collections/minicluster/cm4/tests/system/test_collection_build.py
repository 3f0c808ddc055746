# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The built artifact installs and its modules load from the installed copy."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def test_build_install_and_document(tmp_path):
    subprocess.run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'build', '--output-path', str(tmp_path), REPO],
                   check=True, capture_output=True)
    artifact, = glob.glob(str(tmp_path / 'minicluster-cm4-*.tar.gz'))
    with tarfile.open(artifact) as tar:
        names = tar.getnames()
    assert 'plugins/modules/node_power.py' in names
    assert not [n for n in names if n.startswith(('.venv', '.build', '.git/'))]

    dest = tmp_path / 'installed'
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(dest))
    subprocess.run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'install', '--force', '--no-deps', '-p', str(dest), artifact],
                   check=True, capture_output=True, env=env)
    installed = dest / 'ansible_collections' / 'minicluster' / 'cm4'
    assert (installed / 'plugins' / 'modules' / 'node_power.py').is_file()
    doc = subprocess.run([os.path.join(BIN, 'ansible-doc'), '-t', 'module', 'minicluster.cm4.node_power'],
                         check=True, capture_output=True, text=True, env=env)
    assert str(installed) in doc.stdout and 'boot_mode' in doc.stdout
