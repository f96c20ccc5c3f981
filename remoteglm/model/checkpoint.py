"""Load and save VisualGLM checkpoints from a local directory, sat or HF format.

sat format (official ``visualglm-6b.zip``, RemoteGLM/XrayGLM fine-tunes)::

    DIR/latest                           text: the iteration, e.g. "300"
    DIR/model_config.json                model_class, arch args, eva_args, qformer_args, lora_rank, layer_range ...
    DIR/300/mp_rank_00_model_states.pt   {"module": state_dict, ...}

HF format (``THUDM/visualglm-6b``)::

    DIR/config.json, DIR/pytorch_model-0000k-of-0000n.bin + pytorch_model.bin.index.json
    (or model*.safetensors), DIR/ice_text.model

``load_model`` is the one public entry point: it detects the format, checks everything a user
gets wrong with the originals (the .pt file instead of the directory, a missing ``latest``,
missing shards, a config that does not match the weights) and says what to do, in one line.
Heavy imports (sat) happen only after the directory checked out, so bad paths fail fast.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from remoteglm.device import parse_device, parse_dtype
from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json, torch_save_atomic, write_atomic, write_json_atomic, write_text_atomic
from remoteglm.model.config import VisualGLMConfig
from remoteglm.model.hf import hf_to_sat, qkv_hf_to_sat, sat_to_hf
from remoteglm.model.lora import dequantize_state_dict, is_quantized_state_dict, lora_layers_in

SAT_CONFIG = "model_config.json"
SAT_LATEST = "latest"
SAT_WEIGHTS = "mp_rank_00_model_states.pt"
HF_CONFIG = "config.json"
HF_INDEX = ("pytorch_model.bin.index.json", "model.safetensors.index.json")
HF_SINGLE = ("pytorch_model.bin", "model.safetensors")
TOKENIZER_FILE = "ice_text.model"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_TOKENIZER_HINT = (
    "pass --tokenizer PATH/TO/ice_text.model (the file ships in the THUDM/chatglm-6b and "
    "THUDM/visualglm-6b Hugging Face repos) or copy it into the checkpoint directory"
)


@dataclass
class Checkpoint:
    """A checkpoint read from disk: sat-named state dict and its config."""

    fmt: str  # "sat" or "hf"
    directory: Path
    config: VisualGLMConfig
    state_dict: dict[str, torch.Tensor]
    files: list[Path] = field(default_factory=list)
    upgraded_from: str | None = None  # "sat<=0.4.0" when the weights were converted from the old layout


# ---- format detection and path errors ----------------------------------------------------------
def detect_format(path: str | os.PathLike) -> tuple[str, Path]:
    """("sat" | "hf", directory) for a checkpoint path, or a RemoteGLMError saying what to pass."""
    p = Path(path).expanduser()
    if not p.exists():
        raise RemoteGLMError(f"checkpoint not found: {p}: pass the directory of a sat (model_config.json + latest) or HF (config.json) checkpoint")
    if p.is_file():
        if p.suffix in WEIGHT_SUFFIXES or p.name == SAT_LATEST or p.name in (SAT_CONFIG, HF_CONFIG):
            d = p.parent
            if p.suffix == ".pt" and not (d / SAT_CONFIG).exists() and (d.parent / SAT_CONFIG).exists():
                d = d.parent  # DIR/300/mp_rank_00_model_states.pt -> DIR
            raise RemoteGLMError(f"{p} is a file inside a checkpoint; pass the checkpoint directory instead: {d}")
        raise RemoteGLMError(f"{p} is a file, not a checkpoint directory: pass the directory that holds model_config.json (sat) or config.json (HF)")
    if (p / SAT_CONFIG).is_file():
        return "sat", p
    if (p / HF_CONFIG).is_file():
        return "hf", p
    if (p / SAT_LATEST).is_file():
        raise RemoteGLMError(f"{p} looks like a sat checkpoint (it has '{SAT_LATEST}') but has no {SAT_CONFIG}: copy that file from the original download or training run")
    if (p / SAT_WEIGHTS).is_file() and (p.parent / SAT_CONFIG).is_file():
        raise RemoteGLMError(f"{p} is an iteration folder of a sat checkpoint; pass its parent directory: {p.parent}")
    inner = sorted(c for c in p.iterdir() if c.is_dir() and ((c / SAT_CONFIG).is_file() or (c / HF_CONFIG).is_file()))
    if len(inner) == 1:
        raise RemoteGLMError(f"{p} holds no checkpoint itself but {inner[0].name}/ does; pass {inner[0]}")
    raise RemoteGLMError(f"{p} is not a checkpoint directory: no {SAT_CONFIG} (sat format) and no {HF_CONFIG} (HF format)")


def _check_not_lfs_pointer(f: Path) -> None:
    if f.stat().st_size < 1024:
        head = f.read_bytes()[:100]
        if head.startswith(b"version https://git-lfs"):
            raise RemoteGLMError(f"{f} is a Git LFS pointer, not the weights: run `git lfs pull` in {f.parent} (or download the file)")


# ---- safe unpickling ------------------------------------------------------------------------------
TRUST_FLAG = "--trust-checkpoint"
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
    """Process-wide switch (what ``--trust-checkpoint`` sets): when on, checkpoint files are unpickled
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
    ``--trust-checkpoint``; with trust (``trust=True``, or ``trust_checkpoints(True)`` process-wide
    when ``trust`` is None) it is unpickled with ``weights_only=False``. ``mmap``: map zip-format
    files instead of reading them (a 15 GB file is not held in RAM twice); legacy files are read.
    Git LFS pointers and truncated or corrupt files get their own one-line errors.
    """
    import zipfile

    f = Path(path)
    _check_not_lfs_pointer(f)
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


# ---- sat format ----------------------------------------------------------------------------------
def sat_weights_file(d: Path) -> Path:
    """DIR/{latest}/mp_rank_00_model_states.pt, with a precise error for each missing piece."""
    iters = sorted((c.name for c in d.iterdir() if c.is_dir() and (c / SAT_WEIGHTS).is_file()), key=_iter_key)
    latest = d / SAT_LATEST
    if not latest.is_file():
        if iters:
            fix = f"write the iteration to use into it, e.g. `echo {iters[-1]} > {latest}` (iteration folders found: {', '.join(iters)})"
        else:
            fix = f"and no iteration folder with {SAT_WEIGHTS} either: the download is incomplete"
        raise RemoteGLMError(f"{d} has {SAT_CONFIG} but no '{SAT_LATEST}' file: {fix}")
    it = latest.read_text(encoding="utf-8").strip()
    if not it:
        raise RemoteGLMError(f"{latest} is empty: write the iteration number into it (folders found: {', '.join(iters) or 'none'})")
    f = d / it / SAT_WEIGHTS
    if not f.is_file():
        found = f"iteration folders found: {', '.join(iters)}" if iters else f"no iteration folder holds {SAT_WEIGHTS}"
        raise RemoteGLMError(f"{latest} says iteration {it!r} but {f} does not exist ({found}); fix {SAT_LATEST} or restore the folder")
    return f


def _iter_key(name: str):
    return (0, int(name)) if name.isdigit() else (1, name)


def read_sat(d: Path) -> Checkpoint:
    config = VisualGLMConfig.from_sat_dict(read_json(d / SAT_CONFIG, require_object=True), source=str(d / SAT_CONFIG))
    f = sat_weights_file(d)
    obj = torch_load(f)
    if not isinstance(obj, dict) or "module" not in obj:
        keys = ", ".join(list(obj)[:5]) if isinstance(obj, dict) else type(obj).__name__
        raise RemoteGLMError(f"{f} has no 'module' entry (found: {keys}); it is not a sat model-states file")
    sd = dict(obj["module"])
    del obj
    upgraded = None
    if is_old_sat_state_dict(sd):
        sd, merged = upgrade_old_sat_state_dict(sd, config)
        upgraded = OLD_SAT
        print(f"{f}: old sat (<=0.4.0) checkpoint: qkv rows converted to the sat>=0.4.1 order"
              + ("; its qkv LoRA merged into the weights" if merged else ""), file=sys.stderr)
    return Checkpoint("sat", d, config, sd, [f], upgraded_from=upgraded)


# ---- sat <= 0.4.0 checkpoints --------------------------------------------------------------------------
OLD_SAT = "sat<=0.4.0"
OLD_SAT_MARKER = "transformer.position_embeddings.weight"
_OLD_QKV = re.compile(r"^(transformer\.layers\.\d+\.attention\.query_key_value)\."
                      r"(weight|bias|original\.weight|original\.bias|matrix_A\.\d+|matrix_B\.\d+|quant_state|original\.quant_state)$")


def is_old_sat_state_dict(state_dict) -> bool:
    """True for weights written by sat <= 0.4.0: only they carry ChatGLM's unused position table."""
    return OLD_SAT_MARKER in state_dict


