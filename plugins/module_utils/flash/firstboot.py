# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""First-boot customisation of a freshly written Raspberry Pi OS disk, without mounting it.

The boot partition is found from the disk's partition table (MBR, or GPT when the MBR is
protective) and edited in place with mtools (``mtype``/``mcopy``/``mdel`` with ``-i DISK@@OFFSET``),
which needs neither root, nor a vfat driver, nor a loop device.

Two styles, as Raspberry Pi OS itself reads them from the boot partition:

``bookworm`` (Raspberry Pi OS 12)
    ``ssh`` (empty file: sshswitch enables the SSH server at boot), ``userconf.txt`` (``user:hash``:
    userconf-pi creates the first user) and, when a hostname or SSH keys are asked for, a
    ``firstrun.sh`` run once through ``systemd.run=`` on the kernel command line, the way Raspberry
    Pi Imager does it: it sets the hostname (with raspberrypi-sys-mods' ``imager_custom`` when
    present), creates the user from ``userconf.txt`` so the keys can be installed for it, installs
    the keys, enables ssh, then removes itself and its ``cmdline.txt`` arguments.
``cloud-init`` (Raspberry Pi OS 13 "Trixie" and later)
    NoCloud ``user-data`` (hostname, user, password hash, keys, ssh password authentication),
    ``meta-data`` (an instance id derived from the settings, so that new settings are applied) and
    ``network-config`` (given, or kept as the image ships it, or DHCP on eth0 when absent). The ``ssh``
    file is written as well.

``auto`` picks ``cloud-init`` when the boot partition already holds ``user-data``, ``meta-data`` or
``network-config``, or when ``cmdline.txt`` mentions ``ds=nocloud`` or ``cloud-init``; ``bookworm``
otherwise.

Both styles make sure ``config.txt`` says ``enable_uart=1`` in its ``[all]`` section (the node
consoles need it); that edit changes nothing when the line is already in force.

