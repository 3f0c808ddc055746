# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""K3s's config.yaml: merge the layers of role variables the way K3s merges its files, and check
every key and value before anything is written to a node.

K3s reads /etc/rancher/k3s/config.yaml and then config.yaml.d/*.yaml: for each key the last value
wins, and a key written as ``name+`` appends to the value so far instead. Keys are the long names of
``k3s server`` / ``k3s agent`` flags; K3s skips unknown keys with only a warning, which hides typos,
so here an unknown key is an error.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import re

# `k3s agent` flags (K3s v1.29-v1.33), by the type their value takes.
AGENT_BOOL = frozenset((
    'debug', 'alsologtostderr', 'with-node-id', 'docker', 'protect-kernel-defaults', 'selinux',
    'prefer-bundled-bin', 'disable-default-registry-endpoint', 'nonroot-devices', 'rootless',
))
AGENT_STR = frozenset((
    'v', 'vmodule', 'log', 'data-dir', 'node-name', 'image-credential-provider-bin-dir',
    'image-credential-provider-config', 'container-runtime-endpoint', 'default-runtime',
    'image-service-endpoint', 'snapshotter', 'private-registry', 'system-default-registry', 'resolv-conf',
    'flannel-iface', 'flannel-conf', 'flannel-cni-conf', 'lb-server-port', 'pause-image', 'vpn-auth',
    'vpn-auth-file', 'bind-address', 'server',
))
AGENT_LIST = frozenset((
    'node-label', 'node-taint', 'node-ip', 'node-external-ip', 'node-internal-dns', 'node-external-dns',
    'kubelet-arg', 'kube-proxy-arg', 'airgap-extra-registry',
))
SERVER_BOOL = AGENT_BOOL | frozenset((
    'tls-san-security', 'flannel-ipv6-masq', 'flannel-external-ip', 'etcd-expose-metrics',
    'etcd-disable-snapshots', 'etcd-snapshot-compress', 'etcd-s3', 'disable-scheduler',
    'disable-cloud-controller', 'disable-kube-proxy', 'disable-network-policy', 'disable-helm-controller',
    'disable-apiserver', 'disable-controller-manager', 'disable-etcd', 'embedded-registry', 'supervisor-metrics',
    'secrets-encryption', 'enable-pprof', 'node-name-from-cloud-provider-metadata', 'cluster-init',
))
SERVER_STR = AGENT_STR | frozenset((
    'advertise-address', 'advertise-port', 'https-listen-port', 'supervisor-port', 'apiserver-port',
    'service-node-port-range', 'cluster-domain', 'flannel-backend', 'egress-selector-mode',
    'servicelb-namespace', 'write-kubeconfig', 'write-kubeconfig-mode', 'write-kubeconfig-group',
    'helm-job-image', 'datastore-endpoint', 'datastore-cafile', 'datastore-certfile', 'datastore-keyfile',
    'etcd-snapshot-name', 'etcd-snapshot-schedule-cron', 'etcd-snapshot-retention', 'etcd-snapshot-dir',
    'default-local-storage-path', 'secrets-encryption-provider',
))
SERVER_LIST = AGENT_LIST | frozenset((
    'tls-san', 'cluster-cidr', 'service-cidr', 'cluster-dns', 'kube-apiserver-arg', 'etcd-arg',
    'kube-controller-manager-arg', 'kube-scheduler-arg', 'kube-cloud-controller-manager-arg', 'disable',
))
FLAGS = {
    'server': (SERVER_BOOL, SERVER_STR, SERVER_LIST),
    'agent': (AGENT_BOOL, AGENT_STR, AGENT_LIST),
}
# Keys the roles compute themselves; secrets never go into config.yaml (they go to a 0600 env file).
RESERVED = {
    'token': 'k3s_token', 'token-file': 'k3s_token', 'agent-token': 'k3s_token', 'agent-token-file': 'k3s_token',
    'server': 'k3s_api_address', 'cluster-init': 'the number of servers in the inventory',
    'node-name': 'k3s_node_name', 'config': 'nothing (the roles own the config file)',
    'data-dir': 'nothing (the roles place files under the default data directory)',
}
_CONTROL = re.compile(r'[\x00-\x1f\x7f]')


class ConfigError(ValueError):
    """One line: which layer, which key, what is wrong and what to do."""


def _scalar(layer, key, value):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or value in (float('inf'), float('-inf')):
            raise ConfigError('%s: %s must be finite, got %r' % (layer, key, value))
        return repr(value)
    if not isinstance(value, str):
        raise ConfigError('%s: %s takes a string, got %s' % (layer, key, type(value).__name__))
    if _CONTROL.search(value):
        raise ConfigError('%s: %s contains a control character; remove it' % (layer, key))
    return value


def _value(role, layer, key, value):
    bools, strs, lists = FLAGS[role]
    if key in bools:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ('true', 'false'):
            return value.lower() == 'true'
        raise ConfigError('%s: %s takes true or false, got %r' % (layer, key, value))
    if key in strs:
        return _scalar(layer, key, value)
    if key in lists:
        values = value if isinstance(value, list) else [value]
        return [_scalar(layer, key, v) for v in values]
    other = 'server' if role == 'agent' else 'agent'
    hint = ' (a `k3s %s` flag: put it in k3s_%s_config)' % (other, other) if key in _all_keys(other) else ''
    raise ConfigError('%s: %s is not a `k3s %s` flag%s; see `k3s %s --help`' % (layer, key, role, hint, role))


def _all_keys(role):
    bools, strs, lists = FLAGS[role]
    return bools | strs | lists


def merge(layers, role, computed=None):
    """Merge [(layer name, dict), ...] in order (later wins, `key+` appends), then the computed keys.

    Returns the merged dict with its keys sorted; raises ConfigError on the first bad entry.
    """
    if role not in FLAGS:
        raise ConfigError('role must be server or agent, got %r' % (role,))
    merged = {}
    for layer, data in layers:
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ConfigError('%s must be a mapping of K3s flag names to values, got %s' % (layer, type(data).__name__))
        for raw_key, value in data.items():
            if not isinstance(raw_key, str) or not raw_key:
                raise ConfigError('%s: key %r must be a flag name' % (layer, raw_key))
            append = raw_key.endswith('+')
            key = raw_key[:-1] if append else raw_key
            if key.startswith('-'):
                raise ConfigError('%s: write %s without the leading dashes' % (layer, key))
            if key in RESERVED:
                raise ConfigError('%s: %s is set by the role; use %s instead' % (layer, key, RESERVED[key]))
            value = _value(role, layer, key, value)
            if append and isinstance(value, list):
                merged[key] = merged.get(key, []) + value
            elif append and isinstance(value, str) and isinstance(merged.get(key), str):
                merged[key] = merged[key] + ',' + value
            elif append and isinstance(value, bool):
                raise ConfigError('%s: %s+ cannot append to a true/false flag' % (layer, key))
            else:
                merged[key] = value
    for key, value in (computed or {}).items():
        merged[key] = _value(role, 'computed', key, value)
    return dict(sorted(merged.items()))


def token_matches(given, cluster):
    """Whether a configured token opens the cluster whose server token file holds `cluster`.

    K3s accepts the secure form K10<CA hash>::server:<passphrase> or the bare passphrase.
    """
    def parts(token):
        if token.startswith('K10') and '::' in token:
            ca_hash, creds = token[3:].split('::', 1)
            return ca_hash, creds.split(':', 1)[-1]
        return None, token
    g_hash, g_pass = parts(given.strip())
    c_hash, c_pass = parts(cluster.strip())
    return g_pass == c_pass and (g_hash is None or g_hash == c_hash)
