"""Weights written by sat <= 0.4.0, upgraded to the sat >= 0.4.1 layout this toolkit's model uses."""

from __future__ import annotations

import re

import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.model.config import VisualGLMConfig
from remoteglm.model.visualglm_hf import qkv_hf_to_sat
from remoteglm.model.lora import dequantize_state_dict, lora_layers_in

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