The password hash is a secret: it goes to the boot partition and nowhere else (not in results,
messages or the settings digest's input as clear text beyond its hash).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
import uuid

STYLES = ('auto', 'bookworm', 'cloud-init')
FAT_MBR_TYPES = (0x01, 0x04, 0x06, 0x0b, 0x0c, 0x0e)
GPT_PROTECTIVE = 0xee
GPT_FAT_TYPES = (uuid.UUID('EBD0A0A2-B9E5-4433-87C0-68B6B72699C7'),  # Microsoft basic data
                 uuid.UUID('C12A7328-F81F-11D2-BA4B-00A0C93EC93B'))  # EFI system partition
HOSTNAME_RE = re.compile(r'^(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z')
USER_RE = re.compile(r'^[a-z_][a-z0-9_-]{0,31}\Z')
FIRSTRUN_ARGS = 'systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target'
DEFAULT_GROUPS = ['users', 'adm', 'dialout', 'audio', 'netdev', 'video', 'plugdev', 'cdrom', 'games', 'input',
                  'gpio', 'spi', 'i2c', 'render', 'sudo']
DEFAULT_NETWORK_CONFIG = {'network': {'version': 2, 'ethernets': {'eth0': {'dhcp4': True, 'optional': True}}}}
MTOOLS_ENV = {'MTOOLS_SKIP_CHECK': '1', 'MTOOLS_NO_VFAT': '0', 'LC_ALL': 'C'}


class FirstbootError(Exception):
    """First-boot customisation that cannot be done, with a message for the operator."""


# ---------------------------------------------------------------------------------------------
# Settings


def normalise(settings):
    """Validated settings with every key present; raises FirstbootError on bad input."""
    s = dict(settings or {})
    out = {
        'style': s.get('style') or 'auto',
        'hostname': s.get('hostname') or None,
        'user': s.get('user') or None,
        'password_hash': s.get('password_hash') or None,
        'ssh_authorized_keys': [k.strip() for k in (s.get('ssh_authorized_keys') or []) if k and k.strip()],
        'ssh': True if s.get('ssh') is None else bool(s.get('ssh')),
        'ssh_password_authentication': s.get('ssh_password_authentication'),
        'enable_uart': True if s.get('enable_uart') is None else bool(s.get('enable_uart')),
        'network_config': s.get('network_config') or None,
    }
    if out['style'] not in STYLES:
        raise FirstbootError('firstboot style %r is not one of %s' % (out['style'], ', '.join(STYLES)))
    if out['hostname'] is not None and not HOSTNAME_RE.match(out['hostname']):
        raise FirstbootError('hostname %r is not a valid host name (letters, digits and -, at most 63)' % out['hostname'])
    if out['user'] is not None and not USER_RE.match(out['user']):
        raise FirstbootError('user %r is not a valid user name (lower case, digits, _ and -, at most 32)' % out['user'])
    ph = out['password_hash']
    if ph is not None and (not ph.startswith('$') or ':' in ph or any(c.isspace() for c in ph)):
        # The hash itself is never echoed: it is a secret.
        raise FirstbootError('password_hash is not a crypt(3) hash such as $6$... or $y$... (make one with '
                             "mkpasswd or the password_hash filter): it must not be the clear password")
    if ph is not None and out['user'] is None:
        raise FirstbootError('password_hash needs user: name the user it belongs to')
    for key in out['ssh_authorized_keys']:
        if '\n' in key or '\r' in key:
            raise FirstbootError('each entry of ssh_authorized_keys must be a single line')
    if out['user'] is not None and ph is None and not out['ssh_authorized_keys']:
        raise FirstbootError('user %s has neither password_hash nor ssh_authorized_keys: nobody could log in'
                             % out['user'])
    if out['ssh_password_authentication'] is None:
        out['ssh_password_authentication'] = ph is not None and not out['ssh_authorized_keys']
    else:
        out['ssh_password_authentication'] = bool(out['ssh_password_authentication'])
    if out['network_config'] is not None and not isinstance(out['network_config'], dict):
        raise FirstbootError('network_config must be a mapping (cloud-init network config version 2)')
    return out


SALT_ALPHABET = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'


def stable_salt(password, node, user):
    """A 16-character crypt salt that is the same on every run for this password, node and user.

    A fresh random salt would make a new hash, so new first-boot settings, so a reflash, on every run.
    Keyed with the password itself, the salt still differs between nodes, users and passwords.
    """
    mac = hmac.new(password.encode('utf-8'), ('minicluster.cm4 node%d %s' % (node, user)).encode('utf-8'),
                   hashlib.sha256).digest()
    return ''.join(SALT_ALPHABET[b % 64] for b in mac[:16])


def hash_password(password, node, user):
    """SHA-512 crypt ($6$) of a clear password with stable_salt(); needs passlib (or Python's crypt)."""
    salt = stable_salt(password, node, user)
    try:
        from passlib.hash import sha512_crypt
    except ImportError:
        sha512_crypt = None
    if sha512_crypt is not None:
        return sha512_crypt.using(salt=salt, rounds=5000).hash(password)
    try:
        import crypt  # pylint: disable=deprecated-module
    except ImportError:
        raise FirstbootError('firstboot.password needs passlib on the controller (pip install passlib), or give '
                             'password_hash instead')
    return crypt.crypt(password, '$6$%s$' % salt)


def settings_digest(settings):
    """A digest of the settings, for the controller's flash record (never the settings themselves)."""
    if not settings:
        return None
    s = normalise(settings)
    return 'sha256:' + hashlib.sha256(json.dumps(s, sort_keys=True, separators=(',', ':')).encode('utf-8')).hexdigest()


def public_settings(settings):
    """Settings safe to show: the password hash becomes a mark that one is set."""
    if not settings:
        return None
    s = normalise(settings)
    s['password_hash'] = '(set)' if s['password_hash'] else None
    return s


# ---------------------------------------------------------------------------------------------
# Partition table


class Partition(object):
    def __init__(self, index, offset, size, kind, table):
        self.index = index
        self.offset = offset
        self.size = size
        self.kind = kind
        self.table = table

    def as_dict(self):
        return dict(index=self.index, offset=self.offset, size=self.size, type=self.kind, table=self.table)


def _read_at(f, offset, size):
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise FirstbootError('the disk ends at byte %d, inside its partition table' % (offset + len(data)))
    return data


def find_boot_partition(path, sector_size=512):
    """The first FAT partition of the disk at path, from its MBR (or GPT)."""
    with open(path, 'rb') as f:
        mbr = _read_at(f, 0, 512)
        if mbr[510:512] != b'\x55\xaa':
            raise FirstbootError('%s has no partition table (no MBR signature): is the image a whole disk image?' % path)
        entries = []
        for i in range(4):
            e = mbr[446 + 16 * i:446 + 16 * (i + 1)]
            ptype = e[4]
            start, count = struct.unpack('<II', e[8:16])
            if ptype and count:
                entries.append((i + 1, ptype, start, count))
        if any(entry[1] == GPT_PROTECTIVE for entry in entries):
            part = _find_gpt(f, path, sector_size)
        else:
            part = None
            for index, ptype, start, count in entries:
                if ptype in FAT_MBR_TYPES:
                    part = Partition(index, start * sector_size, count * sector_size, '0x%02x' % ptype, 'mbr')
                    break
            if part is None:
                raise FirstbootError('%s has no FAT partition in its MBR (types %s): not a Raspberry Pi OS image?'
                                     % (path, ', '.join('0x%02x' % entry[1] for entry in entries) or 'none'))
        boot = _read_at(f, part.offset, 512)
        if boot[510:512] != b'\x55\xaa' or (boot[54:57] != b'FAT' and boot[82:85] != b'FAT'):
            raise FirstbootError('partition %d of %s (at byte %d) holds no FAT file system'
                                 % (part.index, path, part.offset))
        return part


def _find_gpt(f, path, sector_size):
    header = _read_at(f, sector_size, 92)
    if header[:8] != b'EFI PART':
        raise FirstbootError('%s has a protective MBR but no GPT header' % path)
    entries_lba, count, entry_size = struct.unpack('<QII', header[72:88])
    if count > 1024 or entry_size < 128 or entry_size > 4096:
        raise FirstbootError('%s has an implausible GPT (%d entries of %d bytes)' % (path, count, entry_size))
    table = _read_at(f, entries_lba * sector_size, count * entry_size)
    for i in range(count):
        e = table[i * entry_size:(i + 1) * entry_size]
        ptype = uuid.UUID(bytes_le=e[:16])
        if ptype.int == 0:
            continue
        first, last = struct.unpack('<QQ', e[32:48])
        if ptype in GPT_FAT_TYPES:
            return Partition(i + 1, first * sector_size, (last - first + 1) * sector_size, str(ptype), 'gpt')
    raise FirstbootError('%s has no FAT (basic data or EFI system) partition in its GPT' % path)


# ---------------------------------------------------------------------------------------------
# The FAT file system through mtools


class BootFs(object):
    """Files in the FAT file system at a byte offset of a disk or image, through mtools."""

    def __init__(self, path, offset, runner=None):
        self.path = path
        self.offset = offset
        self.spec = '%s@@%d' % (path, offset)
        self.runner = runner or _run
        self._names = None

    def _mtools(self, args, what, data=None):
        rc, out, err = self.runner(args, data)
        if rc != 0:
            raise FirstbootError('%s on the boot partition of %s (byte %d) failed: %s'
                                 % (what, self.path, self.offset, (err or b'').decode('utf-8', 'replace').strip()
                                    or 'exit %d' % rc))
        return out

    def names(self):
        if self._names is None:
            out = self._mtools(['mdir', '-b', '-i', self.spec, '::/'], 'listing files')
            names = set()
            for line in out.decode('utf-8', 'replace').splitlines():
                line = line.strip()
                if line.startswith('::/'):
                    names.add(line[3:].lower())
            self._names = names
        return self._names

    def exists(self, name):
        return name.lower() in self.names()

    def read(self, name):
        if not self.exists(name):
            return None
        return self._mtools(['mtype', '-i', self.spec, '::/' + name], 'reading %s' % name)

    def write(self, name, data):
        tmpdir = tempfile.mkdtemp(prefix='cm4-firstboot.')
        try:
            src = os.path.join(tmpdir, name)
            fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, 'wb') as f:
                f.write(data)
            self._mtools(['mcopy', '-o', '-i', self.spec, src, '::/' + name], 'writing %s' % name)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        self.names().add(name.lower())

    def delete(self, name):
        if self.exists(name):
            self._mtools(['mdel', '-i', self.spec, '::/' + name], 'deleting %s' % name)
            self.names().discard(name.lower())


