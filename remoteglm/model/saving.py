"""Writing VisualGLM checkpoints: sat layout (what training and merging write) and HF layout
(safetensors shards + index), every file atomically."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.io import torch_save_atomic, write_atomic, write_json_atomic, write_text_atomic
from remoteglm.model.config import VisualGLMConfig
from remoteglm.model.visualglm_hf import sat_to_hf
from remoteglm.model.layout import HF_CONFIG, SAT_CONFIG, SAT_LATEST, SAT_WEIGHTS, TOKENIZER_FILE, hf_weight_files_on_disk
from remoteglm.model.lora import lora_layers_in

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
