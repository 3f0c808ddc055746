# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""flash(): one stream to several targets, bmap ranges only, read-back, and every fault per target."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import subprocess

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.flash import pipeline, writer
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.bmap import parse_bmap
from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.flash import images

KiB = images.KiB
TARGET_SIZE = images.IMAGE_SIZE + 64 * KiB
# Small chunks and windows so that these small images still cross every boundary: several pieces
# per range, several read-back batches per target.
OPTS = dict(chunk_size=64 * KiB, verify_window=128 * KiB)


@pytest.fixture(scope='module')
def image_set(tmp_path_factory):
    directory = tmp_path_factory.mktemp('pipeline')
    raw = images.make_image(str(directory / 'disk.img'))
    out = {'raw': raw, 'bmap': images.bmaptool_create(raw)}
    for fmt in ('xz', 'gzip', 'bzip2', 'zstd'):
        out[fmt] = images.compress(raw, fmt)
    out['bmap13'] = images.write_v1_bmap(raw, str(directory / 'disk.v13.bmap'), version='1.3')
    # Many blocks, as `xz -T0` writes them: decoded on several threads.
    out['xz-blocks'] = str(directory / 'blocks.img.xz')
    with open(out['xz-blocks'], 'wb') as f:
        subprocess.run(['xz', '-T2', '--block-size=128KiB', '-c', raw], stdout=f, check=True)
    return out


@pytest.fixture()
def targets(tmp_path):
    return {name: images.make_target(str(tmp_path / ('%s.emmc' % name)), TARGET_SIZE)
            for name in ('node1', 'node2', 'node3')}


def pristine(path, size=TARGET_SIZE):
    return images.read(path) == bytes([images.PATTERN]) * size


def fd_path(fd):
    return os.readlink('/proc/self/fd/%d' % fd)


def faulty_pwrite(victim, after=0, err=errno.EIO, corrupt=False):
    """os.pwrite, except for the victim: fail with err after `after` writes, or (corrupt) let the
    second write land with one bit flipped, as a device that lies about what it stored."""
    real = os.pwrite
    calls = {'n': 0}

    def pwrite(fd, data, offset):
        if fd_path(fd) != victim:
            return real(fd, data, offset)
        calls['n'] += 1
        if not corrupt and calls['n'] > after:
            raise OSError(err, os.strerror(err))
        n = real(fd, data, offset)
        if corrupt and calls['n'] == 2:
            at = offset + n // 2
            side = os.open(victim, os.O_RDWR)
            try:
                os.pwrite(side, bytes([os.pread(side, 1, at)[0] ^ 0x01]), at)
            finally:
                os.close(side)
        return n
    return pwrite


@pytest.mark.parametrize('fmt', ('raw', 'xz', 'xz-blocks', 'gzip', 'bzip2', 'zstd'))
def test_every_format_with_bmap(image_set, targets, fmt):
    bmap = parse_bmap(image_set['bmap'])
    results = pipeline.flash(image_set[fmt], targets, bmap_path=image_set['bmap'], **OPTS)
    content = hashlib.sha256(images.mapped_content(image_set['raw'], bmap)).hexdigest()
    assert results.ok
    assert results.image.format == fmt.split('-')[0]
    assert results.image.content_digest == content
    for name, path in targets.items():
        result = results[name]
        assert (result.ok, result.error, result.stage, result.verified) == (True, None, None, True)
        assert result.bytes_written == result.bytes_verified == bmap.mapped_size
        assert result.content_digest == content
        images.assert_flashed(path, image_set['raw'], bmap)
        assert pipeline.content_digest_of(path, bmap) == content


@pytest.mark.parametrize('fmt', ('xz', 'gzip'))
def test_without_bmap_every_byte_is_written(image_set, targets, fmt):
    # gzip records no expanded size: the image then ends where the stream does.
    want = images.read(image_set['raw'])
    results = pipeline.flash(image_set[fmt], targets, **OPTS)
    assert results.ok
    assert results.image.image_size == images.IMAGE_SIZE
    for path in targets.values():
        got = images.read(path)
        assert got[:images.IMAGE_SIZE] == want
        assert got[images.IMAGE_SIZE:] == bytes([images.PATTERN]) * (TARGET_SIZE - images.IMAGE_SIZE)
    assert results['node1'].content_digest == hashlib.sha256(want).hexdigest()
    assert results['node1'].bytes_written == images.IMAGE_SIZE


