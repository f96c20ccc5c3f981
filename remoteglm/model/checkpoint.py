"""Load a VisualGLM checkpoint folder (sat or HF format; base, LoRA, QLoRA, merged or quantised)
into a model: ``load_model`` is the one entry point.

It detects the format (``remoteglm.model.layout``), checks the config, the files and the
tokenizer before reading gigabytes, reads the weights (``remoteglm.model.reading``) and loads them
into the model the config describes with the checks sat skips, each failure one line saying what
to do. Heavy imports (sat) happen only after the folder checked out, so bad paths fail fast.
"""

from __future__ import annotations

import os
import re

from remoteglm.device import parse_device, parse_dtype
from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json
from remoteglm.model.config import VisualGLMConfig
from remoteglm.model.layout import HF_CONFIG, SAT_CONFIG, detect_format, hf_weight_files, sat_weights_file
from remoteglm.model.lora import dequantize_state_dict, is_quantized_state_dict, lora_layers_in
from remoteglm.model.reading import Checkpoint, read_hf, read_sat, resolve_tokenizer

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
        if raw.get("quantization"):  # written by remoteglm.model.quant_checkpoint.save_quantized
            from remoteglm.model.quant_checkpoint import load_quantized

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
