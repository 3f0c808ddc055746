# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The simulator's stand-in for a node that booted the netflash payload.

The real agent (tools/payload/init.sh, tested in QEMU under tests/netflash) runs on the node;
this double follows its documented protocol against the simulated node's eMMC backing file: it
reads cmdline.txt out of the boot.img rpiboot served (mtools, as the firmware would read it),
fetches the plan for the node's serial (the one the simulated bootloader prints), streams and
decodes the image, writes only the plan's ranges, reads them back, and posts the same report.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import subprocess
import sys
import urllib.request

from hatsim import bootlog

CHUNK = 1 << 20


def _cmdline(directory):
    text = subprocess.run(['mtype', '-i', os.path.join(directory, 'boot.img'), '::cmdline.txt'],
                          capture_output=True, text=True, check=True).stdout
    return dict(arg.split('=', 1) for arg in text.split() if '=' in arg)


def _emmc(sim_dir, node):
    with open(os.path.join(sim_dir, 'state.json')) as f:
        return json.load(f)['nodes'][str(node)]['emmc']


def _plan(text):
    plan = {'ranges': []}
    for line in text.splitlines():
        key, dummy, value = line.partition(' ')
        if key == 'range':
            off, length, digest = value.split()
            plan['ranges'].append((int(off), int(length), digest))
        else:
            plan[key] = value
    return plan


class _Counter(object):
    def __init__(self, stream):
        self.stream = stream
        self.count = 0

    def read(self, n):
        data = self.stream.read(n)
        self.count += len(data)
        return data


def _decoded(stream, compression):
    if compression == 'zstd':
        import zstandard
        reader = zstandard.ZstdDecompressor().stream_reader(stream)
        while True:
            data = reader.read(CHUNK)
            if not data:
                return
            yield data
    dec = lzma.LZMADecompressor() if compression == 'xz' else None
    while True:
        data = stream.read(CHUNK)
        if not data:
            if dec is not None and not dec.eof:
                raise EOFError('truncated xz stream')
            return
        yield dec.decompress(data) if dec is not None else data


def flash(server, serial, emmc):
    with urllib.request.urlopen('%s/plan/%s' % (server, serial), timeout=30) as r:
        plan = _plan(r.read().decode())
    counts = {'download_status': 0, 'decoder_status': 0, 'writer_status': 0}
    if plan.get('serial') != serial or plan.get('device') != '/dev/mmcblk0':
        return ['status failed', 'error plan is for serial %s device %s' % (plan.get('serial'), plan.get('device'))]
    ranges = plan['ranges']
    pos = 0
    idx = 0
    fd = os.open(emmc, os.O_WRONLY)
    try:
        counter = _Counter(urllib.request.urlopen(server + plan['image'], timeout=30))
        try:
            for data in _decoded(counter, plan['compression']):
                start = pos
                pos += len(data)
                while idx < len(ranges) and ranges[idx][0] < pos:
                    off, length = ranges[idx][:2]
                    lo, hi = max(off, start), min(off + length, pos)
                    if hi > lo:
                        os.pwrite(fd, data[lo - start:hi - start], lo)
                    if off + length > pos:
                        break
                    idx += 1
        except Exception:  # pylint: disable=broad-except
            # Any decoder or download error: the agent reports a decoder status, never a crash.
            counts['decoder_status'] = 1
        os.fsync(fd)
    finally:
        os.close(fd)
    lines = ['%s %d' % kv for kv in counts.items()]
    lines += ['compressed_bytes %d' % counter.count, 'image_bytes %d' % pos]
    content = hashlib.sha256()
    bad = 0
    with open(emmc, 'rb') as f:
        for off, length, digest in ranges:
            f.seek(off)
            data = f.read(length)
            content.update(data)
            got = hashlib.sha256(data).hexdigest()
            bad += got != digest
            lines.append('digest %d %d %s' % (off, length, got))
    ok = bad == 0 and counts['decoder_status'] == 0 and pos == int(plan['image_size'])
    head = ['status ok'] if ok else ['status failed', 'error %d ranges read back wrong' % bad]
    return head + ['content_digest ' + content.hexdigest()] + lines


def main(sim_dir, node, directory):
    args = _cmdline(directory)
    server = args['netflash.server']
    serial = bootlog.SERIALS[node]
    report = flash(server, serial, _emmc(sim_dir, node))
    req = urllib.request.Request('%s/report/%s' % (server, serial), data=('\n'.join(report) + '\n').encode(),
                                 method='POST')
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
