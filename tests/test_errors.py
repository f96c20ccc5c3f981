"""The one-line error contract of every command line (remoteglm.errors.cli_entry)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    """`remoteglm recipe DIR | head -1`: the pipe closes before the command has written; it stops
    quietly instead of printing a BrokenPipeError traceback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "remoteglm", "recipe", "checkpoints/qwen3-vl-tiny"], cwd=tmp_path,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before the interpreter has even started: every write finds the pipe closed
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert p.returncode == 141  # what a shell reports for a command stopped by a closed pipe (128 + SIGPIPE)