def upgrade_old_sat_state_dict(state_dict: dict, config: VisualGLMConfig) -> tuple[dict, bool]:
    """sat <= 0.4.0 weights -> the sat >= 0.4.1 layout this toolkit's model uses. Returns
    ``(state_dict, qkv_lora_merged)``.

    Old sat kept ``transformer.position_embeddings.weight`` (ChatGLM never reads it: dropped) and
    split ChatGLM's fused ``attention.query_key_value`` output per head, rows (head, [q,k,v], dim);
    sat >= 0.4.1 splits it ([q,k,v], head, dim). The qkv weight and bias (``original.*`` in a LoRA
    layer) are permuted exactly, with the same permutation as HF -> sat (``hf.qkv_hf_to_sat``).

    The qkv LoRA cannot be carried over as LoRA. Old sat cut the fused output rows, in the OLD
    order, into 3 partitions with their own (A_i, B_i), so partition i covers old rows
    [i*H*D, (i+1)*H*D): a third of the heads, each with its q, k and v rows. Its update is
    ``delta_old = cat_i(B_i A_i) * alpha/r``. In the new order, partition j is q (or k, or v) of
    every head, so its rows come from all three old partitions: ``P(delta_old)`` restricted to
    partition j is a sum of three rank-r pieces with different A_i, rank up to 3r, which no single
    rank-r pair (A_j, B_j) reproduces (only when the A_i happen to be equal). So the update is merged
    exactly into the permuted base weight (``original.weight += P(delta_old)``, in fp32) and the
    qkv B matrices are zeroed (their A kept): the loaded model gives the fine-tune's outputs, the
    layer stays a LoRA layer (training on starts from a zero qkv update) and ``attention.dense``'s
    LoRA, whose rows are the same in both versions, is kept as is. A QLoRA base is dequantised
    first (NF4 blocks would not survive a row permutation).
    """
    heads = config.num_attention_heads
    out = {k: v for k, v in state_dict.items() if k != OLD_SAT_MARKER}
    prefixes = sorted({m.group(1) for k in out if (m := _OLD_QKV.match(k))})
    if any(k.endswith("quant_state") and _OLD_QKV.match(k) for k in out):
        out = dequantize_state_dict(out)  # the whole model: one QLoRA layout, not a mix
        config.use_qlora, config.use_lora = False, lora_layers_in(out) is not None
    merged = False
    for p in prefixes:
        base = p + ".original" if p + ".original.weight" in out else p
        for name in (".weight", ".bias"):
            if base + name in out:
                out[base + name] = qkv_hf_to_sat(out[base + name], heads)
        parts = sorted(int(k.rsplit(".", 1)[1]) for k in out if k.startswith(p + ".matrix_A."))
        if not parts:
            continue
        if base + ".weight" not in out or any(f"{p}.matrix_B.{i}" not in out for i in parts):
            raise RemoteGLMError(f"{p}: incomplete LoRA layer in an old sat checkpoint (needs original.weight and matching "
                                 "matrix_A/matrix_B); restore the file from the training run")
        a = [out[f"{p}.matrix_A.{i}"].float() for i in parts]
        b = [out[f"{p}.matrix_B.{i}"] for i in parts]
        scale = config.lora_alpha / a[0].shape[0]
        delta_old = torch.cat([bi.float() @ ai for ai, bi in zip(a, b)], 0) * scale
        w = out[base + ".weight"]
        out[base + ".weight"] = (w.float() + qkv_hf_to_sat(delta_old, heads)).to(w.dtype)
        for i, bi in zip(parts, b):
            out[f"{p}.matrix_B.{i}"] = torch.zeros_like(bi)
        merged = True
    return out, merged


