# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
name: hats
short_description: Controller and node hosts from a short list of cluster hats
version_added: 0.1.0
description:
  - Turns a list of hats (a name and the controller's address each) into the inventory every playbook
    of this collection expects, so that they work on any number of boards.
  - For each hat, a controller host in group C(controller) with C(hat_name), and one host per node in
    group C(nodes) with C(hat_node) (1 to 4), C(hat_controller) (the controller's host name) and
    C(hat_name). Every host of a hat is also in a group C(hat_<name>) (dashes and dots become underscores).
  - The inventory file's name must end in C(hats.yml) or C(hats.yaml).
author:
  - minicluster.cm4 developers (@minicluster)
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin; it marks the file as this plugin's.
    required: true
    type: str
    choices: [minicluster.cm4.hats]
  hats:
    description:
      - The hats. Each is a mapping with C(name) (letters, digits, C(_ . -)) and C(controller) (address
        or DNS name of its controller), and optionally C(slots) (the populated node slots, default all
        four), C(nodes) (node number to the node's address; without it a node is reached by its host
        name) and C(vars) (more variables for the controller, such as C(hat_port)).
    type: list
    elements: dict
    required: true
  controller_name:
    description: Host name of a controller; C({hat}) is replaced by the hat's name.
    type: str
    default: '{hat}-controller'
  node_name:
    description: Host name of a node; C({hat}) and C({node}) are replaced.
    type: str
    default: '{hat}-node{node}'
'''

EXAMPLES = r'''
# inventory/cluster.hats.yml
plugin: minicluster.cm4.hats
hats:
  - name: alpha
    controller: 192.168.1.10
    nodes: {1: 192.168.1.11, 2: 192.168.1.12, 3: 192.168.1.13, 4: 192.168.1.14}
  - name: beta
    controller: beta-pi.local
    slots: [1, 2]
    vars:
      hat_port: /dev/cm4hat
# then: ansible-playbook -i inventory/cluster.hats.yml minicluster.cm4.status
'''

import re

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

NODES = (1, 2, 3, 4)
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$')
ADDRESS_RE = re.compile(r'^[A-Za-z0-9_.:%\[\]-]{1,253}$')
HAT_KEYS = ('name', 'controller', 'slots', 'nodes', 'vars')


def check_hats(hats):
    """Validate the list; returns normalised hats or raises ValueError with one line."""
    if not isinstance(hats, list) or not hats:
        raise ValueError('hats must be a non-empty list of {name, controller}')
    out = []
    for i, hat in enumerate(hats):
        where = 'hats[%d]' % i
        if not isinstance(hat, dict):
            raise ValueError('%s must be a mapping with name and controller, not %r' % (where, hat))
        unknown = sorted(set(hat) - set(HAT_KEYS))
        if unknown:
            raise ValueError('%s: unknown key %s (known: %s)' % (where, ', '.join(unknown), ', '.join(HAT_KEYS)))
        name = hat.get('name')
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ValueError('%s.name must be letters, digits and _ . - (up to 63), not %r' % (where, name))
        controller = hat.get('controller')
        if not isinstance(controller, str) or not ADDRESS_RE.match(controller):
            raise ValueError('%s (%s).controller must be an address or host name, not %r' % (where, name, controller))
        slots = hat.get('slots', list(NODES))
        if (not isinstance(slots, list) or not slots or any(isinstance(s, bool) or s not in NODES for s in slots)
                or len(set(slots)) != len(slots)):
            raise ValueError('%s (%s).slots must list distinct node numbers 1..4, not %r' % (where, name, slots))
        nodes = hat.get('nodes') or {}
        if not isinstance(nodes, dict):
            raise ValueError('%s (%s).nodes must map node numbers to addresses' % (where, name))
        addresses = {}
        for key, address in nodes.items():
            try:
                node = int(key)
            except (TypeError, ValueError):
                node = None
            if node not in slots:
                raise ValueError('%s (%s).nodes: %r is not one of its slots %s' % (where, name, key, slots))
            if not isinstance(address, str) or not ADDRESS_RE.match(address):
                raise ValueError('%s (%s).nodes.%s must be an address or host name, not %r' % (where, name, key, address))
            addresses[node] = address
        extra = hat.get('vars') or {}
        if not isinstance(extra, dict):
            raise ValueError('%s (%s).vars must be a mapping' % (where, name))
        out.append({'name': name, 'controller': controller, 'slots': sorted(slots), 'nodes': addresses, 'vars': extra})
    for key in ('name', 'controller'):
        seen = [h[key] for h in out]
        dupes = sorted(set(v for v in seen if seen.count(v) > 1))
        if dupes:
            raise ValueError('hats: %s %s given twice' % (key, ', '.join(dupes)))
    return out


def group_of(name):
    return 'hat_' + re.sub(r'[^A-Za-z0-9_]', '_', name)


class InventoryModule(BaseInventoryPlugin, Constructable):

    NAME = 'minicluster.cm4.hats'

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and path.endswith(('hats.yml', 'hats.yaml'))

    def _host(self, name, variables):
        self.inventory.add_host(name)
        for key, value in variables.items():
            self.inventory.set_variable(name, key, value)
        strict = self.get_option('strict')
        self._set_composite_vars(self.get_option('compose'), variables, name, strict=strict)
        self._add_host_to_composed_groups(self.get_option('groups'), variables, name, strict=strict)
        self._add_host_to_keyed_groups(self.get_option('keyed_groups'), variables, name, strict=strict)

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        try:
            hats = check_hats(self.get_option('hats'))
            names = [(h, self.get_option('controller_name').format(hat=h['name']),
                      dict((n, self.get_option('node_name').format(hat=h['name'], node=n)) for n in h['slots'])) for h in hats]
        except (ValueError, KeyError, IndexError) as exc:
            raise AnsibleParserError('%s: %s' % (path, exc))
        all_names = [c for dummy, c, dummy2 in names] + [n for dummy, dummy2, ns in names for n in ns.values()]
        if len(set(all_names)) != len(all_names):
            raise AnsibleParserError('%s: controller_name and node_name give two hosts the same name' % path)
        for group in ('controller', 'nodes'):
            self.inventory.add_group(group)
        for hat, controller, nodes in names:
            group = self.inventory.add_group(group_of(hat['name']))
            variables = dict(hat['vars'], ansible_host=hat['controller'], hat_name=hat['name'])
            self._host(controller, variables)
            self.inventory.add_child('controller', controller)
            self.inventory.add_child(group, controller)
            for node, host in sorted(nodes.items()):
                variables = {'hat_node': node, 'hat_controller': controller, 'hat_name': hat['name']}
                if node in hat['nodes']:
                    variables['ansible_host'] = hat['nodes'][node]
                self._host(host, variables)
                self.inventory.add_child('nodes', host)
                self.inventory.add_child(group, host)
