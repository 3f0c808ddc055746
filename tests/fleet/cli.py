# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""python -m fleet create|destroy|status --dir DIR [--prefix PFX --subnet NET/LEN --nodes N]"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from fleet import nodes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m fleet', description=__doc__)
    parser.add_argument('command', choices=('create', 'destroy', 'status', 'rootfs'))
    parser.add_argument('--dir', required=True, help='working directory of this fleet')
    parser.add_argument('--prefix', help='name prefix of everything made (1-6 chars)')
    parser.add_argument('--subnet', default='10.231.9.0/24', help='the nodes\' subnet')
    parser.add_argument('--nodes', type=int, default=4, help='how many nodes (1-4)')
    parser.add_argument('--disk-size', type=int, default=2048, help='data disk size in MiB')
    parser.add_argument('--cache', help='where the root filesystem is built (default .build/fleet)')
    args = parser.parse_args(argv)
    try:
        if args.command == 'create':
            if not args.prefix:
                parser.error('create needs --prefix')
            state = nodes.create(args.dir, args.prefix, args.subnet, args.nodes,
                                 args.disk_size << 20, args.cache)
            print(state['inventory'])
        elif args.command == 'destroy':
            nodes.destroy(args.dir, args.prefix)
        elif args.command == 'status':
            print(json.dumps(nodes.status(args.dir), indent=1))
        else:
            from pathlib import Path
            from fleet import rootfs
            print(rootfs.ensure(Path(args.cache) if args.cache else nodes.DEFAULT_CACHE))
    except (nodes.FleetError, subprocess.CalledProcessError) as exc:
        print(f'fleet {args.command}: {exc}', file=sys.stderr)
        return 1
    return 0
