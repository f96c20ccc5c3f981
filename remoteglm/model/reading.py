"""Reading a VisualGLM checkpoint folder (sat or HF) into a sat-named state dict and its config,
and the tokenizer that goes with it. No model is built here (``remoteglm.model.checkpoint``)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json
from remoteglm.model.config import VisualGLMConfig
from remoteglm.model.visualglm_hf import hf_to_sat
from remoteglm.model.layout import (HF_CONFIG, SAT_CONFIG, TOKENIZER_FILE, check_not_lfs_pointer, detect_format,
                                    hf_weight_files, sat_weights_file)
from remoteglm.model.sat_upgrade import OLD_SAT, is_old_sat_state_dict, upgrade_old_sat_state_dict
from remoteglm.model.unpickle import torch_load

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


def load_weights_file(f: Path) -> dict:
    """The tensors of one weight file: safetensors, or a pickle through the safe ``torch_load``."""
    if f.suffix == ".safetensors":
        from safetensors.torch import load_file

        check_not_lfs_pointer(f)
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
        sd.update(load_weights_file(f))
    return Checkpoint("hf", d, config, hf_to_sat(sd, config.num_attention_heads), files)


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a sat or HF checkpoint directory into a sat-named state dict (no model built)."""
    fmt, d = detect_format(path)
    return read_sat(d) if fmt == "sat" else read_hf(d)


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
