# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the k3s roles: merge and check config.yaml, compare tokens."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.minicluster.cm4.plugins.module_utils.k3s.config import ConfigError, merge, token_matches


def k3s_config(layers, role, computed=None):
    """layers: a list of [name, mapping] pairs, lowest precedence first."""
    try:
        pairs = [(str(name), data) for name, data in layers]
    except (TypeError, ValueError):
        raise AnsibleFilterError('k3s_config takes a list of [layer name, mapping] pairs')
    try:
        return merge(pairs, role, computed)
    except ConfigError as err:
        raise AnsibleFilterError(str(err))


def k3s_token_matches(given, cluster):
    if not isinstance(given, str) or not isinstance(cluster, str):
        raise AnsibleFilterError('k3s_token_matches compares two strings')
    return token_matches(given, cluster)


class FilterModule(object):

    def filters(self):
        return {'k3s_config': k3s_config, 'k3s_token_matches': k3s_token_matches}
