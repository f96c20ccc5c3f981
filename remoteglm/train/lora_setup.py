"""What the fine-tune does to the model around sat's loop: which weights train, where the frozen
image encoder lives, and the extra files a resumable, loadable checkpoint needs."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.model.lora import add_lora


def is_trainable(name: str, train_qformer: bool) -> bool:
    if ".matrix_A." in name or ".matrix_B." in name:
        return True
    return train_qformer and (".eva.model.qformer." in name or ".eva.model.glm_proj." in name)


def prepare(model, opts, config) -> None:
    """Add LoRA (unless the checkpoint already has it: then its LoRA trains on) and freeze the rest."""
    if config.has_lora:
        if opts.use_qlora != bool(config.use_qlora):
            raise RemoteGLMError("--from_pretrained already holds LoRA layers of the other kind (LoRA vs QLoRA); "
                                 "merge it first: python -m remoteglm.train.merge")
    else:
        add_lora(model, opts.lora_rank, opts.lora_alpha, opts.lora_dropout, opts.layer_range, qlora=opts.use_qlora)
    n_train = 0
    for name, p in model.named_parameters():
        p.requires_grad_(is_trainable(name, opts.train_qformer))
        n_train += p.numel() if p.requires_grad else 0
    if n_train == 0:
        raise RemoteGLMError("no trainable parameters (check --layer_range)")
    model.trainable_parameters = n_train


def park_image_encoder(model) -> None:
    """Take the frozen ViT/Q-Former/glm_proj out of the module tree, so DeepSpeed never moves them
    to the GPU (their output comes from the feature cache), while checkpoints still save them
    under their official names."""
    mixin = model.get_mixin("eva")
    enc = mixin._modules.pop("model")
    object.__setattr__(mixin, "parked_model", enc)

    def add_parked(module, state_dict, prefix, local_metadata):
        for k, v in enc.state_dict(prefix=prefix + "model.").items():
            state_dict[k] = v
        return state_dict

    mixin._register_state_dict_hook(add_parked)


def write_model_config(run_dir: Path, model, tokenizer) -> None:
    """Replace sat's generic model_config.json with the official VisualGLM fields (+ LoRA ones)
    and put ice_text.model beside it, so the run folder loads on its own."""
    cfg = model.config.to_sat_dict()
    tmp = run_dir / "model_config.json.tmp"
    tmp.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, run_dir / "model_config.json")
    if not (run_dir / "ice_text.model").exists():
        tokenizer.save(run_dir)


def save_optimizer(run_dir: Path, iteration: int, optimizer) -> None:
    """sat saves weights only; keep each rank's optimizer state so --resume restores Adam moments."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    out = run_dir / str(iteration) / f"optim_rank_{rank:02d}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(optimizer.state_dict(), tmp)
    os.replace(tmp, out)


def load_optimizer(run_dir: Path, iteration: int, optimizer) -> bool:
    files = sorted(glob.glob(str(run_dir / str(iteration) / "optim_rank_*.pt")))
    if not files:
        print(f"warning: {run_dir}/{iteration} has no optimizer state; Adam restarts from zero moments")
        return False
    states = [torch.load(f, map_location="cpu", weights_only=False) for f in files]
    if hasattr(optimizer, "_load_legacy_checkpoint"):  # DeepSpeed ZeRO 1/2
        optimizer.load_state_dict(states, load_optimizer_states=True, load_from_fp32_weights=False)
    else:
        optimizer.load_state_dict(states[0])
    return True
