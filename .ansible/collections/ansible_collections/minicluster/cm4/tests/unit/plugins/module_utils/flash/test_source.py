# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Image sources made by the real compressors: formats, concatenation, damage, SHA-256."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.flash import source
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.errors import ChecksumError, SourceError
from ansible_collections.minicluster.cm4.tests.unit.plugins.module_utils.flash import images

FORMATS = ('xz', 'gzip', 'bzip2', 'zstd')


@pytest.fixture(scope='module')
def image_set(tmp_path_factory):
    directory = tmp_path_factory.mktemp('sources')
    raw = images.make_image(str(directory / 'disk.img'))
    out = {'raw': raw}
    for fmt in FORMATS:
        out[fmt] = images.compress(raw, fmt)
    return out


def read_all(path, n=65536, **kwargs):
    with source.open_image(path, **kwargs) as reader:
        parts = []
        while True:
            chunk = reader.read(n)
            if not chunk:
                return b''.join(parts), reader
            parts.append(chunk)


def damaged(tmp_path, path, name, edit):
    data = bytearray(images.read(path))
    data = edit(data)
    out = str(tmp_path / name)
    with open(out, 'wb') as f:
        f.write(data)
    return out


@pytest.mark.parametrize('fmt', ('raw',) + FORMATS)
def test_every_format_streams_the_image(image_set, fmt):
    data, reader = read_all(image_set[fmt], n=100000)
    assert data == images.read(image_set['raw'])
    assert reader.format == fmt
    assert reader.position == images.IMAGE_SIZE


@pytest.mark.parametrize('fmt', ('raw',) + FORMATS)
def test_read_returns_exactly_n_until_the_end(image_set, fmt):
    with source.open_image(image_set[fmt]) as reader:
        sizes = []
        while True:
            chunk = reader.read(300000)
            if not chunk:
                break
            sizes.append(len(chunk))
    assert sizes[:-1] == [300000] * (len(sizes) - 1)
    assert sum(sizes) == images.IMAGE_SIZE


def test_format_comes_from_magic_bytes_not_the_name(image_set, tmp_path):
    disguised = str(tmp_path / 'disk.img')
    shutil.copy(image_set['gzip'], disguised)
    assert source.detect_format(disguised) == 'gzip'
    assert read_all(disguised)[0] == images.read(image_set['raw'])
    plain = str(tmp_path / 'noext')
    shutil.copy(image_set['raw'], plain)
    assert source.detect_format(plain) == 'raw'


def test_suffix_that_contradicts_the_content_is_refused(image_set, tmp_path):
    wrong = str(tmp_path / 'disk.img.xz')
    shutil.copy(image_set['gzip'], wrong)
    with pytest.raises(SourceError, match='named .xz but holds gzip'):
        source.open_image(wrong)
    raw_named_xz = str(tmp_path / 'raw.xz')
    shutil.copy(image_set['raw'], raw_named_xz)
    with pytest.raises(SourceError, match='does not start with xz magic'):
        source.open_image(raw_named_xz)


def test_zip_is_refused_with_advice(tmp_path):
    path = str(tmp_path / 'disk.zip')
    with open(path, 'wb') as f:
        f.write(b'PK\x03\x04' + bytes(100))
    with pytest.raises(SourceError, match='zip archive'):
        source.open_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match='cannot open image .*No such file'):
        source.open_image(str(tmp_path / 'absent.img.xz'))


@pytest.mark.parametrize('fmt', FORMATS)
def test_concatenated_streams_are_one_image(image_set, tmp_path, fmt):
    # pigz/pbzip2/pzstd and `cat a.gz b.gz` write several members; all of them are the image.
    path = str(tmp_path / ('twice' + os.path.splitext(image_set[fmt])[1]))
    with open(path, 'wb') as f:
        f.write(images.read(image_set[fmt]) * 2)
    data, reader = read_all(path)
    assert data == images.read(image_set['raw']) * 2
    if fmt in ('xz', 'zstd'):
        assert reader.size == 2 * images.IMAGE_SIZE


