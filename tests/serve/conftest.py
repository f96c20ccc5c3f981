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


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model's ops are microseconds: extra OpenMP threads only add sync cost, which on a
    busy 2-core machine made generation ~20x slower. Restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
