"""What the fine-tune does to the model around sat's loop: which weights train, where the frozen
image encoder lives, and the extra files a resumable, loadable checkpoint needs."""

from __future__ import annotations

from pathlib import Path


from remoteglm.io import write_json_atomic
from remoteglm.errors import RemoteGLMError
from remoteglm.model.lora import add_lora


def is_trainable(name: str, train_qformer: bool) -> bool:
    if ".matrix_A." in name or ".matrix_B." in name:
        return True
    return train_qformer and (".eva.model.qformer." in name or ".eva.model.glm_proj." in name)


def prepare(model, opts, config, device=None) -> None:
    """Add LoRA (unless the checkpoint already has it: then its LoRA trains on) and freeze the rest.
    ``device``: where training runs; QLoRA's NF4 rounding happens there (see add_lora)."""
    if config.has_lora:
        if opts.use_qlora != bool(config.use_qlora):
            raise RemoteGLMError("--from_pretrained already holds LoRA layers of the other kind (LoRA vs QLoRA); "
                                 "merge it first: python -m remoteglm.train.merge")
    else:
        add_lora(model, opts.lora_rank, opts.lora_alpha, opts.lora_dropout, opts.layer_range, qlora=opts.use_qlora,
                 quantize_device=device)
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
    write_json_atomic(run_dir / "model_config.json", model.config.to_sat_dict(), indent=2)
    if not (run_dir / "ice_text.model").exists():
        tokenizer.save(run_dir)
