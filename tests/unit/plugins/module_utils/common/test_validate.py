# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.minicluster.cm4.plugins.module_utils.common import validate
from ansible_collections.minicluster.cm4.plugins.module_utils.common.validate import InvalidOption

JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4),
    max_leaves=10)


@pytest.mark.parametrize('value, message', [
    (float('inf'), 'delay must be a finite number from 0 to 60 seconds, not inf'),
    (float('nan'), 'delay must be a finite number from 0 to 60 seconds, not nan'),
    (1e9, 'delay must be from 0 to 60 seconds, not 1000000000'),
    (-0.5, 'delay must be from 0 to 60 seconds, not -0.5'),
    (True, 'delay must be a number, not True'),
    ('2', "delay must be a number, not '2'"),
])
def test_number_refuses(value, message):
    with pytest.raises(InvalidOption) as exc:
        validate.number('delay', value, 0, 60, unit='seconds')
    assert str(exc.value) == message


def test_number_accepts_the_bounds_and_unset():
    assert validate.number('delay', 0, 0, 60) == 0
    assert validate.number('delay', 60.0, 0, 60) == 60.0
    assert validate.number('delay', None, 0, 60) is None
    with pytest.raises(InvalidOption):
        validate.number('timeout', 0, 0, 60, low_open=True)


@pytest.mark.parametrize('value, ok', [
    (4096, True), (8192, True), (64 * 1048576, True), (4097, False), (0, False), (128 * 1048576, False)])
def test_aligned(value, ok):
    if ok:
        assert validate.aligned('chunk', value, 4096, 4096, 64 * 1048576) == value
    else:
        with pytest.raises(InvalidOption, match='chunk must be'):
            validate.aligned('chunk', value, 4096, 4096, 64 * 1048576)


@pytest.mark.parametrize('value', [12, 0, -1, 5, True, 2.5, '1,3', 'node2', '', None, [1]])
def test_node_number_refuses(value):
    with pytest.raises(InvalidOption, match='must be a node number 1 to 4'):
        validate.node_number('node', value)


def test_node_list_and_keyed():
    assert validate.node_list('nodes', [3, '1', 3.0, ' 2']) == [1, 2, 3]
    with pytest.raises(InvalidOption, match='at least one node'):
        validate.node_list('nodes', [])
    assert validate.node_keyed('usb_paths', {'node1': 'a', 2: 'b', '3': 'c'}) == {1: 'a', 2: 'b', 3: 'c'}
    with pytest.raises(InvalidOption, match='names node 1 twice'):
        validate.node_keyed('usb_paths', {'1': 'a', 'node1': 'b'})
    with pytest.raises(InvalidOption, match="key 'x' is not a node number"):
        validate.node_keyed('usb_paths', {'x': 'a'})


@pytest.mark.parametrize('value', ['a\nb', 'a\rb', 'a\x00', 'a\x1b[31m', 'a\x7f', u'a\x85'])
def test_text_refuses_control_characters(value):
    with pytest.raises(InvalidOption, match='must not contain control characters'):
        validate.text('name', value)


def test_text_multiline_allows_newlines_only():
    assert validate.text('body', 'a\nb', multiline=True) == 'a\nb'
    with pytest.raises(InvalidOption):
        validate.text('body', 'a\x00b', multiline=True)


def test_known_keys():
    validate.known_keys('fan', {'mode': 'pwm'}, ('mode', 'duty_percent'))
    with pytest.raises(InvalidOption) as exc:
        validate.known_keys('fan', {'mdoe': 'pwm', 'mode': 'pwm'}, ('mode', 'duty_percent'))
    assert str(exc.value) == 'fan has unknown key mdoe: known keys are duty_percent, mode'


def test_paths(tmp_path):
    regular = tmp_path / 'file'
    regular.write_text('x')
    empty = tmp_path / 'empty'
    empty.write_text('')
    assert validate.directory('state_dir', str(tmp_path / 'new' / 'deeper')) == str(tmp_path / 'new' / 'deeper')
    with pytest.raises(InvalidOption, match='must be a directory, but it is a file'):
        validate.directory('state_dir', str(regular))
    with pytest.raises(InvalidOption, match='is not a directory'):
        validate.directory('state_dir', str(regular / 'below'))
    assert validate.regular_file('image', str(regular)) == str(regular)
    with pytest.raises(InvalidOption, match='is empty'):
        validate.regular_file('image', str(empty))
    with pytest.raises(InvalidOption, match='is a directory'):
        validate.regular_file('image', str(tmp_path))
    with pytest.raises(InvalidOption, match='not found'):
        validate.regular_file('image', str(tmp_path / 'nope'))
    with pytest.raises(InvalidOption, match='is a directory'):
        validate.file_target('progress_file', str(tmp_path))


@settings(max_examples=150, deadline=None)
@given(value=JUNK)
def test_junk_gives_a_one_line_refusal_or_a_valid_value(value):
    checks = [
        lambda v: validate.number('x', v, 0, 60),
        lambda v: validate.aligned('x', v, 4096, 4096, 1 << 26),
        lambda v: validate.text('x', v),
        lambda v: validate.node_number('x', v),
        lambda v: validate.node_list('x', v),
        lambda v: validate.node_keyed('x', v),
        lambda v: validate.known_keys('x', v, ('a', 'b')),
    ]
    for check in checks:
        try:
            out = check(value)
        except InvalidOption as exc:
            assert '\n' not in str(exc) and str(exc)
            continue
        if isinstance(out, float):
            assert math.isfinite(out)
