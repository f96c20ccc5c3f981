"""Fixtures for the model tests: a tiny ice_text.model trained once per session."""

from pathlib import Path

import pytest

from remoteglm.model.tiny_tokenizer import train_tiny_tokenizer
from remoteglm.model.tokenizer import ChatGLMTokenizer

FIXTURE_IMAGES = Path(__file__).resolve().parents[1] / "fixtures" / "images"


@pytest.fixture(scope="session")
def tiny_tokenizer_path(tmp_path_factory) -> Path:
    """Path of a tiny ``ice_text.model`` trained on the bundled corpus (well under a second)."""
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer") / "ice_text.model")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_path) -> ChatGLMTokenizer:
    return ChatGLMTokenizer.from_pretrained(tiny_tokenizer_path)


@pytest.fixture(scope="session")
def fixture_images() -> Path:
    return FIXTURE_IMAGES
