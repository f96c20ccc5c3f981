"""Safe unpickling of checkpoint files: ``torch_load`` never runs code from a file unless the
user trusts it (``--trust_checkpoint``, ``trust_checkpoints``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.model.layout import check_not_lfs_pointer

TRUST_FLAG = "--trust_checkpoint"
_TRUSTED = False

# What sat, DeepSpeed and bitsandbytes pickle beside the tensors, seen by loading real files with
# weights_only=True: numpy's RNG state (sat's ``np_rng_state``), argparse.Namespace (DeepSpeed client
# state), bitsandbytes' QuantState (QLoRA run folders, keys ending ``.quant_state``) and DeepSpeed's
# ZeRO optimizer state (loss scaler, stage enum, fragment addresses). Plain data holders only: none
# of them runs code when rebuilt. Names are the ones inside the pickle -> (module, attribute);
# modules are imported only when a file needs them (DeepSpeed takes seconds to import).
_NUMPY_CORE = "numpy._core.multiarray"
SAFE_GLOBALS: dict[str, tuple[str, str]] = {
    "argparse.Namespace": ("argparse", "Namespace"),
    "numpy._core.multiarray._reconstruct": (_NUMPY_CORE, "_reconstruct"),
    "numpy.core.multiarray._reconstruct": (_NUMPY_CORE, "_reconstruct"),  # files written with numpy 1.x
    "numpy.ndarray": ("numpy", "ndarray"),
    "numpy.dtype": ("numpy", "dtype"),
    "bitsandbytes.functional.QuantState": ("bitsandbytes.functional", "QuantState"),
    "deepspeed.runtime.fp16.loss_scaler.LossScaler": ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler": ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    "deepspeed.runtime.zero.config.ZeroStageEnum": ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    "deepspeed.utils.tensor_fragment.fragment_address": ("deepspeed.utils.tensor_fragment", "fragment_address"),
}
# numpy rebuilds each array's dtype as an instance of its dtype class (numpy.dtypes.Float64DType ...):
# every class in numpy.dtypes is allowed too (see _numpy_dtype_classes).
_ALWAYS = ("argparse.Namespace", "numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct",
           "numpy.ndarray", "numpy.dtype")
_REFUSED = (re.compile(r"GLOBAL (\S+) was not an allowed global"), re.compile(r"unsupported GLOBAL (\S+) whose module"),
            re.compile(r"but got <class '([^']+)'>"))


def trust_checkpoints(on: bool = True) -> bool:
    """Process-wide switch (what ``--trust_checkpoint`` sets): when on, checkpoint files are unpickled
    without restriction (``weights_only=False``), so a file may run code while loading. Only for
    files the user trusts. Returns the previous setting."""
    global _TRUSTED
    old, _TRUSTED = _TRUSTED, bool(on)
    return old


def checkpoints_trusted() -> bool:
    return _TRUSTED


def _numpy_dtype_classes() -> dict[str, Any]:
    import numpy as np

    dtypes = getattr(np, "dtypes", None)
    if dtypes is None:  # numpy < 1.25 has no dtype classes to name
        return {}
    return {f"numpy.dtypes.{n}": c for n in dir(dtypes)
            if isinstance(c := getattr(dtypes, n), type) and issubclass(c, np.dtype)}


def _resolve_global(f: Path, name: str):
    """The object an allow-listed pickle name stands for; refuses every other name."""
    import importlib

    if name.startswith("numpy.dtypes."):
        obj = _numpy_dtype_classes().get(name)
        if obj is not None:
            return obj
    spec = SAFE_GLOBALS.get(name)
    if spec is None:
        raise RemoteGLMError(
            f"refused to load {f}: it pickles {name}, which is not a plain checkpoint type (unpickling it could run "
            f"code); if you trust the file and where it came from, rerun with {TRUST_FLAG}"
        )
    module, attr = spec
    if module == _NUMPY_CORE:
        try:
            importlib.import_module(module)
        except ImportError:  # numpy 1.x
            module = "numpy.core.multiarray"
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as e:  # noqa: BLE001 - a missing or broken package fails in many ways
        raise RemoteGLMError(f"cannot read {f}: it holds a {name} object and {module} does not import here ({type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); install the package that wrote it") from None


def torch_load(path: str | os.PathLike, *, mmap: bool = True, trust: bool | None = None) -> Any:
    """``torch.load`` onto the CPU that never runs code from the file: the one loader for checkpoints.

    Always ``weights_only=True``, with SAFE_GLOBALS allowed (what sat/DeepSpeed/bitsandbytes write).
    A file that needs anything else is refused with one line naming the file, the global and
    ``--trust_checkpoint``; with trust (``trust=True``, or ``trust_checkpoints(True)`` process-wide
    when ``trust`` is None) it is unpickled with ``weights_only=False``. ``mmap``: map zip-format
    files instead of reading them (a 15 GB file is not held in RAM twice); legacy files are read.
    Git LFS pointers and truncated or corrupt files get their own one-line errors.
    """
    import zipfile

    f = Path(path)
    check_not_lfs_pointer(f)
    is_zip = zipfile.is_zipfile(f)
    kw = dict(map_location="cpu", mmap=bool(mmap and is_zip))
    if _TRUSTED if trust is None else trust:
        return _load_or_fail(f, weights_only=False, **kw)
    allowed = {n: _resolve_global(f, n) for n in _ALWAYS}
    allowed.update(_numpy_dtype_classes())
    if is_zip:
        try:  # names every global the pickle imports, without unpickling anything
            needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(f))
        except Exception:  # noqa: BLE001 - a damaged file: torch.load below says so
            needed = []
        for name in needed:
            if name not in allowed:
                allowed[name] = _resolve_global(f, name)
    import pickle

    for _ in range(len(SAFE_GLOBALS) + 2):  # each retry allows one more listed name
        try:
            with torch.serialization.safe_globals([(obj, name) for name, obj in allowed.items()]):
                return torch.load(f, weights_only=True, **kw)
        except pickle.UnpicklingError as e:
            msg = str(e)
            name = next((m.group(1) for rx in _REFUSED if (m := rx.search(msg))), None)
            if name is None or name in allowed:
                if "Weights only load failed" not in msg:
                    raise _corrupt(f, e) from None
                raise RemoteGLMError(f"refused to load {f}: weights-only unpickling failed ({_unpickler_reason(msg)}); "
                                     f"if you trust the file and where it came from, rerun with {TRUST_FLAG}") from None
            allowed[name] = _resolve_global(f, name)
        except RemoteGLMError:
            raise
        except Exception as e:  # noqa: BLE001 - any other unpickling failure is a bad file for the user
            raise _corrupt(f, e) from None
    raise RemoteGLMError(f"refused to load {f}: it needs more pickled types than the safe list allows; "
                         f"if you trust the file, rerun with {TRUST_FLAG}")


def _unpickler_reason(msg: str) -> str:
    """The one line of torch's long weights-only error that says what was refused."""
    tail = msg.split("WeightsUnpickler error:", 1)[-1]
    noise = ("Weights only load failed", "Check the documentation", "Please file an issue", "(1)", "(2)")
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip() and not ln.strip().startswith(noise)]
    return lines[0].rstrip(".") if lines else "unsupported content"


def _corrupt(f: Path, e: BaseException) -> RemoteGLMError:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return RemoteGLMError(f"cannot read {f}: {msg} (truncated or corrupt download?)")


def _load_or_fail(f: Path, **kw) -> Any:
    try:
        return torch.load(f, **kw)
    except Exception as e:  # noqa: BLE001
        raise _corrupt(f, e) from None
