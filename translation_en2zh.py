#!/usr/bin/env python
"""Translate English remote-sensing captions into Chinese training data. See --help."""

import sys

from remoteglm.data.cli import main

if __name__ == "__main__":
    sys.exit(main())