def _run(args, data=None):
    env = dict(os.environ)
    env.update(MTOOLS_ENV)
    try:
        p = subprocess.run(args, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, check=False)
    except OSError as exc:
        raise FirstbootError('cannot run %s: %s: install mtools on the controller' % (args[0], exc.strerror))
    return p.returncode, p.stdout, p.stderr


# ---------------------------------------------------------------------------------------------
# Pure edits (unit-tested without any disk)


def ensure_config_line(text, key, value):
    """config.txt with key=value in force for every model: (new text, changed).

    The firmware reads config.txt top to bottom; a conditional section ([pi4], [cm4] ...) limits
    what follows until the next section header, and [all] ends that. A line counts when it is
    outside any conditional section. An existing unconditional key=other is rewritten in place;
    otherwise the line is appended under [all].
    """
    lines = text.splitlines()
    section = 'all'
    found_at = None
    current = None
    for i, raw in enumerate(lines):
        line = raw.strip()
        if line.startswith('[') and line.endswith(']'):
            section = line[1:-1].strip().lower()
            continue
        if section not in ('all', 'none') and section:
            continue
        m = re.match(r'^%s\s*=\s*(\S*)' % re.escape(key), line)
        if m:
            found_at = i
            current = m.group(1)
    want = str(value)
    if current == want:
        return text, False
    if found_at is not None:
        lines[found_at] = '%s=%s' % (key, want)
        return '\n'.join(lines) + '\n', True
    tail = list(lines)
    while tail and not tail[-1].strip():
        tail.pop()
    if section not in ('all',):
        tail += ['', '[all]']
    tail.append('%s=%s' % (key, want))
    return '\n'.join(tail) + '\n', True


