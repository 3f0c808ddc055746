# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest

from ansible_collections.minicluster.cm4.plugins.inventory.hats import check_hats, group_of


def test_defaults_and_normalisation():
    hats = check_hats([{'name': 'alpha', 'controller': '192.0.2.1', 'nodes': {'2': '192.0.2.12'}}])
    assert hats == [{'name': 'alpha', 'controller': '192.0.2.1', 'slots': [1, 2, 3, 4], 'nodes': {2: '192.0.2.12'},
                     'vars': {}}]
    assert group_of('beta.two-x') == 'hat_beta_two_x'


@pytest.mark.parametrize('hats, message', [
    ([], 'hats must be a non-empty list'),
    (['alpha'], 'hats[0] must be a mapping'),
    ([{'name': 'a b', 'controller': 'x'}], 'hats[0].name must be letters, digits'),
    ([{'name': 'a', 'controller': 'x y'}], 'hats[0] (a).controller must be an address or host name'),
    ([{'name': 'a', 'controller': 'x', 'slots': [0, 5]}], 'slots must list distinct node numbers 1..4'),
    ([{'name': 'a', 'controller': 'x', 'slots': [1, 1]}], 'slots must list distinct node numbers 1..4'),
    ([{'name': 'a', 'controller': 'x', 'slots': [1], 'nodes': {2: 'y'}}], 'nodes: 2 is not one of its slots [1]'),
    ([{'name': 'a', 'controller': 'x', 'nodes': {1: 'y\nz'}}], 'nodes.1 must be an address or host name'),
    ([{'name': 'a', 'controller': 'x', 'hosts': 4}], 'unknown key hosts'),
    ([{'name': 'a', 'controller': 'x'}, {'name': 'b', 'controller': 'x'}], 'hats: controller x given twice'),
    ([{'name': 'a', 'controller': 'x'}, {'name': 'a', 'controller': 'y'}], 'hats: name a given twice'),
])
def test_bad_hats(hats, message):
    with pytest.raises(ValueError) as info:
        check_hats(hats)
    assert message in str(info.value)
