# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The GPIO seam against doubles of libgpiod's Python bindings, as their documentation describes them:

2.x: gpiod.request_lines(path, consumer=, config={offset: LineSettings(direction=, output_value=)})
     returns a request with set_values({offset: Value}) and release(); a released line keeps its state.
1.x: gpiod.Chip(path).get_lines([offsets]) -> bulk; bulk.request(consumer=, type=LINE_REQ_DIR_OUT,
     default_vals=[...]), bulk.set_values([...]), bulk.release(); LINE_REQ_DIR_IN for inputs.
"""

from __future__ import annotations

import enum
import types

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.transports import gpio


class Pins(object):
    """The chip: each line is ('out', level) or ('in', None); requests are exclusive."""

    def __init__(self):
        self.state = {}
        self.held = set()
        self.history = []

    def claim(self, offsets):
        busy = self.held & set(offsets)
        if busy:
            raise OSError(16, 'Device or resource busy')
        self.held |= set(offsets)

    def set(self, offset, direction, level=None):
        self.state[offset] = (direction, level)
        self.history.append((offset, direction, level))


def v2_module(pins):
    class Direction(enum.Enum):
        INPUT = 1
        OUTPUT = 2

    class Value(enum.Enum):
        INACTIVE = 0
        ACTIVE = 1

    class LineSettings(object):
        def __init__(self, direction=Direction.INPUT, output_value=Value.INACTIVE):
            self.direction, self.output_value = direction, output_value

    class Request(object):
        def __init__(self, offsets):
            self.offsets = offsets

        def set_values(self, values):
            for offset, value in values.items():
                assert offset in self.offsets
                pins.set(offset, 'out', value.value)

        def release(self):
            pins.held -= set(self.offsets)

    def request_lines(path, consumer=None, config=None):
        assert path == '/dev/gpiochip0' and consumer == gpio.CONSUMER
        pins.claim(config)
        for offset, settings in config.items():
            if settings.direction is Direction.OUTPUT:
                pins.set(offset, 'out', settings.output_value.value)
            else:
                pins.set(offset, 'in')
        return Request(list(config))

    line = types.SimpleNamespace(Direction=Direction, Value=Value)
    return types.SimpleNamespace(request_lines=request_lines, LineSettings=LineSettings, line=line), Direction, Value


def v1_module(pins):
    class Bulk(object):
        def __init__(self, offsets):
            self.offsets = offsets

        def request(self, consumer=None, type=None, default_vals=None):  # pylint: disable=redefined-builtin
            assert consumer == gpio.CONSUMER
            pins.claim(self.offsets)
            for i, offset in enumerate(self.offsets):
                if type == 'out':
                    pins.set(offset, 'out', default_vals[i])
                else:
                    pins.set(offset, 'in')

        def set_values(self, values):
            for offset, value in zip(self.offsets, values):
                pins.set(offset, 'out', value)

        def release(self):
            pins.held -= set(self.offsets)

    class Chip(object):
        def __init__(self, path):
            assert path == '/dev/gpiochip0'

        def get_lines(self, offsets):
            return Bulk(list(offsets))

        def close(self):
            pass

    return types.SimpleNamespace(Chip=Chip, LINE_REQ_DIR_OUT='out', LINE_REQ_DIR_IN='in')


@pytest.fixture(params=['v2', 'v1'])
def chip(request, monkeypatch):
    pins = Pins()
    if request.param == 'v2':
        module, direction, value = v2_module(pins)
        monkeypatch.setattr(gpio, 'Direction', direction)
        monkeypatch.setattr(gpio, 'Value', value)
    else:
        module = v1_module(pins)
        monkeypatch.setattr(gpio, 'Direction', None)
    monkeypatch.setattr(gpio, 'gpiod', module)
    monkeypatch.setattr(gpio, 'HAS_GPIOD', True)
    monkeypatch.setattr(gpio.os.path, 'exists', lambda p: p == '/dev/gpiochip0')
    return pins


def test_bootsel_sequence_levels_and_release(chip):
    lines = gpio.open_lines('gpiochip0')
    lines.output({21: 0, 25: 1})
    lines.output({25: 0})
    lines.output({25: 1})
    lines.release([21, 25])
    lines.close()
    assert [h for h in chip.history if h[0] == 25] == [(25, 'out', 1), (25, 'out', 0), (25, 'out', 1), (25, 'in', None)]
    assert chip.state == {21: ('in', None), 25: ('in', None)}
    assert chip.held == set()


def test_lines_held_by_another_program(chip):
    chip.held.add(25)
    with pytest.raises(gpio.GpioError, match='cannot drive GPIO 21, 25 on /dev/gpiochip0: .*busy'):
        gpio.open_lines('/dev/gpiochip0').output({21: 0, 25: 1})


def test_specs():
    assert gpio.parse_spec('gpiochip0') == ('chip', '/dev/gpiochip0')
    assert gpio.parse_spec('/dev/gpiochip4') == ('chip', '/dev/gpiochip4')
    assert gpio.parse_spec('unix:/tmp/hat/gpio.sock') == ('unix', '/tmp/hat/gpio.sock')
    for bad in ('/dev/sda', 'gpiochip', 'unix:', 'gpiochip0\n', 3):
        with pytest.raises(ValueError, match='not a GPIO chip'):
            gpio.parse_spec(bad)


def test_missing_chip_or_library(monkeypatch):
    monkeypatch.setattr(gpio, 'HAS_GPIOD', True)
    with pytest.raises(gpio.GpioError, match='/dev/gpiochip7 does not exist'):
        gpio.open_lines('gpiochip7')
    monkeypatch.setattr(gpio, 'HAS_GPIOD', False)
    with pytest.raises(gpio.GpioError, match='python3-libgpiod'):
        gpio.open_lines('gpiochip0')
