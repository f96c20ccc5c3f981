"""remoteglm: Chinese remote-sensing image-text data and LoRA tuning for VisualGLM-6B."""

import os as _os

__version__ = "0.1.0"

# OpenMP's worker threads otherwise keep spinning between parallel regions. A decode step is
# hundreds of tiny ops; on a small or shared CPU the spinning takes the cores from the thread that
# issues them (batched generation ran 0.2-0.5x the speed of one by one; passive: 2-7x faster).
# Read once, when torch loads libgomp: set here, before any torch import; the user's value wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