# ---- HF format -----------------------------------------------------------------------------------
def hf_weight_files(d: Path) -> list[Path]:
    """The weight files of an HF directory, checking that every shard in the index exists."""
    for index_name in HF_INDEX:
        index = d / index_name
        if index.is_file():
            wmap = read_json(index, require_object=True).get("weight_map")
            if not isinstance(wmap, dict) or not wmap:
                raise RemoteGLMError(f"{index} has no weight_map; restore it from the original download")
            shards = sorted(set(wmap.values()))
            missing = [s for s in shards if not (d / s).is_file()]
            if missing:
                raise RemoteGLMError(
                    f"{d} is incomplete: shard {missing[0]} listed in {index_name} is missing"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                    + "; download it again (e.g. `git lfs pull`) before loading"
                )
            return [d / s for s in shards]
    for name in HF_SINGLE:
        if (d / name).is_file():
            return [d / name]
    shards = sorted(d.glob("pytorch_model-*.bin")) + sorted(d.glob("model-*.safetensors"))
    if shards:
        raise RemoteGLMError(f"{d} has weight shards but no {HF_INDEX[0]} / {HF_INDEX[1]}; download the index file too")
    raise RemoteGLMError(f"{d} has {HF_CONFIG} but no weights (pytorch_model*.bin or model*.safetensors)")