def ensure_cmdline_args(text, args):
    """cmdline.txt (one line) with args appended once: (new text, changed)."""
    line = ' '.join(text.split())
    if args in line:
        return text, False
    return (line + ' ' + args).strip() + '\n', True


def firstrun_script(s):
    """The Bookworm first-run script (Raspberry Pi Imager's approach), values shell-quoted."""
    q = shlex.quote
    keys = '\n'.join(s['ssh_authorized_keys'])
    return '\n'.join([
        '#!/bin/bash',
        '# First-boot settings written by minicluster.cm4 node_flash. Runs once through systemd.run=,',
        '# then removes itself and its arguments from cmdline.txt.',
        'set +e',
        'BOOT=/boot/firmware',
        '[ -d "$BOOT" ] || BOOT=/boot',
        'NEW_HOSTNAME=%s' % q(s['hostname'] or ''),
        'USER_NAME=%s' % q(s['user'] or ''),
        'AUTHORIZED_KEYS=%s' % q(keys),
        'ENABLE_SSH=%d' % (1 if s['ssh'] else 0),
        'PASSWORD_AUTH=%s' % ('yes' if s['ssh_password_authentication'] else 'no'),
        '',
        'if [ -n "$NEW_HOSTNAME" ]; then',
        '  CURRENT_HOSTNAME=$(tr -d " \\t\\n\\r" < /etc/hostname)',
        '  if [ -x /usr/lib/raspberrypi-sys-mods/imager_custom ]; then',
        '    /usr/lib/raspberrypi-sys-mods/imager_custom set_hostname "$NEW_HOSTNAME"',
        '  else',
        '    echo "$NEW_HOSTNAME" > /etc/hostname',
        '    sed -i "s/127.0.1.1.*$CURRENT_HOSTNAME/127.0.1.1\\t$NEW_HOSTNAME/g" /etc/hosts',
        '  fi',
        'fi',
        '',
        '# userconf.txt would otherwise be applied by userconfig.service on the next boot; the user',
        '# is needed now, to install its keys.',
        'if [ -n "$USER_NAME" ] && [ -f "$BOOT/userconf.txt" ] && ! getent passwd "$USER_NAME" >/dev/null; then',
        '  if [ -x /usr/lib/userconf-pi/userconf ]; then',
        '    /usr/lib/userconf-pi/userconf "$USER_NAME" "$(cut -d: -f2- "$BOOT/userconf.txt")" && rm -f "$BOOT/userconf.txt"',
        '  fi',
        'fi',
        '[ -n "$USER_NAME" ] || USER_NAME=$(getent passwd 1000 | cut -d: -f1)',
        '',
        'if [ -n "$AUTHORIZED_KEYS" ] && [ -n "$USER_NAME" ] && getent passwd "$USER_NAME" >/dev/null; then',
        '  if [ -x /usr/lib/raspberrypi-sys-mods/imager_custom ]; then',
        '    /usr/lib/raspberrypi-sys-mods/imager_custom enable_ssh -k "$AUTHORIZED_KEYS"',
        '  else',
        '    HOME_DIR=$(getent passwd "$USER_NAME" | cut -d: -f6)',
        '    install -o "$USER_NAME" -m 700 -d "$HOME_DIR/.ssh"',
        '    printf "%s\\n" "$AUTHORIZED_KEYS" > "$HOME_DIR/.ssh/authorized_keys"',
        '    chown "$USER_NAME:" "$HOME_DIR/.ssh/authorized_keys"',
        '    chmod 600 "$HOME_DIR/.ssh/authorized_keys"',
        '  fi',
        '  if [ "$PASSWORD_AUTH" = no ]; then',
        '    echo "PasswordAuthentication no" > /etc/ssh/sshd_config.d/50-minicluster.conf',
        '  fi',
        'fi',
        'if [ "$ENABLE_SSH" = 1 ]; then',
        '  systemctl enable ssh',
        'fi',
        '',
        'rm -f "$BOOT/firstrun.sh"',
        'sed -i "s| systemd.run.*||g" "$BOOT/cmdline.txt"',
        'exit 0',
        '',
    ])


