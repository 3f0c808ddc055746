# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Flash benchmark: four targets, three ways, one synthetic image.

    python3 tools/flash_bench.py                 # 1 GiB image, the numbers the issue asks for
    python3 tools/flash_bench.py --size 64M      # a quick run

The image is a sparse file (holes), about 60 % mapped with a mix of compressible data, random
data and written zeros, its .bmap from `bmaptool create` (or written here when bmaptool is
missing) and its .xz from `xz -T0 -3`. They are cached under DIR/<parameters>/ so reruns only flash.

Each method writes four targets, regular files of the eMMC size that are recreated empty and sparse
before every method (plain files, not the hat simulator):
    ours      minicluster.cm4's pipeline: the four targets at once from one xz stream, bmap ranges
              only, every range read back past the page cache and compared (all timed)
    dd        xz -dc image.xz | dd of=TARGET bs=4M conv=fsync, node after node
    bmaptool  bmaptool copy --bmap image.bmap image.xz TARGET, node after node
    ours/1    the same with one decoder thread (for information: how much the multi-threaded
              decoding of the multi-block .xz adds; xz 5.4 used by dd and bmaptool decodes on one)
Wall time from start to the last target; CPU time user+system of this process (ours, all threads)
or of every child process, including bmaptool's xz, which bmaptool leaves for init to reap (this
process becomes a child subreaper to collect it). Bytes written are the blocks the targets' file
system allocated (st_blocks), which is what the method wrote since every target starts empty.
verified: targets whose mapped content (the bmap's ranges, read back with O_DIRECT after the run)
hashes to the image's, computed from the raw image when it was generated.
"""

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
if os.path.isdir(COLLECTIONS) and COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

from ansible_collections.minicluster.cm4.plugins.module_utils.flash import pipeline, source, xzblocks  # noqa: E402
from ansible_collections.minicluster.cm4.plugins.module_utils.flash.bmap import parse_bmap  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BLOCK = 4096
NODES = 4
GENERATOR = 2   # bump when the image recipe changes, so cached images are rebuilt
XZ_ARGS = ['xz', '-T0', '-3']


def parse_size(text):
    text = text.strip().upper().rstrip('B').rstrip('I')
    scale = {'K': KiB, 'M': MiB, 'G': GiB}.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in 'KMG' else text
    return int(float(number) * scale)


def human(n):
    for unit, size in (('GiB', GiB), ('MiB', MiB), ('KiB', KiB)):
        if n >= size:
            return '%.2f %s' % (n / size, unit)
    return '%d B' % n


# The image.

def layout(size, mapped, rng):
    """Mapped extents as (first block, block count, kind): log-uniform extents of 4 KiB..8 MiB,
    each mapped with probability `mapped`; kinds by bytes: 60 % compressible, 25 % random,
    15 % written zeros (an ext4 journal or inode table is mapped and zero)."""
    blocks = size // BLOCK
    extents = []
    pos = done = 0
    while pos < blocks:
        length = min(blocks - pos, max(1, int(2 ** rng.uniform(0, 11))))
        # Lean against the running fraction so that the image lands near `mapped`.
        chance = mapped + 2 * (mapped - done / pos) if pos else 1.0
        if rng.random() < chance:
            kind = rng.choices(('text', 'random', 'zero'), (60, 25, 15))[0]
            extents.append((pos, length, kind))
            done += length
        pos += length
    return extents


class Filler:
    """Data for mapped extents. 'text' is a patchwork of slices of a small corpus and random bytes:
    xz shrinks it about sixfold and expands it at about 100 MB/s on a 2020s x86 core, faster than
    real binaries decompress, so it makes no baseline look slower than it is."""

    def __init__(self, rng):
        self.rng = rng
        alphabet = b'abcdefghijklmnopqrstuvwxyz      .,:;=_/-0123456789\n\t'
        self.corpus = rng.randbytes(1 << 16) + bytes(rng.choice(alphabet) for unused in range(1 << 17))

    def data(self, kind, n):
        if kind == 'zero':
            return bytes(n)
        if kind == 'random':
            return self.rng.randbytes(n)
        rng, corpus = self.rng, self.corpus
        parts, total, top = [], 0, len(corpus) - 200
        while total < n:
            k = rng.randint(4, 120)
            o = rng.randrange(top)
            r = rng.randbytes(rng.randint(0, 12))
            parts.append(corpus[o:o + k])
            parts.append(r)
            total += k + len(r)
        return b''.join(parts)[:n]


def write_bmap(path, image_path, ranges, size):
    """A format 2.0 bmap like bmaptool's, for machines without bmaptool."""
    lines = []
    mapped = 0
    with open(image_path, 'rb') as f:
        for first, last in ranges:
            f.seek(first * BLOCK)
            digest = hashlib.sha256(f.read((last - first + 1) * BLOCK)).hexdigest()
            text = '%d-%d' % (first, last) if last > first else '%d' % first
            lines.append('        <Range chksum="%s"> %s </Range>' % (digest, text))
            mapped += last - first + 1
    xml = ('<?xml version="1.0" ?>\n<bmap version="2.0">\n'
           '    <ImageSize> %d </ImageSize>\n    <BlockSize> %d </BlockSize>\n'
           '    <BlocksCount> %d </BlocksCount>\n    <MappedBlocksCount> %d </MappedBlocksCount>\n'
           '    <ChecksumType> sha256 </ChecksumType>\n    <BmapFileChecksum> %s </BmapFileChecksum>\n'
           '    <BlockMap>\n%s\n    </BlockMap>\n</bmap>\n'
           % (size, BLOCK, (size + BLOCK - 1) // BLOCK, mapped, '0' * 64, '\n'.join(lines)))
    digest = hashlib.sha256(xml.encode()).hexdigest()
    with open(path, 'w') as f:
        f.write(xml.replace('0' * 64, digest, 1))


def merged(extents):
    out = []
    for first, length, kind in extents:
        last = first + length - 1
        if out and out[-1][1] + 1 == first:
            out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
    return out


def build_image(directory, size, mapped, seed, log):
    """image.img, image.bmap, image.img.xz and manifest.json in directory (cached)."""
    manifest_path = os.path.join(directory, 'manifest.json')
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            return json.load(f)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    image = os.path.join(directory, 'image.img')
    bmap_path = os.path.join(directory, 'image.bmap')
    rng = random.Random(seed)
    extents = layout(size, mapped, rng)
    filler = Filler(rng)
    started = time.monotonic()
    log('generating %s image (seed %d) in %s' % (human(size), seed, directory))
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for first, length, kind in extents:
            pos, end = first * BLOCK, (first + length) * BLOCK
            while pos < end:
                n = min(4 * MiB, end - pos)
                os.pwrite(fd, filler.data(kind, n), pos)
                pos += n
        os.fsync(fd)
    finally:
        os.close(fd)
    if shutil.which('bmaptool'):
        subprocess.run(['bmaptool', 'create', '-o', bmap_path, image], check=True)
        bmap_tool = 'bmaptool create'
    else:
        write_bmap(bmap_path, image, merged(extents), size)
        bmap_tool = 'written by flash_bench.py (bmaptool not installed)'
    bmap = parse_bmap(bmap_path)
    content = hashlib.sha256()
    with open(image, 'rb') as f:
        for start, end, checksum in bmap.byte_ranges():
            f.seek(start)
            while start < end:
                chunk = f.read(min(4 * MiB, end - start))
                content.update(chunk)
                start += len(chunk)
    log('compressing with %s' % ' '.join(XZ_ARGS))
    with open(image + '.xz.part', 'wb') as out:
        subprocess.run(XZ_ARGS + ['-c', image], stdout=out, check=True)
    os.rename(image + '.xz.part', image + '.xz')
    manifest = {
        'size': size, 'mapped_fraction': mapped, 'seed': seed, 'generator': GENERATOR,
        'mapped_size': bmap.mapped_size, 'ranges': len(bmap.ranges),
        'content_digest': content.hexdigest(), 'bmap_tool': bmap_tool,
        'xz': ' '.join(XZ_ARGS), 'xz_size': os.stat(image + '.xz').st_size,
        'kinds': {k: sum(extent[1] for extent in extents if extent[2] == k) * BLOCK
                  for k in ('text', 'random', 'zero')},
        'seconds': round(time.monotonic() - started, 1),
    }
    with open(manifest_path + '.part', 'w') as f:
        json.dump(manifest, f, indent=1)
    os.rename(manifest_path + '.part', manifest_path)
    return manifest


# The targets and the three methods.

def fresh_targets(directory, emmc_size):
    """Four empty sparse files of the eMMC size; the page cache holds nothing of them."""
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for node in range(1, NODES + 1):
        path = os.path.join(directory, 'node%d.img' % node)
        with open(path, 'wb') as f:
            f.truncate(emmc_size)
        paths['node%d' % node] = path
    os.sync()
    return paths


def allocated(paths):
    return sum(os.stat(p).st_blocks * 512 for p in paths.values())


def cpu(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def become_subreaper():
    """Orphaned descendants (bmaptool's decompressor) become our children, so their CPU time is
    counted when we reap them."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0     # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap():
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def run_ours(xz, bmap, targets, threads=None):
    results = pipeline.flash(xz, targets, bmap_path=bmap, verify=True, decoder_threads=threads)
    bad = [r.error for r in results.values() if not r.ok]
    if bad:
        raise RuntimeError('ours failed: %s' % '; '.join(bad))
    return {'counted': sum(r.bytes_written for r in results.values()),
            'self_verified': sum(1 for r in results.values() if r.verified)}


def run_dd(xz, bmap, targets):
    for path in targets.values():
        subprocess.run(['bash', '-o', 'pipefail', '-c',
                        'xz -dc "$0" | dd of="$1" bs=4M conv=fsync status=none', xz, path],
                       check=True)
    return {}


def run_bmaptool(xz, bmap, targets):
    for path in targets.values():
        subprocess.run(['bmaptool', '-q', 'copy', '--bmap', bmap, xz, path], check=True)
    return {}


def run_ours_single(xz, bmap, targets):
    return run_ours(xz, bmap, targets, threads=1)


class SharedLink:
    """One link every target's bytes cross in turn (the hat's single USB 2.0 upstream): a caller
    charging n bytes waits until the link would have carried them at `rate` bytes/s."""

    def __init__(self, rate):
        self.rate = rate
        self.free_at = time.perf_counter()
        self.lock = threading.Lock()

    def charge(self, nbytes):
        with self.lock:
            self.free_at = max(self.free_at, time.perf_counter()) + nbytes / self.rate
            wait = self.free_at - time.perf_counter()
        if wait > 0:
            time.sleep(wait)


def run_usb(xz, bmap, targets, model):
    """ours behind the USB link: every written byte is charged to one shared link as the writers
    report it (their progress calls are serialised, so a charge holds back all four), and every
    byte read back for verification is charged after the write, as it crosses the same link."""
    link = SharedLink(model['usb_rate'])
    done = {}

    def progress(name, written, total):
        link.charge(written - done.get(name, 0))
        done[name] = written

    results = pipeline.flash(xz, targets, bmap_path=bmap, verify=True, progress=progress)
    bad = [r.error for r in results.values() if not r.ok]
    if bad:
        raise RuntimeError('usb failed: %s' % '; '.join(bad))
    link.charge(sum(r.bytes_verified or 0 for r in results.values()))
    return {'counted': sum(r.bytes_written for r in results.values()),
            'self_verified': sum(1 for r in results.values() if r.verified)}


def decode_rate(xz):
    """Seconds one xz thread takes here to decode the whole image, measured."""
    started = time.perf_counter()
    with open(os.devnull, 'wb') as null:
        subprocess.run(['xz', '-dc', '-T1', xz], stdout=null, check=True)
    return time.perf_counter() - started


def serve_four(xz, bmap_path):
    """The controller's side for real: one NetflashRun on loopback serving the .xz to four
    concurrent clients that read it to the end. Returns the seconds it took."""
    from ansible_collections.minicluster.cm4.plugins.module_utils.flash.netserver import NetflashRun, Plan
    import urllib.request
    bmap = parse_bmap(bmap_path)
    serials = ['%016x' % (0x10000000c0de0000 + n) for n in range(NODES)]
    plans = [Plan.from_bmap(s, '/dev/mmcblk0', 'xz', bmap) for s in serials]
    errors = []

    def client(url):
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                while r.read(1 << 20):
                    pass
        except OSError as exc:
            errors.append(str(exc))

    with NetflashRun('127.0.0.1', 0, plans, xz) as run:
        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(run.url + p.image_path,)) for p in plans]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError('serving failed: %s' % errors[0])
    return seconds


def run_network(xz, bmap_path, targets, model):
    """Method network, modelled where this machine has no CM4: the controller serves for real;
    each node's streaming phase lasts as long as its slowest stage (its share of the gigabit
    link, its decoder at the measured speed scaled to a CM4, its eMMC write rate), then it reads
    its ranges back at the eMMC read rate; before that, the payload crosses USB once per node."""
    bmap = parse_bmap(bmap_path)
    mapped, size, xz_size = bmap.mapped_size, bmap.image_size, os.stat(xz).st_size
    single = decode_rate(xz)
    # xz -T0 on the node decodes a multi-block .xz on its four cores, a single block on one.
    fd = os.open(xz, os.O_RDONLY)
    try:
        blocks = xzblocks.parse_blocks(fd, xz_size) or []
    finally:
        os.close(fd)
    threads = min(model['node_cores'], max(1, len(blocks)))
    node_decode = size / single * threads / model['node_cpu_factor']
    stages = {'link': xz_size / (model['link_rate'] / NODES), 'decoder': size / node_decode,
              'emmc write': mapped / model['emmc_write']}
    serve = serve_four(xz, bmap_path)
    stream = max(*stages.values(), serve)
    bound = max(stages, key=stages.get) if stream > serve else 'controller serving'
    payload = NODES * model['payload_size'] / model['usb_rate']
    verify = mapped / model['emmc_read']
    return {'modelled': payload + model['node_boot'] + stream + verify,
            'note': 'payload %.1f s + boot %.1f s + stream %.1f s (bound: %s; serving measured %.2f s) + '
                    'read-back %.1f s' % (payload, model['node_boot'], stream, bound, serve, verify)}


METHODS = (('ours', run_ours), ('dd', run_dd), ('bmaptool', run_bmaptool), ('ours/1', run_ours_single),
           ('usb', run_usb), ('network', run_network))
MODELLED = ('usb', 'network')


def measure(name, fn, xz, bmap_path, targets, model=None):
    os.sync()
    wall0, self0, child0 = time.perf_counter(), cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    extra = fn(xz, bmap_path, targets, model) if name in MODELLED else fn(xz, bmap_path, targets)
    reap()
    wall = extra.pop('modelled', None) or time.perf_counter() - wall0
    cpu_s = (cpu(resource.RUSAGE_SELF) - self0) + (cpu(resource.RUSAGE_CHILDREN) - child0)
    return dict(extra, name=name, wall=wall, cpu=cpu_s, written=allocated(targets))


def count_verified(targets, bmap, digest):
    return sum(1 for path in targets.values() if pipeline.content_digest_of(path, bmap) == digest)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--size', default='1G', help='expanded image size (default 1G)')
    parser.add_argument('--mapped', type=float, default=0.6, help='mapped fraction (default 0.6)')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--emmc-size', default='8G', help='target size (default 8G, a CM4 eMMC)')
    parser.add_argument('--dir', default=os.path.join(ROOT, '.build', 'bench'))
    parser.add_argument('--methods', default='ours,dd,bmaptool,ours/1,usb,network',
                        help='comma-separated subset of ours,dd,bmaptool,ours/1,usb,network')
    parser.add_argument('--usb-rate', type=float, default=40.0,
                        help='MB/s the hat\'s one USB 2.0 upstream carries for all nodes (default 40)')
    parser.add_argument('--link-rate', type=float, default=112.0,
                        help='MB/s of the controller\'s gigabit port (default 112)')
    parser.add_argument('--emmc-write', type=float, default=25.0, help='MB/s a CM4 eMMC writes (default 25)')
    parser.add_argument('--emmc-read', type=float, default=80.0, help='MB/s a CM4 eMMC reads (default 80)')
    parser.add_argument('--node-cpu-factor', type=float, default=3.0,
                        help='how many times slower a CM4 core decodes than one core here (default 3, an '
                             'assumption)')
    parser.add_argument('--node-boot', type=float, default=8.0,
                        help='seconds from payload loaded to agent streaming (default 8)')
    parser.add_argument('--payload-size', default='40M', help='size of the boot.img rpiboot sends (default 40M)')
    args = parser.parse_args(argv)
    for name in ('usb_rate', 'link_rate', 'emmc_write', 'emmc_read', 'node_cpu_factor'):
        value = getattr(args, name)
        if not (value > 0 and value != float('inf')):
            parser.error('--%s must be a positive finite number' % name.replace('_', '-'))
    if not 0 <= args.node_boot < 3600:
        parser.error('--node-boot must be 0 to 3600 seconds')
    model = {'usb_rate': args.usb_rate * 1e6, 'link_rate': args.link_rate * 1e6, 'node_cores': 4,
             'emmc_write': args.emmc_write * 1e6, 'emmc_read': args.emmc_read * 1e6,
             'node_cpu_factor': args.node_cpu_factor, 'node_boot': args.node_boot,
             'payload_size': parse_size(args.payload_size)}

    def log(msg):
        print(msg, flush=True)

    size = parse_size(args.size) // BLOCK * BLOCK
    emmc_size = max(parse_size(args.emmc_size), size)
    wanted = [m.strip() for m in args.methods.split(',') if m.strip()]
    needed = ['xz'] + [m for m in ('dd', 'bmaptool') if m in wanted]
    missing = [tool for tool in needed if not shutil.which(tool)]
    if missing:
        parser.error('missing tools: %s' % ', '.join(missing))
    key = 'img-%d-m%g-s%d-g%d' % (size, args.mapped, args.seed, GENERATOR)
    manifest = build_image(os.path.join(args.dir, key), size, args.mapped, args.seed, log)
    directory = os.path.join(args.dir, key)
    xz = os.path.join(directory, 'image.img.xz')
    bmap_path = os.path.join(directory, 'image.bmap')
    bmap = parse_bmap(bmap_path)
    mapped = bmap.mapped_size
    with open(xz, 'rb') as f:        # every method starts with the source in the page cache
        while f.read(16 * MiB):
            pass
    log('image: %s expanded, %s mapped in %d ranges (%.0f %%), %s as xz (%s); bmap by %s'
        % (human(size), human(mapped), len(bmap.ranges), 100.0 * mapped / size,
           human(manifest['xz_size']), manifest['xz'], manifest['bmap_tool']))
    log('targets: %d sparse regular files of %s under %s, recreated empty before each method '
        '(plain files, not the hat simulator)' % (NODES, human(emmc_size), args.dir))
    subreaper = become_subreaper()
    log('machine: %d CPUs, load average %.2f at the start; decoder threads for ours: %d; %s'
        % (os.cpu_count(), os.getloadavg()[0], source.default_threads(),
           'child CPU includes orphans' if subreaper else 'could not become a subreaper: '
           'bmaptool\'s CPU misses its xz'))

    rows = {}
    verified = {}
    for name, fn in METHODS:
        if name not in wanted:
            continue
        targets = fresh_targets(os.path.join(args.dir, 'targets'), emmc_size)
        rows[name] = row = measure(name, fn, xz, bmap_path, targets, model)
        if name == 'network':
            log('%-9s wall %7.2f s  modelled: %s' % (name, row['wall'], row['note']))
            continue
        verified[name] = count_verified(targets, bmap, manifest['content_digest'])
        note = ''
        if 'counted' in row:
            note = ' (pwrite count %s)' % human(row['counted'])
        if name == 'usb':
            note += ' (behind one %.0f MB/s link)' % args.usb_rate
        log('%-9s wall %7.2f s  cpu %7.2f s  written %s%s  written/mapped %.2f  verified %d/%d'
            % (name, row['wall'], row['cpu'], human(row['written']), note,
               row['written'] / (NODES * mapped), verified[name], NODES))
    shutil.rmtree(os.path.join(args.dir, 'targets'), ignore_errors=True)
    log('load average %.2f at the end (other work on this machine slows every method)'
        % os.getloadavg()[0])

    if 'ours' not in rows:
        return 0

    def ratio(other, mine='ours'):
        return '%.2f' % (rows[mine]['wall'] / rows[other]['wall']) if other in rows else 'n/a'
    if 'ours/1' in rows:
        log('with one decoder thread: ours/dd=%s ours/bmaptool=%s'
            % (ratio('dd', 'ours/1'), ratio('bmaptool', 'ours/1')))
    tail = ' network/usb=%s' % ratio('usb', 'network') if 'usb' in rows and 'network' in rows else ''
    print('flash-bench ours/dd=%s ours/bmaptool=%s written/mapped=%.2f verified=%d/%d%s'
          % (ratio('dd'), ratio('bmaptool'), rows['ours']['written'] / (NODES * mapped),
             verified['ours'], NODES, tail), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
