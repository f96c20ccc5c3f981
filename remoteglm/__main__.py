"""``python -m remoteglm JOB ...``: the same as the ``remoteglm`` console entry."""

import sys

from remoteglm.commands import main

sys.exit(main())
