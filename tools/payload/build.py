# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the netflash payload from pinned Debian arm64 packages.

    python3 tools/payload/build.py [--profile cm4|qemu] [--out .build/payload]

Downloads each pinned .deb with `apt-get download` through a private apt configuration (its own
sources, lists and cache under the output directory, so the machine's apt set-up is left alone),
checks every file against its SHA-256 pin, unpacks them with `dpkg-deb -x`, and assembles the
kernel, the CM4 device tree, the firmware (start4.elf, fixup4.dat) and an initramfs holding the
agent (init.sh), busybox, the xz and zstd decoders with their libraries, and the kernel modules of
the profile with their dependencies. The result lands in OUT/<profile>-<key>/ with
build-record.json, where key hashes the pins, the agent, the profile and this builder: the same
inputs are never built twice. Prints the result directory on its last line.

Profile `cm4` is what a node boots. Profile `qemu` adds the virtio drivers a `qemu-system-aarch64
-M virt` guest needs to stand in for a node in tests.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PINS = os.path.join(HERE, 'pins.json')
AGENT = os.path.join(HERE, 'init.sh')
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(HERE)), '.build', 'payload')
CHUNK = 1 << 20


class BuildError(Exception):
    pass


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(CHUNK), b''):
            h.update(chunk)
    return h.hexdigest()


def load_pins(path=PINS):
    with open(path, encoding='utf-8') as f:
        pins = json.load(f)
    for name, pin in pins['packages'].items():
        if not re.fullmatch(r'[0-9a-f]{64}', pin.get('sha256', '')):
            raise BuildError('pin of %s in %s: sha256 must be 64 hex digits' % (name, path))
    return pins


def build_key(pins, profile, agent_bytes):
    """Hash of everything the result depends on: the pins, the profile, the agent and this builder."""
    with open(os.path.abspath(__file__), 'rb') as f:
        builder = f.read()
    blob = json.dumps({'pins': pins, 'profile': profile}, sort_keys=True).encode() + agent_bytes + builder
    return hashlib.sha256(blob).hexdigest()[:16]


class Apt(object):
    """apt-get with its own sources, lists and cache: arm64 only, nothing of the machine's changed."""

    def __init__(self, root, sources):
        self.root = root
        os.makedirs(os.path.join(root, 'lists', 'partial'), exist_ok=True)
        os.makedirs(os.path.join(root, 'cache', 'archives', 'partial'), exist_ok=True)
        self.sources = os.path.join(root, 'sources.list')
        text = ''.join('deb [arch=arm64] %s\n' % s for s in sources)
        with open(self.sources, 'w', encoding='utf-8') as f:
            f.write(text)
        self.updated = False

    def options(self):
        return ['-o', 'Dir::Etc::SourceList=' + self.sources, '-o', 'Dir::Etc::SourceParts=/dev/null',
                '-o', 'Dir::State::Lists=' + os.path.join(self.root, 'lists'),
                '-o', 'Dir::Cache=' + os.path.join(self.root, 'cache'),
                '-o', 'APT::Architecture=arm64', '-o', 'APT::Architectures::=arm64',
                '-o', 'DPkg::Lock::Timeout=600', '-qq']

    def run(self, args, cwd=None):
        proc = subprocess.run(['apt-get'] + self.options() + args, cwd=cwd, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.startswith('E:')] or proc.stderr.splitlines()
            raise BuildError('apt-get %s failed: %s' % (' '.join(args), (lines or ['exit %d' % proc.returncode])[-1]))

    def download(self, name, version, dest):
        if not self.updated:
            self.run(['update'])
            self.updated = True
        before = set(os.listdir(dest))
        self.run(['download', '%s=%s' % (name, version)], cwd=dest)
        new = [f for f in set(os.listdir(dest)) - before if f.endswith('.deb')]
        if len(new) != 1:
            raise BuildError('apt-get download %s=%s left %d new files in %s' % (name, version, len(new), dest))
        return os.path.join(dest, new[0])


