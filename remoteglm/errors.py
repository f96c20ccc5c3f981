"""User-facing errors: one clear line that says what went wrong and what to do next."""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable


class RemoteGLMError(Exception):
    """An error caused by the user's input or environment; printed as one line, no traceback."""


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI ``main`` so RemoteGLMError (and Ctrl-C) print one line and exit non-zero, and a
    closed output pipe ends it quietly (exit 141, as a shell reports SIGPIPE).

    Set ``REMOTEGLM_DEBUG=1`` to see the full traceback instead.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            rc = main(*args, **kwargs)
            return int(rc or 0)
        except RemoteGLMError as e:
            if os.environ.get("REMOTEGLM_DEBUG"):
                raise
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: work done so far is saved; rerun the same command to continue.", file=sys.stderr)
            return 130
        except BrokenPipeError:  # the reader stopped early (`| head`): stop quietly, as other tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
            return 141

    return wrapper
