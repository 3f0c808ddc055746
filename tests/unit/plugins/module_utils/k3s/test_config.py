# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest

from ansible_collections.minicluster.cm4.plugins.module_utils.k3s.config import ConfigError, merge, token_matches


def test_later_layers_win_and_plus_appends_as_k3s_does():
    merged = merge([
        ('k3s_config', {'node-label': ['zone=a'], 'flannel-backend': 'vxlan', 'kubelet-arg': 'max-pods=50'}),
        ('k3s_server_config', {'flannel-backend': 'host-gw', 'node-label+': ['tier=server']}),
        ('k3s_host_config', {'node-label+': 'disk=nvme', 'kubelet-arg': ['max-pods=80']}),
    ], 'server')
    assert merged == {'flannel-backend': 'host-gw', 'kubelet-arg': ['max-pods=80'],
                      'node-label': ['zone=a', 'tier=server', 'disk=nvme']}
    assert list(merged) == sorted(merged)


def test_computed_keys_are_added_and_checked():
    merged = merge([('k3s_config', {})], 'server', {'node-name': 'node1', 'cluster-init': True})
    assert merged == {'cluster-init': True, 'node-name': 'node1'}
    assert merge([], 'agent', {'server': 'https://10.0.0.11:6443'}) == {'server': 'https://10.0.0.11:6443'}


def test_scalars_become_strings_and_bools_stay_bools():
    merged = merge([('l', {'https-listen-port': 6443, 'secrets-encryption': 'true', 'disable': 'traefik'})], 'server')
    assert merged == {'https-listen-port': '6443', 'secrets-encryption': True, 'disable': ['traefik']}


@pytest.mark.parametrize('layer, role, fragment', [
    ({'node-lable': ['a=b']}, 'server', 'node-lable is not a `k3s server` flag'),
    ({'disable': ['traefik']}, 'agent', 'put it in k3s_server_config'),
    ({'token': 'x'}, 'server', 'use k3s_token'),
    ({'server': 'https://x:6443'}, 'agent', 'use k3s_api_address'),
    ({'cluster-init': True}, 'server', 'number of servers'),
    ({'--tls-san': ['a']}, 'server', 'without the leading dashes'),
    ({'secrets-encryption': 'yes'}, 'server', 'takes true or false'),
    ({'node-label': ['a=b\nc']}, 'agent', 'control character'),
    ({'node-label': [{'a': 1}]}, 'agent', 'takes a string'),
    ({'kubelet-arg': [float('nan')]}, 'agent', 'must be finite'),
    ({'selinux+': True}, 'agent', 'cannot append'),
])
def test_bad_entries_are_one_line_errors_naming_layer_and_key(layer, role, fragment):
    with pytest.raises(ConfigError) as err:
        merge([('k3s_host_config', layer)], role)
    assert fragment in str(err.value)
    assert str(err.value).startswith('k3s_host_config: ')
    assert '\n' not in str(err.value)


def test_a_layer_must_be_a_mapping():
    with pytest.raises(ConfigError, match='k3s_config must be a mapping'):
        merge([('k3s_config', ['tls-san'])], 'server')


def test_role_must_be_known():
    with pytest.raises(ConfigError, match='server or agent'):
        merge([], 'etcd')


@pytest.mark.parametrize('given, cluster, same', [
    ('secret1234', 'K10abc::server:secret1234', True),
    ('K10abc::server:secret1234', 'K10abc::server:secret1234\n', True),
    ('K10fff::server:secret1234', 'K10abc::server:secret1234', False),
    ('secret12345', 'K10abc::server:secret1234', False),
    ('secret1234', 'secret1234', True),
])
def test_token_matches_the_secure_and_the_short_form(given, cluster, same):
    assert token_matches(given, cluster) is same
