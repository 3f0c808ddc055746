# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test nodes for the fleet roles: systemd-nspawn containers standing in for CM4 nodes.

See README.md in this directory for the interface.
"""
