# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks that run on a module's options before anything is sent to the hat, a disk or a node.

AnsibleModule converts types; it lets through what is the right type and still wrong: `inf` and
`nan` as a float, `True` as an int, a newline in a string that ends up in a file, a key nobody
reads, a directory option that names a regular file. Every check here raises InvalidOption with a
one-line message that says which option, what was given and what is accepted; a module calls them
all in one place and turns the first failure into fail_json, so a refused input changes nothing.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import sys

NODES = (1, 2, 3, 4)
# C0 and C1 controls and DEL: never meaningful in a name, a path or a value written to a file.
_CONTROL = re.compile(u'[\x00-\x1f\x7f-\x9f]')
_CONTROL_BUT_NEWLINE = re.compile(u'[\x00-\x08\x0b-\x1f\x7f-\x9f]')


class InvalidOption(ValueError):
    """An option value that is refused before anything is touched."""


def _shown(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _is_bool(value):
    return isinstance(value, bool)


def number(name, value, low=None, high=None, integer=False, low_open=False, unit=''):
    """A finite number within [low, high] (low excluded when low_open); None passes (option unset)."""
    if value is None:
        return None
    if _is_bool(value) or not isinstance(value, (int, float)):
        raise InvalidOption('%s must be a number, not %s' % (name, _shown(value)))
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidOption('%s must be a finite number%s, not %s' % (name, _range_text(low, high, unit, low_open), value))
    if integer and isinstance(value, float) and not value.is_integer():
        raise InvalidOption('%s must be a whole number, not %s' % (name, value))
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        raise InvalidOption('%s must be%s, not %s' % (name, _range_text(low, high, unit, low_open), _num(value)))
    return int(value) if integer else value


def _num(value):
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _range_text(low, high, unit, low_open=False):
    unit = (' ' + unit) if unit else ''
    if low is not None and high is not None:
        if low_open:
            return ' more than %s and at most %s%s' % (_num(low), _num(high), unit)
        return ' from %s to %s%s' % (_num(low), _num(high), unit)
    if low is not None:
        return (' more than %s%s' if low_open else ' at least %s%s') % (_num(low), unit)
    if high is not None:
        return ' at most %s%s' % (_num(high), unit)
    return ''


def aligned(name, value, step, low, high):
    """An integer byte count within [low, high] that is a multiple of step."""
    if value is None:
        return None
    value = number(name, value, low, high, integer=True, unit='bytes')
    if value % step:
        raise InvalidOption('%s must be a multiple of %d bytes, not %d (try %d)'
                            % (name, step, value, max(low, value - value % step)))
    return value


def text(name, value, max_length=None, multiline=False, empty=True):
    """A string without control characters (newlines allowed only when multiline)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidOption('%s must be a string, not %s' % (name, _shown(value)))
    found = (_CONTROL_BUT_NEWLINE if multiline else _CONTROL).search(value)
    if found:
        raise InvalidOption('%s must not contain control characters (found %r at position %d)'
                            % (name, found.group(0), found.start()))
    if not empty and not value.strip():
        raise InvalidOption('%s must not be empty' % name)
    if max_length is not None and len(value) > max_length:
        raise InvalidOption('%s must be at most %d characters long, not %d' % (name, max_length, len(value)))
    return value


def matches(name, value, pattern, what):
    """A string matching a full regular expression (an allow-list), described by what."""
    if value is None:
        return None
    text(name, value)
    if not re.fullmatch(pattern, value):
        raise InvalidOption('%s must be %s, not %s' % (name, what, _shown(value)))
    return value


def known_keys(name, value, allowed):
    """A dict whose keys are all in allowed."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidOption('%s must be a dictionary, not %s' % (name, _shown(value)))
    unknown = sorted(str(k) for k in value if str(k) not in allowed)
    if unknown:
        shown = ', '.join(k if re.fullmatch(r'[\w.-]+', k) else _shown(k) for k in unknown)
        raise InvalidOption('%s has unknown key%s %s: known keys are %s'
                            % (name, 's' if len(unknown) > 1 else '', shown, ', '.join(sorted(allowed))))
    return value


def node_number(name, value):
    """A node as a real integer 1..4 ('2' and 2 pass; True, 2.5, 12 and 'node2' do not)."""
    if _is_bool(value) or not isinstance(value, (int, float, str)):
        raise InvalidOption('%s must be a node number 1 to 4, not %s' % (name, _shown(value)))
    if isinstance(value, str):
        if not re.fullmatch(r'\s*[0-9]+\s*', value):
            raise InvalidOption('%s must be a node number 1 to 4, not %s' % (name, _shown(value)))
        value = int(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidOption('%s must be a node number 1 to 4, not %s' % (name, value))
        value = int(value)
    if value not in NODES:
        raise InvalidOption('%s must be a node number 1 to 4, not %d: the hat has four slots' % (name, value))
    return value


def node_list(name, values):
    """Sorted, de-duplicated node numbers; refuses an empty list (None included)."""
    if values is None:
        values = []
    if not isinstance(values, (list, tuple)):
        values = [values]
    if not values:
        raise InvalidOption('%s must name at least one node (1 to 4)' % name)
    return sorted(set(node_number(name, v) for v in values))


def node_keyed(name, value):
    """{node: item} from a dict keyed 1..4, '1'..'4' or 'node1'..'node4'."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidOption('%s must be a dictionary of node number to value, not %s' % (name, _shown(value)))
    out = {}
    for key, item in value.items():
        raw = key[4:] if isinstance(key, str) and key.startswith('node') else key
        try:
            node = node_number(name, raw)
        except InvalidOption:
            raise InvalidOption('%s key %s is not a node number 1 to 4' % (name, _shown(key)))
        if node in out:
            raise InvalidOption('%s names node %d twice' % (name, node))
        out[node] = item
    return out


def directory(name, path):
    """A directory, or a path that can become one: nothing along it may be a regular file."""
    if path is None:
        return None
    text(name, path, empty=False)
    probe = os.path.abspath(path)
    while True:
        try:
            st = os.stat(probe)
        except (FileNotFoundError, NotADirectoryError):
            parent = os.path.dirname(probe)
            if parent == probe:
                return path
            probe = parent
            continue
        except OSError as exc:
            raise InvalidOption('%s %s cannot be used: %s' % (name, path, exc.strerror or exc))
        if not stat.S_ISDIR(st.st_mode):
            where = '' if probe == os.path.abspath(path) else ' (%s is not a directory)' % probe
            raise InvalidOption('%s %s must be a directory, but it is a file%s: give a directory' % (name, path, where))
        return path


def regular_file(name, path, nonempty=True):
    """An existing, readable regular file (a block device is refused: images are files)."""
    if path is None:
        return None
    text(name, path, empty=False)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InvalidOption('%s %s not found on the controller: check the path' % (name, path))
    except OSError as exc:
        raise InvalidOption('%s %s cannot be read: %s' % (name, path, exc.strerror or exc))
    if stat.S_ISDIR(st.st_mode):
        raise InvalidOption('%s %s is a directory: give the file itself' % (name, path))
    if not stat.S_ISREG(st.st_mode):
        raise InvalidOption('%s %s is not a regular file: give a file' % (name, path))
    if not os.access(path, os.R_OK):
        raise InvalidOption('%s %s is not readable: check its permissions' % (name, path))
    if nonempty and st.st_size == 0:
        raise InvalidOption('%s %s is empty: give the real file (was a download cut short?)' % (name, path))
    return path


def file_target(name, path):
    """A file to be written: not a directory, its directory usable."""
    if path is None:
        return None
    text(name, path, empty=False)
    if os.path.isdir(path):
        raise InvalidOption('%s %s is a directory: give a file name' % (name, path))
    directory('directory of %s' % name, os.path.dirname(os.path.abspath(path)))
    return path


def one_line(text):
    """text with its control characters shown as escapes (a newline as \\n): a message stays one line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def ansible_module(module_class, **kwargs):
    """module_class(**kwargs) (AnsibleModule), whose refusals of the options are one line each.

    AnsibleModule quotes a refused value as given, newlines and all; and ansible-core lets the
    OverflowError of int(float('inf')) escape as a traceback, and the TypeError of a suboption dict
    given as a boolean or a number.
    """
    from ansible.module_utils import basic

    class OneLineModule(module_class):
        _checking_options = True

        def __init__(self, **options):
            super(OneLineModule, self).__init__(**options)
            self._checking_options = False

        def fail_json(self, msg, **rest):  # pylint: disable=arguments-differ
            if self._checking_options:
                msg = one_line(str(msg))
            return super(OneLineModule, self).fail_json(msg=msg, **rest)

    try:
        return OneLineModule(**kwargs)
    except (OverflowError, TypeError) as exc:
        try:
            given = basic._load_params()  # pylint: disable=protected-access
        except (SystemExit, Exception):  # pylint: disable=broad-except
            given = {}
        spec = kwargs.get('argument_spec') or {}
        msg = None
        for name in sorted(given):
            kind = (spec.get(name) or {}).get('type')
            value = given[name]
            if kind == 'int' and str(value).strip().lower().lstrip('+-') in ('inf', 'infinity'):
                msg = '%s must be a whole number, not infinity' % name
            elif kind == 'dict' and value is not None and not isinstance(value, (dict, str)):
                msg = '%s must be a dictionary, not %s' % (name, _shown(value))
            if msg:
                break
        # There is no module object to call fail_json on: print what it would print.
        msg = msg or 'invalid option value: %s' % one_line(str(exc))
        print('\n%s' % json.dumps({'failed': True, 'msg': msg}))  # pylint: disable=ansible-bad-function
        sys.exit(1)  # pylint: disable=ansible-bad-function
