"""Quantised VisualGLM checkpoints: ``save_quantized`` writes a sat-format folder whose
``model_config.json`` records the quantisation; ``load_quantized`` reads it back without
re-quantising (the layers come from ``remoteglm.model.quant_layers``)."""

from __future__ import annotations

from pathlib import Path

import torch

from remoteglm.device import parse_device, parse_dtype
from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json
from remoteglm.model.layout import SAT_CONFIG, detect_format
from remoteglm.model.quant_layers import (BITS, LM_HEAD, empty_quantized, head_last, offload_embedding_table, quant_targets,
                                          quantization_of, quantized_keys)
from remoteglm.model.reading import read_sat, resolve_tokenizer
from remoteglm.model.saving import save_sat_checkpoint

def save_quantized(model, out_dir, tokenizer=None, iteration: int = 1) -> Path:
    """Write a quantised model as a sat-format checkpoint directory (``model_config.json`` holds
    the ``quantization`` record). ``load_model_quantized(out_dir)`` reads it back as is."""
    if not quantization_of(model):
        raise RemoteGLMError("the model is not quantised: call quantize_model first")
    from remoteglm.compat import unpack_bnb_cpu_layout

    unpack_bnb_cpu_layout(model)  # save the one layout every CPU and CUDA read
    sd = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in model.state_dict().items()}
    return save_sat_checkpoint(sd, model.config, out_dir, iteration=iteration, tokenizer=tokenizer)


def is_quantized_checkpoint(path) -> int | None:
    """Bits of a checkpoint directory written by save_quantized, else None (cheap: reads the config)."""
    fmt, d = detect_format(path)
    if fmt != "sat":
        return None
    rec = read_json(d / SAT_CONFIG, require_object=True).get("quantization")
    return int(rec["bits"]) if isinstance(rec, dict) and rec.get("bits") in BITS else None


def load_quantized(path, tokenizer=None, device="cpu", dtype=None, offload_embeddings: bool = False):
    """Load a directory written by ``save_quantized`` -> ``(model, tokenizer, config)``."""
    from remoteglm.model.lora import add_lora, lora_layers_in
    from remoteglm.model.visualglm import build_model, keep_rotary_fp32

    fmt, d = detect_format(path)
    dev = parse_device(device)
    dt = parse_dtype(dtype, dev, cuda_default="fp16")
    ckpt = read_sat(d)
    config, sd = ckpt.config, ckpt.state_dict
    rec = config.extra.get("quantization")
    if not isinstance(rec, dict) or rec.get("bits") not in BITS:
        raise RemoteGLMError(f"{d / SAT_CONFIG} has no valid 'quantization' record: it was not written by save_quantized")
    bits = int(rec["bits"])
    tok = resolve_tokenizer(d, tokenizer, config)
    source = str(ckpt.files[0])
    # Built in host RAM without init (pages never touched cost nothing), then the quantised layers
    # are swapped in from the file and the rest is loaded and moved.
    model = build_model(config, device="cpu", dtype=dt, skip_init=True)
    lora = lora_layers_in(sd)
    if lora is not None:
        rank, layers = lora
        add_lora(model, rank, lora_alpha=config.lora_alpha, layer_range=None if layers == list(range(config.num_layers)) else layers)
    handled: set[str] = set()
    try:
        targets = list(quant_targets(model))
        if rec.get("lm_head_int8"):
            targets.append((model.get_mixin("chatglm-final"), "lm_head", LM_HEAD))
        for owner, attr, name in targets:
            lin = getattr(owner, attr)
            b = 8 if name == LM_HEAD else bits
            has_bias = getattr(lin, "bias", None) is not None
            keys = quantized_keys(name + ".", b, has_bias)
            missing = sorted(k for k in keys if k not in sd)
            if missing:
                raise RemoteGLMError(f"{source}: missing {missing[0]}: the quantised checkpoint is incomplete; quantise the float checkpoint again")
            setattr(owner, attr, empty_quantized(tuple(lin.weight.shape), has_bias, b, dt, sd, name + ".", dev))
            handled |= keys | {k for k in sd if k.startswith(name + ".weight.")}
        if rec.get("lm_head_int8"):
            head_last(model)
    except (KeyError, ValueError, RuntimeError) as e:
        raise RemoteGLMError(f"{source}: cannot rebuild the quantised layers ({e}); quantise the float checkpoint again") from None
    rest = {k: v for k, v in sd.items() if k not in handled}
    expected = {k for k in model.state_dict() if not k.endswith("rotary_emb.inv_freq")} - handled
    unexpected = sorted(k for k in rest if k not in expected and not k.endswith("rotary_emb.inv_freq"))
    missing = sorted(k for k in expected if k not in rest)
    if unexpected or missing:
        what = f"unexpected tensor {unexpected[0]}" if unexpected else f"missing tensor {missing[0]}"
        raise RemoteGLMError(f"{source}: {what}: the weights do not match model_config.json")
    model.load_state_dict(rest, strict=False)
    if offload_embeddings:
        offload_embedding_table(model)
    model.to(dev)
    keep_rotary_fp32(model)
    model.eval()
    return model, tok, config