def test_bmap_1_3_sha1_ranges(image_set, targets, tmp_path):
    results = pipeline.flash(image_set['xz'], targets, bmap_path=image_set['bmap13'], **OPTS)
    assert results.ok
    images.assert_flashed(targets['node1'], image_set['raw'], parse_bmap(image_set['bmap13']))
    wrong = str(tmp_path / 'wrong.v13.bmap')
    shutil.copy(image_set['bmap13'], wrong)
    bmap = parse_bmap(wrong)
    with open(wrong) as f:
        text = f.read().replace(bmap.ranges[1].checksum, 'e' * 40)
    with open(wrong, 'w') as f:
        f.write(text)
    images.resign(wrong, 'sha1', 'BmapFileSHA1')
    results = pipeline.flash(image_set['xz'], targets, bmap_path=wrong, **OPTS)
    assert not any(r.ok for r in results.values())
    assert all('does not match its bmap' in r.error and 'sha1' in r.error for r in results.values())


def test_too_small_target_is_refused_before_anything_is_written(image_set, targets, tmp_path):
    small = images.make_target(str(tmp_path / 'small.emmc'), images.IMAGE_SIZE - 4096)
    results = pipeline.flash(image_set['xz'], dict(targets, small=small), bmap_path=image_set['bmap'], **OPTS)
    assert results['small'].stage == 'open'
    assert 'the image needs %d' % images.IMAGE_SIZE in results['small'].error
    assert results['small'].bytes_written == 0
    assert pristine(small, images.IMAGE_SIZE - 4096)
    assert all(results[name].ok for name in targets)


def test_too_small_target_found_while_streaming_when_size_is_unknown(image_set, targets, tmp_path):
    small = images.make_target(str(tmp_path / 'small.emmc'), 1024 * KiB)
    results = pipeline.flash(image_set['gzip'], dict(targets, small=small), **OPTS)
    assert results['small'].stage == 'write'
    assert 'runs past the end of the target' in results['small'].error
    assert all(results[name].ok for name in targets)


def test_missing_target_and_wrong_kind(image_set, targets, tmp_path):
    absent = str(tmp_path / 'absent.emmc')
    results = pipeline.flash(image_set['xz'], dict(targets, absent=absent, folder=str(tmp_path)),
                             bmap_path=image_set['bmap'], **OPTS)
    assert results['absent'].stage == 'open' and 'No such file' in results['absent'].error
    assert not os.path.exists(absent), 'a missing target must not be created'
    assert 'not a block device or regular file' in results['folder'].error
    assert all(results[name].ok for name in targets)


@pytest.mark.parametrize('err, after', [(errno.EIO, 0), (errno.EIO, 4), (errno.ENOSPC, 2)])
def test_failing_target_leaves_the_others_alone(image_set, targets, monkeypatch, err, after):
    bmap = parse_bmap(image_set['bmap'])
    monkeypatch.setattr(writer, '_pwrite', faulty_pwrite(targets['node2'], after=after, err=err))
    results = pipeline.flash(image_set['xz-blocks'], targets, bmap_path=image_set['bmap'], **OPTS)
    bad = results['node2']
    assert (bad.ok, bad.stage, bad.verified, bad.content_digest) == (False, 'write', False, None)
    assert os.strerror(err) in bad.error and targets['node2'] in bad.error
    assert bad.bytes_written == after * OPTS['chunk_size'] or bad.bytes_written < bmap.mapped_size
    for name in ('node1', 'node3'):
        assert results[name].ok and results[name].verified
        images.assert_flashed(targets[name], image_set['raw'], bmap)


def test_verification_catches_silent_corruption(image_set, targets, monkeypatch):
    bmap = parse_bmap(image_set['bmap'])
    monkeypatch.setattr(writer, '_pwrite', faulty_pwrite(targets['node3'], corrupt=True))
    results = pipeline.flash(image_set['xz'], targets, bmap_path=image_set['bmap'], **OPTS)
    bad = results['node3']
    assert (bad.ok, bad.stage, bad.verified) == (False, 'verify', False)
    assert 'does not match the image' in bad.error
    assert bad.bytes_verified < bmap.mapped_size    # writing stops once read-back has failed
    assert results['node1'].ok and results['node2'].ok


def test_without_verification_nothing_is_read_back(image_set, targets, monkeypatch):
    monkeypatch.setattr(writer, '_pwrite', faulty_pwrite(targets['node3'], corrupt=True))
    results = pipeline.flash(image_set['xz'], targets, bmap_path=image_set['bmap'], verify=False, **OPTS)
    assert all(r.ok and not r.verified and r.bytes_verified == 0 for r in results.values())


