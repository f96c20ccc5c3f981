"""LoRA on ChatGLM's attention, the way the official VisualGLM fine-tune does it (sat ``LoraMixin``).

``query_key_value`` gets one A/B pair per partition (q, k, v) and ``attention.dense`` one pair;
parameter names are ``...query_key_value.matrix_A.{0,1,2}`` / ``matrix_B.{i}`` and
``...query_key_value.original.weight``, exactly what RemoteGLM/XrayGLM checkpoints hold. Only the
ChatGLM transformer is touched: ViT, Q-Former and glm_proj live in the ``eva`` mixin.
Scale = lora_alpha / rank (the official alpha is 1, so 1/rank).
"""

from __future__ import annotations

import contextlib
import io
import re

import torch
import torch.nn as nn

from remoteglm.errors import RemoteGLMError

LORA_MIXIN = "lora"
_LORA_KEY = re.compile(r"^transformer\.layers\.(\d+)\.attention\.(query_key_value|dense)\.matrix_A\.0$")


def add_lora(
    model,
    rank: int,
    lora_alpha: float = 1.0,
    lora_dropout: float = 0.0,
    layer_range: list[int] | None = None,
    qlora: bool = False,
    quantize_device=None,
):
    """Wrap ChatGLM attention layers (all, or the indices in ``layer_range``) with LoRA.

    A is Kaiming-uniform, B zero, so the model's output is unchanged until trained. ``qlora``
    also turns every ChatGLM Linear into a bitsandbytes NF4 layer (sat's QLoRA), quantised on
    ``quantize_device`` (default: where the model is) one layer at a time, so the float ChatGLM
    never sits on a GPU whole; the ChatGLM transformer then stays there.
    Records rank/layer_range/use_lora in ``model.config`` so saved checkpoints carry them.
    """
    from sat.model.finetune.lora2 import LoraMixin

    if rank <= 0:
        raise RemoteGLMError(f"LoRA rank must be positive, got {rank}")
    n = len(model.transformer.layers)
    if layer_range is not None:
        layer_range = [int(i) for i in layer_range]
        bad = [i for i in layer_range if not 0 <= i < n]
        if bad:
            raise RemoteGLMError(f"layer_range {bad} outside the model's {n} layers (0..{n - 1})")
    if LORA_MIXIN in model.mixins:
        raise RemoteGLMError("the model already has LoRA layers; merge_lora() first to add new ones")
    if qlora:
        from remoteglm.compat import pin_bnb_cpu_layout

        pin_bnb_cpu_layout()  # else bitsandbytes' CPU repacking after an eval breaks training
    mixin = LoraMixin(n, rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout, layer_range=layer_range, qlora=qlora)
    p = model.transformer.word_embeddings.weight
    with contextlib.redirect_stdout(io.StringIO()):  # sat prints one line per replaced layer
        model.add_mixin(LORA_MIXIN, mixin, reinit=True)
    if qlora:  # bitsandbytes quantises a Params4bit when it is moved (CPU included)
        # Its CPU quantiser is pure torch, ~2 s per 4096x16384 matrix (minutes for ChatGLM-6B):
        # a GPU does it in milliseconds.
        target = torch.device(quantize_device) if quantize_device is not None else p.device
        for layer in model.transformer.layers:
            layer.to(target)
        model.transformer.to(target)
    # New A/B matrices are created fp32 on CPU; follow the model.
    for i in mixin.layer_range:
        att = model.transformer.layers[i].attention
        for name in ("query_key_value", "dense"):
            lin = getattr(att, name)
            if not qlora:
                lin.original.to(device=p.device, dtype=p.dtype)
            lin.matrix_A.to(device=p.device, dtype=p.dtype)
            lin.matrix_B.to(device=p.device, dtype=p.dtype)
    cfg = getattr(model, "config", None)
    if cfg is not None:
        cfg.lora_rank, cfg.layer_range, cfg.lora_alpha = rank, layer_range, float(lora_alpha)
        cfg.use_lora, cfg.use_qlora = not qlora, bool(qlora)
    return model


def _lora_delta(lin) -> torch.Tensor:
    """concat_i(B_i @ A_i) * scale: the [out, in] update a LoraLinear adds to its weight."""
    parts = [mB.float() @ mA.float() for mA, mB in zip(lin.matrix_A, lin.matrix_B)]
    return torch.cat(parts, 0) * lin.scaling


