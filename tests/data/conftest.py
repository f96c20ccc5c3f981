"""Fixtures for the data-pipeline tests: the fake LLM server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_llm import FakeLLM  # noqa: E402


@pytest.fixture
def fake_llm():
    """Factory: ``fake_llm(latency=..., faults={...})`` -> a started FakeLLM, stopped after the test."""
    servers = []

    def make(**kw) -> FakeLLM:
        srv = FakeLLM(**kw)
        srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()
