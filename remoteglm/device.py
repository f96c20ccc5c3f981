"""Device floor: THE default device and THE dtype rule of every loader, trainer and front end.

torch is imported inside the functions: a command that fails on its arguments never pays for it.
"""

from __future__ import annotations

from remoteglm.errors import RemoteGLMError

_NAMES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16", "half": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


def default_device(device: str | None = None) -> str:
    """``device`` when given, else "cuda" where a GPU is usable, else "cpu"."""
    if device:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_dtype(dtype, device, cuda_default: str = "bf16"):
    """A torch dtype from a name (fp32/float32, fp16/float16/half, bf16/bfloat16; any case) or a
    torch.dtype. None, "" or "auto" pick by ``device`` (a str or torch.device): fp32 on the CPU,
    ``cuda_default`` on CUDA, where "bf16" falls back to fp16 on a GPU without bf16."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        if not str(device).startswith("cuda"):
            return torch.float32
        if cuda_default == "bf16" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return getattr(torch, _NAMES[cuda_default])
    name = _NAMES.get(str(dtype).lower())
    if name is None:
        raise RemoteGLMError(f"unknown dtype {dtype!r}: use fp32, fp16 or bf16")
    return getattr(torch, name)


def parse_device(device):
    """A torch.device from "cpu", "cuda" or "cuda:N" (or a torch.device), refused in one line when
    malformed or when it names CUDA on a machine without it."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise RemoteGLMError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RemoteGLMError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return dev
