# -*- coding: utf-8 -*-
# Copyright: minicluster.cm4 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Entry point of `python -m hatsim`."""

from __future__ import annotations

import sys

# The simulator writes nothing outside its directory, not even bytecode caches.
sys.dont_write_bytecode = True

from hatsim.cli import main  # pylint: disable=wrong-import-position

if __name__ == '__main__':
    sys.exit(main())