_HF_WEIGHT_NAME = re.compile(r"^(pytorch_model(-\d+-of-\d+)?\.bin|model(-\d+-of-\d+)?\.safetensors)(\.index\.json)?$")


def hf_weight_files_on_disk(d: Path) -> list[Path]:
    """Every HF weight file and index in ``d``, in either layout (what a new save replaces)."""
    return sorted(f for f in d.iterdir() if f.is_file() and _HF_WEIGHT_NAME.match(f.name)) if d.is_dir() else []


def _load_weights_file(f: Path) -> dict:
    if f.suffix == ".safetensors":
        from safetensors.torch import load_file

        _check_not_lfs_pointer(f)
        try:
            return load_file(str(f))
        except Exception as e:  # noqa: BLE001
            raise RemoteGLMError(f"cannot read {f}: {e} (truncated or corrupt download?)") from None
    return torch_load(f)


def read_hf(d: Path) -> Checkpoint:
    config = VisualGLMConfig.from_hf_dict(read_json(d / HF_CONFIG, require_object=True), source=str(d / HF_CONFIG))
    files = hf_weight_files(d)
    sd: dict = {}
    for f in files:
        sd.update(_load_weights_file(f))
    return Checkpoint("hf", d, config, hf_to_sat(sd, config.num_attention_heads), files)


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a sat or HF checkpoint directory into a sat-named state dict (no model built)."""
    fmt, d = detect_format(path)
    return read_sat(d) if fmt == "sat" else read_hf(d)


# ---- tokenizer -----------------------------------------------------------------------------------
def resolve_tokenizer(directory: Path, tokenizer=None, config: VisualGLMConfig | None = None):
    """The tokenizer object: given, from a path, or ``ice_text.model`` in the checkpoint dir."""
    from remoteglm.model.tokenizer import ChatGLMTokenizer

    if tokenizer is None:
        f = directory / TOKENIZER_FILE
        if not f.is_file():
            raise RemoteGLMError(f"{directory} has no {TOKENIZER_FILE} (official sat checkpoints do not ship it): {_TOKENIZER_HINT}")
        tokenizer = ChatGLMTokenizer.from_pretrained(f)
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = ChatGLMTokenizer.from_pretrained(tokenizer)
    if config is not None:
        if tokenizer.vocab_size > config.vocab_size:
            raise RemoteGLMError(
                f"tokenizer {tokenizer.vocab_file} has {tokenizer.vocab_size} tokens but the checkpoint's vocabulary "
                f"is {config.vocab_size}: it is the wrong ice_text.model for this model"
            )
        for name in ("bos_token_id", "mask_token_id", "gmask_token_id", "pad_token_id"):
            if getattr(tokenizer, name) != getattr(config, name):
                raise RemoteGLMError(
                    f"tokenizer {tokenizer.vocab_file} gives {name} {getattr(tokenizer, name)} but the checkpoint says "
                    f"{getattr(config, name)}: it is the wrong ice_text.model for this model"
                )
    return tokenizer


# ---- building a model from a checkpoint --------------------------------------------------------------
def _is_buffer_key(k: str) -> bool:
    return k.endswith("rotary_emb.inv_freq")


def load_state_dict_checked(model, state_dict: dict, source: str) -> None:
    """Load with the checks sat skips: unknown names, missing names, shape mismatches (one line each)."""
    expected = model.state_dict()
    qlora = any(k.endswith("quant_state") for k in expected) or any(k.endswith("quant_state") for k in state_dict)
    sd = dict(state_dict)
    has_lora = any(".original." in k for k in expected)
    if has_lora:  # plain weights may go into LoRA-wrapped layers (sat allows loading a base model so)
        for k in list(sd):
            if k not in expected and re.search(r"\.(weight|bias)$", k):
                alt = re.sub(r"\.(weight|bias)$", r".original.\1", k)
                if alt in expected:
                    sd[alt] = sd.pop(k)
    unexpected = [k for k in sd if k not in expected and not _is_buffer_key(k) and not k.endswith("quant_state")]
    if unexpected:
        more = f" and {len(unexpected) - 3} more" if len(unexpected) > 3 else ""
        raise RemoteGLMError(
            f"{source}: unexpected tensor(s) {', '.join(unexpected[:3])}{more}: the weights do not belong to this "
            "model config (a different model, or LoRA/P-tuning settings missing from the config)"
        )
    lora_ok = has_lora and not any(".matrix_" in k for k in sd)  # base weights into fresh LoRA layers
    missing = [k for k in expected if k not in sd and not _is_buffer_key(k) and not (lora_ok and ".matrix_" in k)
               and not k.endswith("quant_state")]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise RemoteGLMError(f"{source}: missing tensor(s) {', '.join(missing[:3])}{more}: the checkpoint is incomplete or for another model")
    if not qlora:
        for k, v in sd.items():
            if k in expected and tuple(v.shape) != tuple(expected[k].shape):
                raise RemoteGLMError(
                    f"{source}: tensor {k} has shape {tuple(v.shape)} in the weights but {tuple(expected[k].shape)} "
                    "from the config: the config does not match the weights (check hidden_size, num_layers, vocab_size, lora_rank)"
                )
    model.load_state_dict(sd, strict=False)


def model_from_checkpoint(ckpt: Checkpoint, device="cpu", dtype=None):
    """Build the model ``ckpt.config`` describes (LoRA layers included) and load ``ckpt``'s weights."""
    from remoteglm.model.lora import add_lora
    from remoteglm.model.visualglm import build_model, keep_rotary_fp32

    dev = parse_device(device)
    dt = parse_dtype(dtype, dev, cuda_default="fp16")
    config = ckpt.config
    sd = ckpt.state_dict
    if is_quantized_state_dict(sd):
        # A QLoRA fine-tune: its NF4 weights are dequantised, so it loads as an ordinary LoRA model
        # (bitsandbytes' saved quantisation state does not load back into sat's NF4 layers).
        sd = dequantize_state_dict(sd, dt)
        config.use_qlora, config.use_lora = False, lora_layers_in(sd) is not None
    lora = lora_layers_in(sd)
    model = build_model(config, device=dev, dtype=dt, skip_init=True)
    if lora is not None:
        rank, layers = lora
        if config.lora_rank and config.lora_rank != rank:
            raise RemoteGLMError(
                f"{ckpt.directory / SAT_CONFIG}: lora_rank is {config.lora_rank} but the weights hold rank-{rank} LoRA matrices; fix lora_rank"
            )
        all_layers = list(range(config.num_layers))
        add_lora(model, rank, lora_alpha=config.lora_alpha, layer_range=None if layers == all_layers else layers)
    load_state_dict_checked(model, sd, str(ckpt.files[0] if ckpt.files else ckpt.directory))
    keep_rotary_fp32(model)
    model.eval()
    return model


