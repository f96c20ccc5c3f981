"""A process that loads a model listens on nothing beyond loopback: sat's process-group init used
to open an unauthenticated torch TCPStore on all interfaces (*:MASTER_PORT)."""

import os
import subprocess
import sys
from pathlib import Path

from tests.serve.conftest import listening_addresses

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import os, sys, time
from remoteglm.model.checkpoint import load_model
load_model(sys.argv[1])
print("loaded", flush=True)
time.sleep(60)
"""


def test_a_loaded_model_opens_no_network_listener(tiny_checkpoint):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-c", PROBE, str(tiny_checkpoint)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "loaded"
        addrs = listening_addresses(proc.pid)
        assert all(host == "127.0.0.1" for host, _ in addrs), addrs
    finally:
        proc.kill()
        proc.wait()
