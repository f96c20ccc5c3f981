"""Evaluate checkpoints on a Chinese caption dataset (see `python evaluate.py --help`)."""

import sys

from remoteglm.eval.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