def load_model(path: str | os.PathLike, tokenizer=None, device: str = "cpu", dtype=None):
    """Load a VisualGLM checkpoint directory (sat or HF) -> ``(model, tokenizer, config)``.

    ``tokenizer``: a ChatGLMTokenizer, a path to ``ice_text.model`` (or its directory), or None
    for the one inside the checkpoint directory. ``dtype`` defaults to fp32 on CPU and fp16 on
    CUDA ("fp16", "bf16", "fp32" or a torch dtype). LoRA layers in the weights (``matrix_A``/
    ``matrix_B``) are rebuilt from the weights themselves, ``layer_range`` included.
    """
    fmt, d = detect_format(path)
    parse_device(device)
    # Cheap checks first: config, files and tokenizer, before reading gigabytes.
    if fmt == "sat":
        raw = read_json(d / SAT_CONFIG, require_object=True)
        if raw.get("quantization"):  # written by remoteglm.model.quant.save_quantized
            from remoteglm.model.quant import load_quantized

            return load_quantized(d, tokenizer=tokenizer, device=device, dtype=dtype)
        config = VisualGLMConfig.from_sat_dict(raw, source=str(d / SAT_CONFIG))
        sat_weights_file(d)
    else:
        config = VisualGLMConfig.from_hf_dict(read_json(d / HF_CONFIG, require_object=True), source=str(d / HF_CONFIG))
        hf_weight_files(d)
    tok = resolve_tokenizer(d, tokenizer, config)
    ckpt = read_sat(d) if fmt == "sat" else read_hf(d)
    model = model_from_checkpoint(ckpt, device=device, dtype=dtype)
    del ckpt
    return model, tok, model.config