def _yaml_scalar(value):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return json.dumps(value)
    # A JSON string is a YAML double-quoted scalar.
    return json.dumps(str(value))


def _yaml(value, indent=0):
    """Block-style YAML for dicts, lists and scalars (enough for cloud-init files)."""
    pad = '  ' * indent
    lines = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append('%s%s:' % (pad, k))
                lines.extend(_yaml(v, indent + 1))
            elif isinstance(v, dict):
                lines.append('%s%s: {}' % (pad, k))
            elif isinstance(v, list):
                lines.append('%s%s: []' % (pad, k))
            elif v is None:
                lines.append('%s%s: null' % (pad, k))
            else:
                lines.append('%s%s: %s' % (pad, k, _yaml_scalar(v)))
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, (dict, list)) and v:
                sub = _yaml(v, indent + 1)
                lines.append('%s- %s' % (pad, sub[0].strip()))
                lines.extend(sub[1:])
            else:
                lines.append('%s- %s' % (pad, _yaml_scalar(v)))
    return lines


def user_data(s):
    doc = {}
    if s['hostname']:
        doc['hostname'] = s['hostname']
        doc['manage_etc_hosts'] = True
    if s['user']:
        user = {'name': s['user'], 'groups': ','.join(DEFAULT_GROUPS), 'shell': '/bin/bash',
                'sudo': 'ALL=(ALL) NOPASSWD:ALL'}
        if s['password_hash']:
            user['lock_passwd'] = False
            user['passwd'] = s['password_hash']
        else:
            user['lock_passwd'] = True
        if s['ssh_authorized_keys']:
            user['ssh_authorized_keys'] = list(s['ssh_authorized_keys'])
        doc['users'] = [user]
    elif s['ssh_authorized_keys']:
        doc['ssh_authorized_keys'] = list(s['ssh_authorized_keys'])
    doc['ssh_pwauth'] = s['ssh_password_authentication']
    # Raspberry Pi's cloud-init enables the SSH server with this key.
    doc['enable_ssh'] = s['ssh']
    return '#cloud-config\n# First-boot settings written by minicluster.cm4 node_flash.\n' + '\n'.join(_yaml(doc)) + '\n'