def fetch_debs(pins, out, log):
    """Every pinned .deb, downloaded once and checked against its pin each time it is used."""
    debs_dir = os.path.join(out, 'debs')
    os.makedirs(debs_dir, exist_ok=True)
    apt = Apt(os.path.join(out, 'apt'), pins['sources'])
    found = {}
    for name, pin in sorted(pins['packages'].items()):
        cached = os.path.join(debs_dir, '%s.deb' % pin['sha256'])
        if not os.path.exists(cached):
            log('downloading %s %s' % (name, pin['version']))
            with tempfile.TemporaryDirectory(dir=debs_dir) as tmp:
                path = apt.download(name, pin['version'], tmp)
                os.replace(path, cached + '.part')
        else:
            path = cached
        got = sha256_file(cached if os.path.exists(cached) else cached + '.part')
        if got != pin['sha256']:
            for p in (cached, cached + '.part'):
                if os.path.exists(p):
                    os.unlink(p)
            raise BuildError('%s %s: SHA-256 %s does not match its pin %s in %s; nothing was built'
                             % (name, pin['version'], got, pin['sha256'], PINS))
        if os.path.exists(cached + '.part'):
            os.replace(cached + '.part', cached)
        found[name] = {'version': pin['version'], 'sha256': got, 'file': os.path.basename(cached)}
    return found


def unpack(debs, out):
    roots = {}
    for name, info in debs.items():
        root = os.path.join(out, 'unpacked', info['sha256'])
        if not os.path.isdir(root):
            tmp = root + '.tmp'
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            subprocess.run(['dpkg-deb', '-x', os.path.join(out, 'debs', info['file']), tmp], check=True)
            os.replace(tmp, root)
        roots[name] = root
    return roots


def resolve(roots, ref):
    pkg, dummy, path = ref.partition(':')
    full = os.path.join(roots[pkg], path.lstrip('/'))
    if not os.path.isfile(full):
        raise BuildError('%s has no %s' % (pkg, path))
    return full


def find_library(roots, soname):
    for root in roots.values():
        for d in ('lib/aarch64-linux-gnu', 'usr/lib/aarch64-linux-gnu'):
            p = os.path.join(root, d, soname)
            if os.path.exists(p):
                return os.path.realpath(p)
    raise BuildError('no package of the pins provides %s' % soname)


def module_closure(moddir, wanted):
    """Module files (relative to moddir) in load order: dependencies first, built-ins left out."""
    with open(os.path.join(moddir, 'modules.order'), encoding='utf-8') as f:
        paths = {os.path.basename(p.strip())[:-3].replace('-', '_'): p.strip() for p in f if p.strip()}
    with open(os.path.join(moddir, 'modules.builtin'), encoding='utf-8') as f:
        builtin = {os.path.basename(p.strip())[:-3].replace('-', '_') for p in f if p.strip()}
    order = []

    def visit(name, chain):
        name = name.replace('-', '_')
        if name in builtin or paths.get(name) in order:
            return
        if name not in paths:
            raise BuildError('kernel module %s is neither built in nor shipped in %s' % (name, moddir))
        if name in chain:
            raise BuildError('module dependency loop at %s' % name)
        with open(os.path.join(moddir, paths[name]), 'rb') as f:
            m = re.search(rb'depends=([^\0]*)\0', f.read())
        for dep in (m.group(1).decode().split(',') if m and m.group(1) else []):
            visit(dep, chain + [name])
        order.append(paths[name])

    for name in wanted:
        visit(name, [])
    return order


