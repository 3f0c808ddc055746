# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make an airgap bundle for tests: the K3s double as `k3s-arm64`, a small images tarball, an
install-script stand-in and a csi-driver-nfs-shaped chart, with the SHA-256 of each.

    python -m doubles.k3s.bundle --dir DIR [--version v1.31.4+k3s1]   # prints the variables as JSON

Also: `install_python_libs(root)` puts the pure-Python PyYAML the double needs into a test node's
root filesystem (the double is a Python program; the real k3s is a static binary).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import yaml
import zstandard

HERE = Path(__file__).resolve().parent
DOUBLE = HERE / 'k3s'
FILES = {'binary': 'k3s-arm64', 'images': 'k3s-airgap-images-arm64.tar.zst', 'install_script': 'install.sh'}
CHART = 'csi-driver-nfs-v4.11.0.tgz'


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make(directory, version='v1.31.4+k3s1') -> dict:
    """Write the bundle into `directory`; return the role variables that describe it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    source = DOUBLE.read_text()
    stamped, count = re.subn(r"^VERSION = '[^']*'$", "VERSION = '%s'" % version, source, flags=re.M)
    assert count == 1, 'the double has no VERSION line'
    # A node has python3 and no `python`; the source keeps the shebang ansible-test allows.
    stamped = re.sub(r'\A#!.*\n', '#!/usr/bin/python3\n', stamped)
    binary = directory / FILES['binary']
    binary.write_text(stamped)
    binary.chmod(0o755)
    images = _tar({'manifest.json': json.dumps([{'RepoTags': ['docker.io/rancher/mirrored-pause:3.6']}]).encode()})
    (directory / FILES['images']).write_bytes(zstandard.ZstdCompressor().compress(images))
    (directory / FILES['install_script']).write_text('#!/bin/sh\n# stand-in for get.k3s.io in tests; never run\nexit 1\n')
    chart_yaml = yaml.safe_dump({'apiVersion': 'v2', 'name': 'csi-driver-nfs', 'version': 'v4.11.0'}).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode='w:gz') as tar:
        for name, data in (('csi-driver-nfs/Chart.yaml', chart_yaml), ('csi-driver-nfs/values.yaml', b'{}\n')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (directory / CHART).write_bytes(raw.getvalue())
    return {
        'k3s_bundle_dir': str(directory),
        'k3s_bundle_files': dict(FILES),
        'k3s_bundle_sha256': {name: _sha256(directory / name) for name in list(FILES.values()) + [CHART]},
        'k3s_storage_chart': CHART,
        'k3s_storage_chart_sha256': _sha256(directory / CHART),
    }


def install_python_libs(root) -> None:
    """Copy PyYAML (its pure Python part) into a test node's /usr/local/lib/python3.X/dist-packages."""
    versions = sorted(p.name for p in (Path(root) / 'usr/lib').glob('python3.*') if p.name[len('python3.'):].isdigit())
    if not versions:
        raise RuntimeError('no python3.X under %s/usr/lib' % root)
    target = Path(root) / 'usr/local/lib' / versions[-1] / 'dist-packages/yaml'
    if target.exists():
        return
    shutil.copytree(Path(yaml.__file__).parent, target, ignore=shutil.ignore_patterns('*.so', '__pycache__'))
    os.chmod(target, 0o755)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m doubles.k3s.bundle', description=__doc__.splitlines()[0])
    parser.add_argument('--dir', required=True)
    parser.add_argument('--version', default='v1.31.4+k3s1')
    parser.add_argument('--node-root', action='append', default=[], help='a test node root to give PyYAML')
    args = parser.parse_args(argv)
    for root in args.node_root:
        install_python_libs(root)
    print(json.dumps(make(args.dir, args.version), indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