def meta_data(s, digest):
    name = s['hostname'] or 'node'
    lines = ['instance-id: %s' % _yaml_scalar('minicluster-%s-%s' % (name, digest.split(':')[-1][:12]))]
    if s['hostname']:
        lines.append('local-hostname: %s' % _yaml_scalar(s['hostname']))
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------------
# Applying


def detect_style(fs):
    if any(fs.exists(n) for n in ('user-data', 'meta-data', 'network-config')):
        return 'cloud-init'
    cmdline = fs.read('cmdline.txt') or b''
    if b'ds=nocloud' in cmdline or b'cloud-init' in cmdline:
        return 'cloud-init'
    return 'bookworm'


def plan_files(fs, s, digest):
    """{name: bytes or None (delete)} of the boot partition files the settings want."""
    style = s['style'] if s['style'] != 'auto' else detect_style(fs)
    want = {}
    if s['enable_uart']:
        config = (fs.read('config.txt') or b'').decode('utf-8', 'replace')
        new, changed = ensure_config_line(config, 'enable_uart', 1)
        if changed:
            want['config.txt'] = new.encode('utf-8')
    if s['ssh']:
        want['ssh'] = b''
    if style == 'bookworm':
        if s['user']:
            want['userconf.txt'] = ('%s:%s\n' % (s['user'], s['password_hash'] or '!')).encode('utf-8')
        if s['hostname'] or s['ssh_authorized_keys']:
            want['firstrun.sh'] = firstrun_script(s).encode('utf-8')
            cmdline = (fs.read('cmdline.txt') or b'').decode('utf-8', 'replace')
            if not cmdline.strip():
                raise FirstbootError('the boot partition of %s has no cmdline.txt to run firstrun.sh from' % fs.path)
            new, changed = ensure_cmdline_args(cmdline, FIRSTRUN_ARGS)
            if changed:
                want['cmdline.txt'] = new.encode('utf-8')
    else:
        want['user-data'] = user_data(s).encode('utf-8')
        want['meta-data'] = meta_data(s, digest).encode('utf-8')
        if s['network_config']:
            want['network-config'] = '\n'.join(_yaml(s['network_config'])).encode('utf-8') + b'\n'
        elif not fs.exists('network-config'):
            want['network-config'] = '\n'.join(_yaml(DEFAULT_NETWORK_CONFIG)).encode('utf-8') + b'\n'
    return style, want


def apply(path, settings, sector_size=512, runner=None):
    """Customise the boot partition of the disk (or image) at path.

    Returns {'style', 'partition', 'changed_files', 'digest'}: names only, never contents.
    """
    s = normalise(settings)
    digest = settings_digest(settings)
    part = find_boot_partition(path, sector_size)
    fs = BootFs(path, part.offset, runner=runner)
    style, want = plan_files(fs, s, digest)
    changed = []
    for name in sorted(want):
        data = want[name]
        if fs.read(name) == data:
            continue
        fs.write(name, data)
        changed.append(name)
    return {'style': style, 'partition': part.as_dict(), 'changed_files': changed, 'digest': digest}
