# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json
import os

from ansible_collections.minicluster.cm4.plugins.module_utils.flash import record


def test_records_round_trip_and_forget(tmp_path):
    records = record.FlashRecords(str(tmp_path))
    assert records.load(1) is None
    saved = records.save(1, record.wanted('sha256:a', None, 'sha256:f'))
    assert saved['node'] == 1 and saved['when'].endswith('Z')
    assert records.load(1) == saved
    assert os.path.exists(tmp_path / 'flash' / 'node1.json')
    assert records.forget(1) is True
    assert records.forget(1) is False
    assert records.load(1) is None


def test_unreadable_record_counts_as_none(tmp_path):
    records = record.FlashRecords(str(tmp_path))
    os.makedirs(tmp_path / 'flash')
    (tmp_path / 'flash' / 'node2.json').write_text('{not json')
    assert records.load(2) is None
    (tmp_path / 'flash' / 'node2.json').write_text('[1, 2]')
    assert records.load(2) is None


def test_differences():
    want = record.wanted('sha256:a', 'sha256:b', None)
    assert record.differences(None, want) == ['no record']
    assert record.differences(dict(want, when='x'), want) == []
    assert record.differences(dict(want, image_digest='sha256:z'), want) == ['image_digest']
    assert record.differences(dict(want, bmap_digest=None, firstboot_digest='sha256:f'), want) == \
        ['bmap_digest', 'firstboot_digest']


def test_progress_file_throttles_and_summarises(tmp_path):
    now = [100.0]
    path = str(tmp_path / 'p' / 'progress.json')
    progress = record.ProgressFile(path, [1, 3], run_id='r1', min_interval=1.0, clock=lambda: now[0])
    progress.phase(1, 'writing')
    progress.bytes(1, 1048576, 4194304)
    data = json.load(open(path))
    assert data['nodes']['1']['bytes_done'] == 0, 'a byte count within min_interval must not be written'
    now[0] += 2
    progress.bytes(3, 2097152, 4194304)
    data = json.load(open(path))
    assert data['nodes']['1']['percent'] == 25.0
    assert data['summary'] == 'node1 writing 1.0/4.0 MiB 25% | node3 queued 2.0/4.0 MiB 50%'
    now[0] += 2
    progress.bytes(1, 3145728, 4194304)
    data = json.load(open(path))
    # 3 MiB in the 4 s since node 1's first bytes: 0.8 MB/s, the last MiB in about a second.
    assert data['nodes']['1']['mb_per_s'] == 0.8 and data['nodes']['1']['eta_seconds'] == 1
    assert data['summary'].startswith('node1 writing 3.0/4.0 MiB 75% 0.8 MB/s | ')
    progress.phase(3, 'failed', error='node3: gone')
    progress.finish(False)
    data = json.load(open(path))
    assert data['finished'] is True and data['ok'] is False
    assert data['nodes']['3']['error'] == 'node3: gone'
    assert data['run'] == 'r1' and data['pid'] == os.getpid()


def test_progress_never_fails_a_flash(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    progress = record.ProgressFile(str(blocker / 'progress.json'), [1])
    progress.phase(1, 'writing')
    progress.finish(True)
