"""Parameter names and layouts between the sat checkpoint and the HF ``visualglm-6b`` repo.

    sat                                         HF
    mixins.eva.model.{vit,qformer,glm_proj}.*   image_encoder.{vit,qformer,glm_proj}.*
    mixins.chatglm-final.lm_head.weight         lm_head.weight
    mixins.chatglm-attn.rotary_emb.inv_freq     transformer.layers.{i}.attention.rotary_emb.inv_freq (every layer)
    transformer.*                               transformer.*   (same names)

``query_key_value`` (weight and bias) differs in row order: sat splits the fused output as
[q | k | v], each heads x head_dim (view 3, H, D); HF ChatGLM as per head [q k v] (view H, 3, D).
The permutation is exact, so sat -> HF -> sat is bit-identical.
"""

from __future__ import annotations

import re

import torch

SAT_IMAGE = "mixins.eva.model."
HF_IMAGE = "image_encoder."
SAT_LM_HEAD = "mixins.chatglm-final.lm_head.weight"
HF_LM_HEAD = "lm_head.weight"
SAT_INV_FREQ = "mixins.chatglm-attn.rotary_emb.inv_freq"
_HF_INV_FREQ = re.compile(r"^transformer\.layers\.(\d+)\.attention\.rotary_emb\.inv_freq$")
_QKV = re.compile(r"^transformer\.layers\.\d+\.attention\.query_key_value\.(weight|bias)$")


def qkv_sat_to_hf(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Rows (3, H, D) -> (H, 3, D); works for the weight [3HD, in] and the bias [3HD]."""
    rest = t.shape[1:]
    return t.reshape(3, num_heads, -1, *rest).transpose(0, 1).reshape(t.shape).contiguous()


def qkv_hf_to_sat(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Rows (H, 3, D) -> (3, H, D)."""
    rest = t.shape[1:]
    return t.reshape(num_heads, 3, -1, *rest).transpose(0, 1).reshape(t.shape).contiguous()


def hf_rotary_inv_freq(hidden_size: int, num_heads: int) -> torch.Tensor:
    """HF ChatGLM's buffer: 2-D rotary uses half of each head (dim = hidden / heads / 2), stored fp16."""
    dim = hidden_size // (num_heads * 2)
    return (1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))).half()


def sat_to_hf(state_dict: dict, num_layers: int, num_heads: int, hidden_size: int) -> dict:
    """sat names/layout -> HF names/layout (LoRA must be merged first)."""
    out = {}
    inv_freq = None
    for k, v in state_dict.items():
        if ".matrix_A." in k or ".matrix_B." in k or ".original." in k:
            raise ValueError(f"{k}: merge LoRA before converting to HF")
        if k == SAT_INV_FREQ:
            inv_freq = v
        elif k.startswith(SAT_IMAGE):
            out[HF_IMAGE + k[len(SAT_IMAGE):]] = v
        elif k == SAT_LM_HEAD:
            out[HF_LM_HEAD] = v
        elif _QKV.match(k):
            out[k] = qkv_sat_to_hf(v, num_heads)
        else:
            out[k] = v
    if inv_freq is None:
        inv_freq = hf_rotary_inv_freq(hidden_size, num_heads)
    for i in range(num_layers):
        out[f"transformer.layers.{i}.attention.rotary_emb.inv_freq"] = inv_freq.clone()  # safetensors refuses shared tensors
    return out


def hf_to_sat(state_dict: dict, num_heads: int) -> dict:
    """HF names/layout -> sat names/layout (one rotary buffer kept, as sat has one)."""
    out = {}
    for k, v in state_dict.items():
        m = _HF_INV_FREQ.match(k)
        if m:
            if m.group(1) == "0":
                out[SAT_INV_FREQ] = v
        elif k.startswith(HF_IMAGE):
            out[SAT_IMAGE + k[len(HF_IMAGE):]] = v
        elif k == HF_LM_HEAD:
            out[SAT_LM_HEAD] = v
        elif _QKV.match(k):
            out[k] = qkv_hf_to_sat(v, num_heads)
        else:
            out[k] = v
    return out
