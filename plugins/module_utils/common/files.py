# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""State files shared by processes that run at the same time (modules, the telemetry service).

Two processes may create the same directory at once, and a reader must never see half a file:
ensure_dir tolerates the other creator, atomic_write replaces a file whole or not at all.
"""

from __future__ import annotations

import json
import os
import tempfile


def ensure_dir(path, mode=0o755):
    """Create path and its parents unless present; another process creating it first is fine."""
    if path:
        os.makedirs(path, mode, exist_ok=True)
    return path


def atomic_write(path, data, mode=0o644, sync=True):
    """Replace path with data (bytes or str) by a rename within its directory, which is created if absent."""
    directory = ensure_dir(os.path.dirname(os.path.abspath(path)))
    if isinstance(data, str):
        data = data.encode('utf-8')
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.%s.' % os.path.basename(path), suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path, data, mode=0o644, sync=True, indent=1):
    """atomic_write of data as JSON with sorted keys and a final newline."""
    return atomic_write(path, json.dumps(data, indent=indent, sort_keys=True) + '\n', mode=mode, sync=sync)
