"""The device floor: one default device and one dtype rule for every loader and trainer."""

import pytest
import torch

from remoteglm.device import default_device, parse_device, parse_dtype
from remoteglm.errors import RemoteGLMError


@pytest.mark.parametrize("name, dtype", [
    ("fp32", torch.float32), ("float32", torch.float32), ("FP16", torch.float16), ("half", torch.float16),
    ("float16", torch.float16), ("bf16", torch.bfloat16), ("BFloat16", torch.bfloat16), (torch.bfloat16, torch.bfloat16),
])
def test_dtype_names(name, dtype):
    assert parse_dtype(name, "cuda") is dtype
    assert parse_dtype(name, "cpu", cuda_default="fp16") is dtype


@pytest.mark.parametrize("unset", [None, "", "auto"])
def test_unset_dtype_depends_on_the_device(unset):
    assert parse_dtype(unset, "cpu") is torch.float32
    assert parse_dtype(unset, torch.device("cpu"), cuda_default="fp16") is torch.float32
    assert parse_dtype(unset, "cuda:1", cuda_default="fp16") is torch.float16
    assert parse_dtype(unset, torch.device("cuda", 0), cuda_default="fp32") is torch.float32


def test_bf16_default_follows_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert parse_dtype(None, "cuda") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert parse_dtype(None, "cuda") is torch.bfloat16


@pytest.mark.parametrize("bad", ["fp8", "int8", "float"])
def test_unknown_dtype_is_one_line(bad):
    with pytest.raises(RemoteGLMError, match=rf"^unknown dtype '{bad}': use fp32, fp16 or bf16$"):
        parse_dtype(bad, "cpu")


def test_default_device(monkeypatch):
    assert default_device("cuda:3") == "cuda:3"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device(None) == default_device("") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device(None) == "cuda"


def test_parse_device(monkeypatch):
    assert parse_device("cpu") == torch.device("cpu")
    with pytest.raises(RemoteGLMError, match="^unknown device 'gpu0': use cpu, cuda or cuda:N$"):
        parse_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RemoteGLMError, match="^--device cuda:1: CUDA is not available on this machine; use --device cpu$"):
        parse_device("cuda:1")