def merge_lora(model):
    """Fold every LoRA pair into its weight (W + concat(B_i A_i) * scale) and drop the LoRA layers.

    Afterwards the parameter names are the plain ones (``...query_key_value.weight``), so the
    model saves as a base checkpoint.
    """
    if LORA_MIXIN not in model.mixins:
        raise RemoteGLMError("the model has no LoRA layers to merge")
    mixin = model.get_mixin(LORA_MIXIN)
    for i in mixin.layer_range:
        att = model.transformer.layers[i].attention
        for name in ("query_key_value", "dense"):
            lin = getattr(att, name)
            orig = lin.original
            with torch.no_grad():
                if orig.weight.dtype == torch.uint8:  # QLoRA: dequantise the NF4 weight first
                    import bitsandbytes.functional as bnbf

                    w = bnbf.dequantize_4bit(orig.weight.data, orig.weight.quant_state).float()
                    new = nn.Linear(w.shape[1], w.shape[0], bias=orig.bias is not None, device=w.device, dtype=lin.matrix_A[0].dtype)
                    new.weight.copy_(w + _lora_delta(lin).to(w.device))
                    if orig.bias is not None:
                        new.bias.copy_(orig.bias)
                    orig = new
                else:
                    orig.weight.add_(_lora_delta(lin).to(orig.weight.device, orig.weight.dtype))
            setattr(att, name, orig)
    model.del_mixin(LORA_MIXIN)
    cfg = getattr(model, "config", None)
    if cfg is not None:
        cfg.use_lora = cfg.use_qlora = False
        cfg.lora_rank, cfg.layer_range = 0, None
    return model


def is_quantized_state_dict(state_dict) -> bool:
    """True when a sat state dict holds bitsandbytes NF4 layers (a QLoRA fine-tune)."""
    return any(k.endswith(".quant_state") for k in state_dict)


def dequantize_state_dict(state_dict: dict, dtype=torch.float32) -> dict:
    """NF4 weights of a QLoRA checkpoint -> plain ``dtype`` weights, bitsandbytes' extra entries
    dropped; the result loads into an ordinary (LoRA) model, where it can be merged or re-quantised.
    """
    import bitsandbytes.functional as bnbf

    out = dict(state_dict)
    for key in [k for k in state_dict if k.endswith(".quant_state")]:
        prefix = key[: -len("quant_state")]
        qs = state_dict[key]
        if not isinstance(qs, bnbf.QuantState):
            raise RemoteGLMError(
                f"{key} was saved by an old bitsandbytes (quant_state is a {type(qs).__name__}); load and merge that "
                "QLoRA checkpoint with the bitsandbytes version that trained it, then load the merged model"
            )
        w = state_dict[prefix + "weight"]
        out[prefix + "weight"] = bnbf.dequantize_4bit(w, qs).to(dtype)
        for k in [k for k in out if k.startswith(prefix + "weight.") or k == key]:
            del out[k]
    return out


def lora_layers_in(state_dict) -> tuple[int, list[int]] | None:
    """(rank, sorted layer indices) of the LoRA pairs a sat state dict holds, or None."""
    layers, rank = set(), None
    for k, v in state_dict.items():
        m = _LORA_KEY.match(k)
        if m:
            layers.add(int(m.group(1)))
            rank = int(v.shape[0])
    return (rank, sorted(layers)) if layers else None


def merge_lora_state_dict(state_dict: dict, lora_alpha: float = 1.0) -> dict:
    """The same merge on a bare sat state dict (no model built): used by the converter."""
    out = {}
    groups: dict[str, dict] = {}
    for k, v in state_dict.items():
        m = re.match(r"^(.*)\.(original\.(weight|bias)|matrix_A\.(\d+)|matrix_B\.(\d+))$", k)
        if not m:
            out[k] = v
            continue
        g = groups.setdefault(m.group(1), {"A": {}, "B": {}})
        if m.group(3):
            g[m.group(3)] = v
        elif m.group(4) is not None:
            g["A"][int(m.group(4))] = v
        else:
            g["B"][int(m.group(5))] = v
    for prefix, g in groups.items():
        if "weight" not in g or len(g["A"]) != len(g["B"]) or not g["A"]:
            raise RemoteGLMError(f"incomplete LoRA layer {prefix}: needs original.weight and matching matrix_A/matrix_B")
        if g["weight"].dtype == torch.uint8:
            raise RemoteGLMError(f"{prefix} holds a 4-bit QLoRA weight; load the checkpoint with load_model and merge_lora instead")
        rank = g["A"][0].shape[0]
        delta = torch.cat([g["B"][i].float() @ g["A"][i].float() for i in sorted(g["A"])], 0) * (lora_alpha / rank)
        out[prefix + ".weight"] = (g["weight"].float() + delta).to(g["weight"].dtype)
        if "bias" in g:
            out[prefix + ".bias"] = g["bias"]
    return out
