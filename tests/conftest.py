"""Shared test setup. Area-specific fixtures live beside their tests."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model's ops take microseconds: extra OpenMP threads only add sync cost, which on a
    busy 2-core machine made tiny-model work ~20x slower. Restored after each module."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny VisualGLM checkpoint directory in sat format, ``ice_text.model`` inside, built once
    per session (``load_model(tiny_checkpoint)`` works). Shared: copy it before modifying it."""
    from remoteglm.model.tiny import create_tiny_checkpoint

    return create_tiny_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint") / "visualglm-tiny")