@pytest.mark.parametrize('style', ('mapping', 'callable'))
def test_disk_gone_mid_write(image_set, targets, style):
    calls = {'n': 0}

    def node1_alive():
        calls['n'] += 1
        return calls['n'] <= 3
    if style == 'mapping':
        alive = {'node1': node1_alive}
    else:
        def alive(name):
            return node1_alive() if name == 'node1' else True
    results = pipeline.flash(image_set['xz'], targets, bmap_path=image_set['bmap'], alive=alive, **OPTS)
    assert results['node1'].stage == 'write'
    assert 'disk is gone' in results['node1'].error
    assert results['node1'].bytes_written == 3 * OPTS['chunk_size'] or results['node1'].bytes_written > 0
    assert results['node2'].ok and results['node3'].ok


def test_source_sha256_checked_before_anything_is_written(image_set, targets):
    good = hashlib.sha256(images.read(image_set['xz'])).hexdigest()
    assert pipeline.flash(image_set['xz'], targets, bmap_path=image_set['bmap'], sha256=good, **OPTS).ok
    for path in targets.values():
        images.make_target(path, TARGET_SIZE)
    results = pipeline.flash(image_set['xz'], targets, bmap_path=image_set['bmap'], sha256='1' * 64, **OPTS)
    for name, path in targets.items():
        assert results[name].stage == 'source'
        assert 'SHA-256 of image' in results[name].error and 'nothing written' in results[name].error
        assert pristine(path)


def test_source_changing_during_the_run_fails_every_target(image_set, targets, monkeypatch):
    # The up-front check passes (stubbed here, as if the file changed just after it); the stream's
    # own hash then disagrees at the end and no target is reported good.
    monkeypatch.setattr(pipeline, 'verify_sha256', lambda path, expected: None)
    results = pipeline.flash(image_set['xz'], targets, bmap_path=image_set['bmap'], sha256='2' * 64, **OPTS)
    for result in results.values():
        assert not result.ok and result.stage == 'source'
        assert 'SHA-256 of image' in result.error and 'partly written' in result.error


