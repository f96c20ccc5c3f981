"""Convert a VisualGLM checkpoint between sat and HF layouts (the ``remoteglm convert`` job).

    convert(SAT_DIR, HF_DIR, "hf")            remoteglm convert --to hf  SAT_DIR HF_DIR  [--shard_size 2GB] [--bin]
    convert(HF_DIR, SAT_DIR, "sat")           remoteglm convert --to sat HF_DIR  SAT_DIR [--iteration 1]
    convert(OLD_SAT_DIR, SAT_DIR, "sat")      (a sat <= 0.4.0 checkpoint, rewritten once)

Works on the state dict alone (no model is built), so it is fast, keeps the stored dtype and
is bit-exact both ways; sat -> HF -> sat gives back identical tensors. LoRA layers (a sat
fine-tune) are merged into the weights on the way to HF, which has no LoRA layers. HF output is
``model*.safetensors`` unless ``--bin`` asks for ``pytorch_model*.bin``.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from remoteglm.errors import RemoteGLMError


def convert(src: str | Path, dst: str | Path, to: str, tokenizer=None, shard_size: str | int = "2GB",
            iteration: int = 1, safe_serialization: bool = True) -> Path:
    """Convert ``src`` (sat or HF directory) into format ``to`` ("hf" or "sat") at ``dst``."""
    from remoteglm.model.layout import TOKENIZER_FILE
    from remoteglm.model.reading import read_checkpoint, resolve_tokenizer
    from remoteglm.model.saving import save_hf_checkpoint, save_sat_checkpoint
    from remoteglm.model.lora import lora_layers_in, merge_lora_state_dict

    if to not in ("hf", "sat"):
        raise RemoteGLMError(f"--to must be hf or sat, got {to!r}")
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise RemoteGLMError(f"{dst} exists and is not empty: choose a new output directory")
    ckpt = read_checkpoint(src)
    if ckpt.fmt == to and not (to == "sat" and ckpt.upgraded_from):  # an old sat layout is worth rewriting
        raise RemoteGLMError(f"{ckpt.directory} is already in {to} format")
    tok = None
    if tokenizer is not None or (ckpt.directory / TOKENIZER_FILE).is_file():
        tok = resolve_tokenizer(ckpt.directory, tokenizer, ckpt.config)
    elif to == "hf":
        resolve_tokenizer(ckpt.directory, None)  # raises the "pass --tokenizer" error
    sd, config = ckpt.state_dict, ckpt.config
    if to == "hf":
        if lora_layers_in(sd) is not None:
            print(f"merging LoRA (rank {config.lora_rank}) into the weights: HF VisualGLM has no LoRA layers", file=sys.stderr)
            sd = merge_lora_state_dict(sd, lora_alpha=config.lora_alpha)
            config = replace(config, use_lora=False, use_qlora=False)
        return save_hf_checkpoint(sd, config, tok, dst, shard_size=shard_size, safe_serialization=safe_serialization)
    return save_sat_checkpoint(sd, config, dst, iteration=iteration, tokenizer=tok)
