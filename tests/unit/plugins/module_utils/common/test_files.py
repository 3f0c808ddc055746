# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

import json
import multiprocessing
import os
import stat

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.common import files
from ansible_collections.minicluster.cm4.plugins.module_utils.transports.lock import DeviceLock


def _take_lock(path, barrier):
    barrier.wait()
    lock = DeviceLock(path, timeout=30)
    lock.acquire()
    lock.release()


def test_processes_creating_the_lock_directory_at_once_all_get_the_lock(tmp_path):
    """Every process finds the lock directory absent and creates it; none may fail because another won."""
    ctx = multiprocessing.get_context('fork')
    for round_ in range(5):
        path = str(tmp_path / str(round_) / 'a' / 'b' / 'hat0.lock')
        barrier = ctx.Barrier(6)
        procs = [ctx.Process(target=_take_lock, args=(path, barrier)) for dummy in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6


def test_ensure_dir_accepts_an_existing_directory_and_refuses_a_file(tmp_path):
    assert files.ensure_dir(str(tmp_path / 'x' / 'y')) == str(tmp_path / 'x' / 'y')
    files.ensure_dir(str(tmp_path / 'x' / 'y'))
    (tmp_path / 'f').write_text('')
    with pytest.raises(OSError):
        files.ensure_dir(str(tmp_path / 'f'))


def test_atomic_write_replaces_whole_with_mode_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'd' / 'state.json'
    files.atomic_write_json(str(path), {'b': 1, 'a': [1, 2]}, mode=0o600)
    assert json.loads(path.read_text()) == {'a': [1, 2], 'b': 1}
    assert path.read_text().endswith('\n')
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    files.atomic_write(str(path), b'\x00\x01')
    assert path.read_bytes() == b'\x00\x01'
    assert os.listdir(str(tmp_path / 'd')) == ['state.json']


def test_atomic_write_that_fails_keeps_the_old_file(tmp_path):
    path = tmp_path / 'state.json'
    path.write_text('old')
    with pytest.raises(TypeError):
        files.atomic_write_json(str(path), {'x': object()})
    with pytest.raises(TypeError):
        files.atomic_write(str(path), 12)
    assert path.read_text() == 'old'
    assert os.listdir(str(tmp_path)) == ['state.json']