def test_xz_stream_padding_is_accepted(image_set, tmp_path):
    padded = damaged(tmp_path, image_set['xz'], 'padded.img.xz', lambda d: d + bytes(8))
    assert read_all(padded)[0] == images.read(image_set['raw'])
    odd = damaged(tmp_path, image_set['xz'], 'odd.img.xz', lambda d: d + bytes(3))
    with pytest.raises(SourceError, match='corrupt xz stream.*multiple of four'):
        read_all(odd)


@pytest.mark.parametrize('fmt', FORMATS)
def test_truncated_stream_names_the_format(image_set, tmp_path, fmt):
    cut = damaged(tmp_path, image_set[fmt], 'cut' + os.path.splitext(image_set[fmt])[1],
                  lambda d: d[:len(d) * 2 // 3])
    with pytest.raises(SourceError, match='truncated %s stream' % fmt):
        read_all(cut)


@pytest.mark.parametrize('fmt', FORMATS)
def test_corrupt_stream_names_the_format(image_set, tmp_path, fmt):
    def flip(data):
        for at in range(len(data) // 3, len(data) // 3 + 16):
            data[at] ^= 0x55
        return data
    bad = damaged(tmp_path, image_set[fmt], 'bad' + os.path.splitext(image_set[fmt])[1], flip)
    with pytest.raises(SourceError, match=r'(corrupt|truncated) %s stream' % fmt):
        read_all(bad)


@pytest.mark.parametrize('fmt', ('xz', 'gzip', 'bzip2'))
def test_trailing_garbage_is_refused(image_set, tmp_path, fmt):
    bad = damaged(tmp_path, image_set[fmt], 'tail' + os.path.splitext(image_set[fmt])[1],
                  lambda d: d + b'garbage!')
    with pytest.raises(SourceError, match='corrupt %s stream.*follow the end' % fmt):
        read_all(bad)


def test_zstd_trailing_garbage_is_refused(image_set, tmp_path):
    bad = damaged(tmp_path, image_set['zstd'], 'tail.img.zst', lambda d: d + b'garbage!')
    with pytest.raises(SourceError, match='zstd stream'):
        read_all(bad)


@pytest.mark.parametrize('fmt', ('raw',) + FORMATS)
def test_sha256_checked_while_streaming(image_set, fmt):
    path = image_set[fmt]
    good = hashlib.sha256(images.read(path)).hexdigest()
    data, reader = read_all(path, sha256='sha256:' + good.upper())
    assert reader.sha256 == good
    with pytest.raises(ChecksumError, match='SHA-256 of image .* expected 0000'):
        read_all(path, sha256='0' * 64)


def test_sha256_up_front(image_set):
    path = image_set['xz']
    source.verify_sha256(path, hashlib.sha256(images.read(path)).hexdigest())
    with pytest.raises(ChecksumError):
        source.verify_sha256(path, 'f' * 64)
    with pytest.raises(ValueError):
        source.verify_sha256(path, 'not-a-digest')


def test_expanded_size_from_the_container(image_set, tmp_path):
    with source.open_image(image_set['xz']) as reader:
        assert reader.size == images.IMAGE_SIZE
    with source.open_image(image_set['zstd']) as reader:
        assert reader.size == images.IMAGE_SIZE
    # Multi-block xz from the threaded compressor, whose index lists several blocks.
    multi = str(tmp_path / 'multi.img.xz')
    with open(multi, 'wb') as f:
        subprocess.run(['xz', '-T2', '--block-size=65536', '-c', image_set['raw']], stdout=f, check=True)
    with source.open_image(multi) as reader:
        assert reader.size == images.IMAGE_SIZE
    for fmt in ('gzip', 'bzip2'):
        with source.open_image(image_set[fmt]) as reader:
            assert reader.size is None


def test_zstd_without_content_size_in_its_header(image_set, tmp_path):
    streamed = str(tmp_path / 'streamed.img.zst')
    with open(image_set['raw'], 'rb') as src, open(streamed, 'wb') as out:
        subprocess.run(['zstd', '-q', '-c', '-'], stdin=src, stdout=out, check=True)
    data, reader = read_all(streamed)
    assert data == images.read(image_set['raw'])
    assert reader.size is None


def test_skip_moves_forward(image_set):
    want = images.read(image_set['raw'])
    for fmt in ('raw', 'xz'):
        with source.open_image(image_set[fmt]) as reader:
            assert reader.skip(70000) == 70000
            assert reader.read(5000) == want[70000:75000]
            assert reader.read_to_end() == len(want) - 75000
            assert reader.read(10) == b''


@pytest.fixture(scope='module')
def multiblock(image_set, tmp_path_factory):
    """An .xz of many independent blocks, as `xz -T0` and pi-gen write them."""
    path = str(tmp_path_factory.mktemp('multiblock') / 'disk.img.xz')
    with open(path, 'wb') as f:
        subprocess.run(['xz', '-T2', '-3', '--block-size=200KiB', '-c', image_set['raw']], stdout=f, check=True)
    return path


def test_multiblock_xz_decodes_in_parallel(image_set, multiblock):
    from ansible_collections.minicluster.cm4.plugins.module_utils.flash import xzblocks
    with open(multiblock, 'rb') as f:
        blocks = xzblocks.parse_blocks(f.fileno(), os.path.getsize(multiblock))
    assert len(blocks) == -(-images.IMAGE_SIZE // (200 * 1024))
    want = images.read(image_set['raw'])
    for threads in (1, 2, 4):
        data, reader = read_all(multiblock, n=100000, threads=threads, hash_source=True)
        assert data == want
        assert reader.sha256 == hashlib.sha256(images.read(multiblock)).hexdigest()
    with source.open_image(multiblock, threads=3) as reader:
        assert isinstance(reader._decoder, source._ParallelXzDecoder)


def test_multiblock_xz_concatenated_and_padded(image_set, multiblock, tmp_path):
    path = str(tmp_path / 'two.img.xz')
    with open(path, 'wb') as f:
        f.write(images.read(multiblock) + bytes(4) + images.read(image_set['xz']) + bytes(8))
    data, reader = read_all(path, threads=2, sha256=hashlib.sha256(images.read(path)).hexdigest())
    assert data == images.read(image_set['raw']) * 2
    assert reader.size == 2 * images.IMAGE_SIZE


def test_multiblock_xz_corrupt_block(multiblock, tmp_path):
    data = bytearray(images.read(multiblock))
    for at in range(len(data) // 2, len(data) // 2 + 64):
        data[at] ^= 0x5A
    bad = str(tmp_path / 'bad.img.xz')
    with open(bad, 'wb') as f:
        f.write(data)
    with pytest.raises(SourceError, match=r'corrupt xz stream in .*\(block \d+ of \d+, at byte \d+\)'):
        read_all(bad, threads=2)


def test_multiblock_xz_truncated_falls_back_and_says_so(multiblock, tmp_path):
    cut = damaged(tmp_path, multiblock, 'cut.img.xz', lambda d: d[:len(d) - 30])
    with source.open_image(cut, threads=2) as reader:
        assert reader.size is None and isinstance(reader._decoder, source._StdlibDecoder)
    with pytest.raises(SourceError, match='truncated xz stream'):
        read_all(cut, threads=2)


def test_multiblock_xz_stops_cleanly_when_closed_early(multiblock):
    reader = source.open_image(multiblock, threads=2)
    assert len(reader.read(4096)) == 4096
    reader.close()
    assert not [t for t in threading.enumerate() if t.name.startswith('xz-block')]


def test_multiblock_hash_covers_the_bytes_the_workers_decoded(multiblock, monkeypatch):
    # Whatever the file holds when the hash reads it, the digest is over what was decoded.
    from ansible_collections.minicluster.cm4.plugins.module_utils.flash import xzblocks
    seen = []
    real = xzblocks.ParallelXzDecoder.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        seen.append(self._on_raw is not None)
    monkeypatch.setattr(xzblocks.ParallelXzDecoder, '__init__', spy)
    data, reader = read_all(multiblock, threads=2, hash_source=True)
    assert seen == [True]
    assert reader.sha256 == hashlib.sha256(images.read(multiblock)).hexdigest()