# ---- saving ------------------------------------------------------------------------------------------
def _state_dict_of(model_or_sd) -> dict:
    if isinstance(model_or_sd, dict):
        return model_or_sd
    # QLoRA layers add bitsandbytes QuantState objects beside their tensors
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in model_or_sd.state_dict().items()}


def _config_of(model_or_sd, config):
    if config is None:
        config = getattr(model_or_sd, "config", None)
    if config is None:
        raise ValueError("pass the config when saving a bare state dict")
    return config


def save_sat_checkpoint(model, config: VisualGLMConfig | None, out_dir: str | os.PathLike, iteration: int = 1, tokenizer=None) -> Path:
    """Write ``out_dir/{iteration}/mp_rank_00_model_states.pt``, ``model_config.json`` and
    ``latest`` (each atomically; ``latest`` last, so a crash never points at a partial file).
    ``model`` may be a model or a sat-named state dict. ``iteration`` >= 1: sat's own loader
    refuses ``latest`` = 0 (the official zip uses 1). Returns ``out_dir``.
    """
    if int(iteration) < 1:
        raise RemoteGLMError(f"sat checkpoint iteration must be >= 1 (sat's loader refuses {iteration}); use 1 for a base model")
    out = Path(out_dir)
    config = _config_of(model, config)
    sd = _state_dict_of(model)
    lora = lora_layers_in(sd)
    if lora is not None and not config.has_lora:
        raise ValueError("the state dict holds LoRA matrices but the config says use_lora false")
    weights = out / str(iteration) / SAT_WEIGHTS
    torch_save_atomic(weights, {"module": sd, "iteration": int(iteration)})
    write_json_atomic(out / SAT_CONFIG, config.to_sat_dict(), indent=2)
    if tokenizer is not None:
        tokenizer.save(out)
    write_text_atomic(out / SAT_LATEST, f"{iteration}\n")
    return out


