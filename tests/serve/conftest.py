"""Fixtures for the serving tests: the tiny checkpoint loaded once."""

import pytest


@pytest.fixture(scope="session")
def tiny(tiny_checkpoint):
    """(model, tokenizer, config) of the shared tiny checkpoint. Do not modify the model."""
    from remoteglm.model.checkpoint import load_model

    return load_model(tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_image():
    import torch

    return torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(0))


class ServerProcess:
    """A demo/API server started as a real subprocess; its output is collected by a thread so the
    pipe never fills, and ``wait_ready`` blocks until the line that says it is listening."""

    def __init__(self, cmd, env, cwd, ready_marker: str):
        import subprocess
        import threading

        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line)
                if ready_marker in line:
                    self.ready.set()

        threading.Thread(target=pump, daemon=True).start()

    def wait_ready(self, what: str, timeout: float = 120) -> None:
        import time

        end = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > end:
                break
        if not self.ready.is_set():
            pytest.fail(f"{what} did not start:\n" + "".join(self.lines[-30:]))

    def stop(self) -> None:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def in_thread():
    """``in_thread(app, **make_server_kwargs) -> server``: ``app`` (from ``create_app``) under our
    uvicorn server in a thread on 127.0.0.1 (a free port), started; stopped after the test."""
    import threading
    import time

    from remoteglm.serve.api_transport import make_server

    running = []

    def start(app, **kw):
        server = make_server(app, "127.0.0.1", 0, **app.state.remoteglm.server_options(), **kw)
        th = threading.Thread(target=server.run, daemon=True)
        th.start()
        end = time.monotonic() + 10
        while not server.started and time.monotonic() < end:
            time.sleep(0.02)
        running.append((server, th))
        return server

    yield start
    for server, th in running:
        server.should_exit = True
        th.join(10)


@pytest.fixture(scope="session")
def start_server():
    """``start_server(cmd, env, cwd, ready_marker) -> ServerProcess``."""
    return ServerProcess


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process ``pid`` listens on, read from /proc (what
    `ss -ltnp` shows), IPv4 and IPv6."""
    import ipaddress
    import os

    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in open(table).read().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A = LISTEN
                continue
            hexaddr, hexport = cols[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
            out.append((str(ipaddress.ip_address(raw)), int(hexport, 16)))
    return out
