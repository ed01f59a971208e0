#!/usr/bin/env python3
"""pipglr-builder's command line: see `./build.py --help`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pipglr_builder.cli import main

if __name__ == "__main__":
    main()