def _parse_size(size) -> int:
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", str(size).upper())
    if not m:
        raise RemoteGLMError(f"bad shard size {size!r}: use bytes or e.g. 2GB, 500MB")
    mult = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9}[m.group(2)]
    return int(float(m.group(1)) * mult)


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    # A view would drag its whole base storage into the shard (or break safetensors).
    t = t.contiguous()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size():
        t = t.clone()
    return t


_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def save_hf_checkpoint(
    model,
    config: VisualGLMConfig | None,
    tokenizer,
    out_dir: str | os.PathLike,
    shard_size: int | str = "2GB",
    safe_serialization: bool = True,
) -> Path:
    """Write the HF layout: ``config.json``, weight shards (+ index when more than one) and
    ``ice_text.model``. LoRA must be merged first (HF VisualGLM has no LoRA layers).

    Shards are ``model*.safetensors`` (no pickle: safe to share); ``safe_serialization=False``
    writes ``pytorch_model*.bin``. Saving into a folder that holds an earlier HF save replaces it:
    the new files are written first, then every weight file and index of the earlier save that
    this one did not write is deleted, so a stale index or shard can never be read back.
    """
    out = Path(out_dir)
    config = _config_of(model, config)
    sd = _state_dict_of(model)
    if lora_layers_in(sd) is not None:
        raise RemoteGLMError("the model has LoRA layers: merge them first (remoteglm.model.lora.merge_lora) to save in HF format")
    if tokenizer is None:
        raise RemoteGLMError(f"an HF checkpoint needs its {TOKENIZER_FILE}: pass the tokenizer")
    hf = sat_to_hf(sd, config.num_layers, config.num_attention_heads, config.hidden_size)
    limit = _parse_size(shard_size)
    shards: list[dict] = [{}]
    size = 0
    for k, v in hf.items():
        nbytes = v.numel() * v.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += nbytes
    ext = "safetensors" if safe_serialization else "bin"
    stem = "model" if safe_serialization else "pytorch_model"
    n = len(shards)
    names = [f"{stem}.{ext}"] if n == 1 else [f"{stem}-{i + 1:05d}-of-{n:05d}.{ext}" for i in range(n)]
    for name, shard in zip(names, shards):
        shard = {k: _own_storage(v) for k, v in shard.items()}
        if safe_serialization:
            from safetensors.torch import save_file

            write_atomic(out / name, lambda tmp, s=shard: save_file(s, tmp, metadata={"format": "pt"}))
        else:
            torch_save_atomic(out / name, shard)
    if n > 1:
        index = {
            "metadata": {"total_size": sum(v.numel() * v.element_size() for v in hf.values())},
            "weight_map": {k: name for name, shard in zip(names, shards) for k in shard},
        }
        names.append(f"{stem}.{ext}.index.json")
        write_json_atomic(out / names[-1], index, indent=2)
    for stale in hf_weight_files_on_disk(out):
        if stale.name not in names:
            stale.unlink()
    dtype = _DTYPE_NAMES.get(sd[next(k for k in sd if k.endswith("word_embeddings.weight"))].dtype, "float32")
    tokenizer.save(out)
    write_json_atomic(out / HF_CONFIG, config.to_hf_dict(torch_dtype=dtype), indent=2)
    return out
