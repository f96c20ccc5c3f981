"""`python -m remoteglm.eval ...`: see remoteglm/eval/evaluate.py."""

import sys

from remoteglm.eval.evaluate import main

sys.exit(main())