def test_corrupt_and_truncated_images_fail_every_target(image_set, targets, tmp_path):
    data = bytearray(images.read(image_set['xz']))
    for at in range(len(data) // 2, len(data) // 2 + 32):
        data[at] ^= 0xFF
    corrupt = tmp_path / 'corrupt.img.xz'
    corrupt.write_bytes(bytes(data))
    # LZMA may decode damaged input into wrong bytes before its CRC64 at the end of the block
    # notices: then the bmap's range checksum is what stops the stream.
    results = pipeline.flash(str(corrupt), targets, bmap_path=image_set['bmap'], **OPTS)
    assert 'xz stream' in results.image.error or 'does not match its bmap' in results.image.error
    assert all(r.stage == 'source' and r.error.startswith(results.image.error) for r in results.values())
    results = pipeline.flash(str(corrupt), targets, **OPTS)
    assert all(r.stage == 'source' and 'corrupt xz stream' in r.error for r in results.values())
    truncated = tmp_path / 'cut.img.gz'
    truncated.write_bytes(images.read(image_set['gzip'])[:-100])
    results = pipeline.flash(str(truncated), targets, bmap_path=image_set['bmap'], **OPTS)
    assert all('truncated gzip stream' in r.error for r in results.values())


def test_missing_image(targets, tmp_path):
    results = pipeline.flash(str(tmp_path / 'absent.img.xz'), targets, **OPTS)
    assert all(r.stage == 'source' and 'cannot open image' in r.error for r in results.values())
    assert all(pristine(path) for path in targets.values())


def test_bmap_range_checksum_mismatch_stops_every_target(image_set, targets, tmp_path):
    wrong = str(tmp_path / 'wrong.bmap')
    shutil.copy(image_set['bmap'], wrong)
    first = parse_bmap(wrong).ranges[0]
    with open(wrong) as f:
        text = f.read().replace(first.checksum, 'a' * 64)
    with open(wrong, 'w') as f:
        f.write(text)
    images.resign(wrong)
    results = pipeline.flash(image_set['xz'], targets, bmap_path=wrong, **OPTS)
    for result in results.values():
        assert not result.ok and result.stage == 'source'
        assert 'image does not match its bmap: bytes 0-' in result.error
    assert results.image.content_digest is None


def test_damaged_bmap_is_refused_before_anything_is_written(image_set, targets, tmp_path):
    damaged = str(tmp_path / 'damaged.bmap')
    with open(image_set['bmap']) as f:
        text = f.read()
    with open(damaged, 'w') as f:
        f.write(text.replace('<BlockMap>', '<BlockMap>\n', 1))
    results = pipeline.flash(image_set['xz'], targets, bmap_path=damaged, **OPTS)
    assert all('damaged or was edited' in r.error and r.bytes_written == 0 for r in results.values())
    assert all(pristine(path) for path in targets.values())


def test_bmap_of_another_image(image_set, targets, tmp_path):
    other = images.make_image(str(tmp_path / 'other.img'), size=images.IMAGE_SIZE + 8192)
    other_bmap = images.bmaptool_create(other)
    # xz records its expanded size: refused before writing.
    results = pipeline.flash(image_set['xz'], targets, bmap_path=other_bmap, **OPTS)
    assert all('describes a %d-byte image' % (images.IMAGE_SIZE + 8192) in r.error for r in results.values())
    assert all(pristine(path) for path in targets.values())
    # gzip does not: found when the stream ends early, and nothing is reported good.
    results = pipeline.flash(image_set['gzip'], targets, bmap_path=other_bmap, **OPTS)
    assert all(not r.ok and 'does not belong to this image' in r.error for r in results.values())


def test_progress(image_set, targets, monkeypatch):
    monkeypatch.setattr(pipeline, 'PROGRESS_STEP', 256 * KiB)
    calls = []
    bmap = parse_bmap(image_set['bmap'])
    results = pipeline.flash(image_set['xz'], targets, bmap_path=image_set['bmap'],
                             progress=lambda *args: calls.append(args), **OPTS)
    assert results.ok
    for name in targets:
        done = [d for n, d, t in calls if n == name]
        assert done == sorted(done) and len(done) >= 2
        assert done[-1] == bmap.mapped_size
    assert {call[2] for call in calls} == {bmap.mapped_size}


def test_progress_errors_do_not_break_the_flash(image_set, targets):
    def broken(*args):
        raise RuntimeError('display gone')
    assert pipeline.flash(image_set['xz'], targets, bmap_path=image_set['bmap'], progress=broken, **OPTS).ok


def test_sparse_skips_zero_chunks_and_still_verifies(image_set, tmp_path):
    bmap = parse_bmap(image_set['bmap'])
    clean = str(tmp_path / 'clean.emmc')
    with open(clean, 'wb') as f:
        f.truncate(TARGET_SIZE)
    dirty = images.make_target(str(tmp_path / 'dirty.emmc'), TARGET_SIZE)
    results = pipeline.flash(image_set['xz'], {'clean': clean, 'dirty': dirty},
                             bmap_path=image_set['bmap'], sparse=True, **OPTS)
    assert results['clean'].ok and results['clean'].bytes_written < bmap.mapped_size
    assert results['clean'].bytes_verified == bmap.mapped_size
    assert results['dirty'].stage == 'verify'


def test_read_back_without_o_direct(image_set, targets, monkeypatch):
    # A file system that opens with O_DIRECT but refuses the reads (as some FUSE ones do).
    real = os.preadv
    refused = []

    def preadv(fd, buffers, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(fd)
            raise OSError(errno.EINVAL, 'Invalid argument')
        return real(fd, buffers, offset)
    monkeypatch.setattr(writer, '_preadv', preadv)
    results = pipeline.flash(image_set['xz'], targets, bmap_path=image_set['bmap'], **OPTS)
    assert refused
    assert results.ok and all(r.verified for r in results.values())


def test_image_identity(image_set):
    identity = pipeline.image_identity(image_set['xz'], image_set['bmap'])
    assert identity['source_sha256'] == hashlib.sha256(images.read(image_set['xz'])).hexdigest()
    assert identity['bmap_sha256'] == hashlib.sha256(images.read(image_set['bmap'])).hexdigest()
    assert identity['source_size'] == os.path.getsize(image_set['xz'])
    assert pipeline.image_identity(image_set['xz'])['bmap_sha256'] is None


def test_bad_arguments(image_set, targets):
    with pytest.raises(ValueError):
        pipeline.flash(image_set['xz'], {})
    with pytest.raises(ValueError):
        pipeline.flash(image_set['xz'], targets, chunk_size=1000)
    with pytest.raises(ValueError):
        pipeline.flash(image_set['xz'], targets, sha256='md5:abc')
    with pytest.raises(ValueError):
        pipeline.content_digest_of(targets['node1'])


def test_results_are_plain_data(image_set, targets):
    results = pipeline.flash(image_set['raw'], targets, bmap_path=image_set['bmap'], **OPTS)
    row = results['node1'].as_dict()
    assert set(row) >= {'ok', 'error', 'bytes_written', 'verified', 'content_digest', 'seconds'}
    assert row['seconds'] > 0
    assert results.image.as_dict()['mapped_size'] == parse_bmap(image_set['bmap']).mapped_size


def direct(fd):
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


def test_aligned_pieces_bypass_the_page_cache(image_set, targets, monkeypatch):
    real = os.pwrite
    written = {True: 0, False: 0}

    def pwrite(fd, data, offset):
        n = real(fd, data, offset)
        written[direct(fd)] += n
        return n
    monkeypatch.setattr(writer, '_pwrite', pwrite)
    bmap = parse_bmap(image_set['bmap'])
    assert pipeline.flash(image_set['xz'], targets, bmap_path=image_set['bmap'], **OPTS).ok
    # Only the image's partial last block is not 4 KiB-aligned.
    tail = images.IMAGE_SIZE % 4096
    assert written == {True: 3 * (bmap.mapped_size - tail), False: 3 * tail}


def test_writes_where_o_direct_is_refused(image_set, targets, monkeypatch):
    real = os.pwrite

    def pwrite(fd, data, offset):
        if direct(fd):
            raise OSError(errno.EINVAL, 'Invalid argument')
        return real(fd, data, offset)
    monkeypatch.setattr(writer, '_pwrite', pwrite)
    bmap = parse_bmap(image_set['bmap'])
    results = pipeline.flash(image_set['xz'], targets, bmap_path=image_set['bmap'], **OPTS)
    assert results.ok and all(r.verified for r in results.values())
    for path in targets.values():
        images.assert_flashed(path, image_set['raw'], bmap)


def test_the_same_target_twice_is_refused(image_set, targets, tmp_path):
    link = str(tmp_path / 'alias.emmc')
    os.symlink(targets['node1'], link)
    results = pipeline.flash(image_set['xz'], dict(targets, alias=link), bmap_path=image_set['bmap'], **OPTS)
    assert results['alias'].stage == 'open' and 'same device as target node1' in results['alias'].error
    assert all(results[name].ok for name in targets)


def test_when_every_target_fails_the_stream_stops(image_set, targets, monkeypatch):
    def pwrite(fd, data, offset):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(writer, '_pwrite', pwrite)
    results = pipeline.flash(image_set['xz'], targets, bmap_path=image_set['bmap'], **OPTS)
    assert all(r.stage == 'write' for r in results.values())
    assert results.image.content_digest is None


@pytest.fixture()
def loop_device(tmp_path):
    """A real block device backed by a pattern-filled file, where the machine allows it (root)."""
    if os.geteuid() != 0 or not shutil.which('losetup'):
        pytest.skip('loop devices need root and losetup')
    backing = images.make_target(str(tmp_path / 'loop.img'), TARGET_SIZE + (-TARGET_SIZE % 4096))
    run = subprocess.run(['losetup', '--find', '--show', backing], capture_output=True, text=True, check=False)
    if run.returncode:
        pytest.skip('no loop device: %s' % run.stderr.strip())
    device = run.stdout.strip()
    try:
        yield device, backing
    finally:
        subprocess.run(['losetup', '-d', device], check=False)


def test_block_device_target(image_set, targets, loop_device):
    device, backing = loop_device
    bmap = parse_bmap(image_set['bmap'])
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert writer.device_size(fd) == os.path.getsize(backing)
    finally:
        os.close(fd)
    results = pipeline.flash(image_set['xz'], dict(targets, loop=device), bmap_path=image_set['bmap'], **OPTS)
    assert results.ok and results['loop'].verified
    subprocess.run(['losetup', '-d', device], check=False)
    images.assert_flashed(backing, image_set['raw'], bmap)


def test_block_device_in_use_is_refused(image_set, loop_device):
    device, backing = loop_device
    holder = os.open(device, os.O_RDONLY | os.O_EXCL)    # as a mount would claim it
    try:
        results = pipeline.flash(image_set['xz'], {'loop': device}, bmap_path=image_set['bmap'], **OPTS)
    finally:
        os.close(holder)
    assert results['loop'].stage == 'open' and 'in use' in results['loop'].error
    assert images.read(backing) == bytes([images.PATTERN]) * os.path.getsize(backing)
