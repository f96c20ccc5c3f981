"""Fixtures of the exchange tests (helpers in exchangehelp.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exchangehelp import make_data  # noqa: E402


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A folder with images/, records.json (every kind) and labelled.json (labelled boxes)."""
    return make_data(tmp_path)