class Cpio(object):
    """A newc cpio archive as the kernel unpacks an initramfs: owner root, fixed times."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name, mode, data=b'', rdev=(0, 0)):
        name_b = name.encode() + b'\0'
        hdr = '070701' + ''.join('%08X' % v for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + name_b)
        self.buf.write(b'\0' * (-(110 + len(name_b)) % 4))
        self.buf.write(data)
        self.buf.write(b'\0' * (-len(data) % 4))

    def dir(self, name):
        self._entry(name, 0o040755)

    def file(self, name, data, mode=0o644):
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name, target):
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name, major, minor):
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self):
        self._entry('TRAILER!!!', 0)
        return self.buf.getvalue()


def initramfs(pins, roots, profile, agent_bytes):
    release = pins['kernel_release']
    kpkg = pins['kernel'].partition(':')[0]
    moddir = os.path.join(roots[kpkg], 'lib', 'modules', release)
    modules = module_closure(moddir, pins['modules'][profile])
    c = Cpio()
    for d in ('bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'tmp', 'etc',
              'etc/netflash', 'lib', 'lib/aarch64-linux-gnu', 'lib/modules'):
        c.dir(d)
    c.chardev('dev/console', 5, 1)
    # The kernel runs /init through its #! line before busybox has installed its applets.
    c.symlink('bin/sh', 'busybox')
    c.file('init', agent_bytes, 0o755)
    for dest, ref in sorted(pins['binaries'].items()):
        with open(resolve(roots, ref), 'rb') as f:
            c.file(dest.lstrip('/'), f.read(), 0o755)
    for soname in pins['libraries']:
        with open(find_library(roots, soname), 'rb') as f:
            c.file('lib/aarch64-linux-gnu/' + soname, f.read(), 0o755)
    c.symlink('lib/ld-linux-aarch64.so.1', 'aarch64-linux-gnu/ld-linux-aarch64.so.1')
    made = {'lib/modules'}
    for rel in modules:
        parts = rel.split('/')
        for i in range(1, len(parts)):
            d = 'lib/modules/' + '/'.join(parts[:i])
            if d not in made:
                c.dir(d)
                made.add(d)
        with open(os.path.join(moddir, rel), 'rb') as f:
            c.file('lib/modules/' + rel, f.read())
    c.file('etc/netflash/modules', ''.join(m + '\n' for m in modules).encode())
    raw = c.finish()
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode='wb', mtime=0, compresslevel=6) as gz:
        gz.write(raw)
    return out.getvalue(), modules


def build(profile='cm4', out=DEFAULT_OUT, pins_path=PINS, log=lambda m: None):
    pins = load_pins(pins_path)
    if profile not in pins['modules']:
        raise BuildError('unknown profile %r: one of %s' % (profile, ', '.join(sorted(pins['modules']))))
    with open(AGENT, 'rb') as f:
        agent_bytes = f.read()
    key = build_key(pins, profile, agent_bytes)
    result = os.path.join(out, '%s-%s' % (profile, key))
    if os.path.exists(os.path.join(result, 'build-record.json')):
        return result
    debs = fetch_debs(pins, out, log)
    roots = unpack(debs, out)
    tmp = result + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    outputs = {'kernel8.img': resolve(roots, pins['kernel']),
               os.path.basename(pins['dtb'].partition(':')[2]): resolve(roots, pins['dtb'])}
    for name, ref in pins['firmware'].items():
        outputs[name] = resolve(roots, ref)
    for name, src in outputs.items():
        shutil.copyfile(src, os.path.join(tmp, name))
    initrd, modules = initramfs(pins, roots, profile, agent_bytes)
    with open(os.path.join(tmp, 'initrd.img'), 'wb') as f:
        f.write(initrd)
    record = {
        'profile': profile,
        'key': key,
        'kernel_release': pins['kernel_release'],
        'sources': pins['sources'],
        'inputs': {name: dict(info, pinned=pins['packages'][name]['sha256']) for name, info in debs.items()},
        'agent_sha256': hashlib.sha256(agent_bytes).hexdigest(),
        'modules': modules,
        'outputs': {name: sha256_file(os.path.join(tmp, name)) for name in sorted(os.listdir(tmp))},
    }
    with open(os.path.join(tmp, 'build-record.json'), 'w', encoding='utf-8') as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.write('\n')
    shutil.rmtree(result, ignore_errors=True)
    os.replace(tmp, result)
    # Older builds of this profile describe inputs that changed since.
    for name in os.listdir(out):
        if name.startswith(profile + '-') and name != os.path.basename(result):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--profile', default='cm4')
    ap.add_argument('--out', default=DEFAULT_OUT)
    ap.add_argument('--pins', default=PINS)
    args = ap.parse_args(argv)
    try:
        path = build(args.profile, os.path.abspath(args.out), args.pins,
                     log=lambda m: print(m, file=sys.stderr))
    except BuildError as exc:
        print('payload build: %s' % exc, file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
