"""The one place for CPU / distributed quirks (sat, DeepSpeed, torch on a machine without CUDA).

Nothing here changes behaviour on a CUDA machine except filling in environment defaults.
"""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_env() -> None:
    """Environment defaults so sat/DeepSpeed treat a plain `python` run as rank 0 of 1.

    sat builds a process group whenever a model is created; without these it may look for MPI
    or bind a hostname. Only loopback is ever used.
    """
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())
    # sat and DeepSpeed print a lot at import; keep the user's terminal readable.
    os.environ.setdefault("SAT_LOGLEVEL", "WARNING")
