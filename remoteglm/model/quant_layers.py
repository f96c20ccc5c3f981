"""int4 (NF4) / int8 weight quantisation of ChatGLM inside VisualGLM, with bitsandbytes.

Only ChatGLM's linear layers are quantised - in every ``transformer.layers.i``:
``attention.query_key_value``, ``attention.dense``, ``mlp.dense_h_to_4h``, ``mlp.dense_4h_to_h``
(5.6B of the 7.8B parameters). The ViT, Q-Former and ``glm_proj`` keep their dtype: quantising
the ViT costs too much accuracy (VisualGLM's own finding).

- 4 bits: NF4, blocks of 64, double-quantised absmax (QLoRA's format; ~0.52 bytes/parameter).
- 8 bits: LLM.int8() - per-row absmax int8 weights, outlier activations (> 6) in fp16.
Both run on CUDA and on the CPU (bitsandbytes >= 0.45).

A LoRA model keeps its LoRA pairs in full precision and only ``original`` is quantised, so a
fine-tune's small weight delta is not lost in the 4-bit rounding (QLoRA inference); pass
``merge_lora=True`` to fold the pairs in first (faster, slightly less faithful).

Two extra savings for a small card (both on by default when serving on CUDA, see
``load_model_quantized``): ``lm_head=True`` stores the 130528x4096 output head in int8 (1 GB ->
0.5 GB), and ``offload_embeddings=True`` keeps the word-embedding table (1 GB) in host RAM, where a
lookup of a few rows per step costs microseconds (llama.cpp does the same).

Saving and loading quantised checkpoints: ``remoteglm.model.quant_checkpoint``; loading any
checkpoint quantised on the way: ``remoteglm.model.quant.load_model_quantized``.
"""

from __future__ import annotations

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from remoteglm.errors import RemoteGLMError

BITS = (4, 8)
TARGETS = ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")
NF4_BLOCKSIZE = 64
INT8_THRESHOLD = 6.0  # LLM.int8() outlier threshold (the bitsandbytes/transformers default)
LM_HEAD = "mixins.chatglm-final.lm_head"


def _bnb():
    try:
        import bitsandbytes as bnb
    except Exception as e:  # noqa: BLE001 - a broken install fails in many ways
        raise RemoteGLMError(f"--quant needs bitsandbytes, which does not import here ({e}); `pip install bitsandbytes==0.50.2`") from None
    from remoteglm.compat import pin_bnb_cpu_layout

    pin_bnb_cpu_layout()
    return bnb


def check_bits(bits) -> int:
    """``bits`` (4 or 8) as an int; anything else is one line."""
    if bits not in BITS:
        raise RemoteGLMError(f"quantisation bits must be 4 or 8, got {bits!r}")
    return int(bits)


# ---- one layer -------------------------------------------------------------------------------------
def quantize_linear(lin: nn.Module, bits: int, device=None, compute_dtype: torch.dtype | None = None) -> nn.Module:
    """A bitsandbytes copy of ``lin`` (nn.Linear or sat's Column/RowParallelLinear) on ``device``.

    The float weight is moved to ``device`` one layer at a time and quantised there, so a model
    held in host RAM can be quantised onto a card too small for its fp16 weights.
    """
    bnb = _bnb()
    import bitsandbytes.functional as bnbf

    _quiet_bnb()

    w = lin.weight.detach()
    device = torch.device(device) if device is not None else w.device
    compute_dtype = compute_dtype or (w.dtype if w.is_floating_point() else torch.float32)
    out_f, in_f = w.shape
    has_bias = getattr(lin, "bias", None) is not None
    w = w.to(device)
    if bits == 4:
        q = bnb.nn.Linear4bit(in_f, out_f, bias=has_bias, compute_dtype=compute_dtype, compress_statistics=True,
                              quant_type="nf4", device="meta")
        packed, state = bnbf.quantize_4bit(w, blocksize=NF4_BLOCKSIZE, compress_statistics=True, quant_type="nf4")
        q.weight = bnb.nn.Params4bit(packed, requires_grad=False, quant_state=state, blocksize=NF4_BLOCKSIZE,
                                     compress_statistics=True, quant_type="nf4", module=q, bnb_quantized=True)
        q.quant_state = state
    else:
        q = bnb.nn.Linear8bitLt(in_f, out_f, bias=has_bias, has_fp16_weights=False, threshold=INT8_THRESHOLD, device="meta")
        cb, scb, _ = bnbf.int8_vectorwise_quant(w.to(torch.float16))
        q.weight = bnb.nn.Int8Params(cb, requires_grad=False, has_fp16_weights=False, CB=cb, SCB=scb)
    del w
    if has_bias:
        q.bias = nn.Parameter(lin.bias.detach().to(device=device, dtype=compute_dtype), requires_grad=False)
    return q


def empty_quantized(lin_shape: tuple[int, int], bias: bool, bits: int, compute_dtype, state_dict: dict, prefix: str, device) -> nn.Module:
    """A bitsandbytes layer rebuilt from a saved state dict (no re-quantisation)."""
    bnb = _bnb()
    _quiet_bnb()
    out_f, in_f = lin_shape
    if bits == 4:
        q = bnb.nn.Linear4bit(in_f, out_f, bias=bias, compute_dtype=compute_dtype, compress_statistics=True,
                              quant_type="nf4", device="meta")
        stats = {k[len(prefix + "weight."):]: v for k, v in state_dict.items() if k.startswith(prefix + "weight.")}
        q.weight = bnb.nn.Params4bit.from_prequantized(state_dict[prefix + "weight"], stats, device=device, module=q)
    else:
        q = bnb.nn.Linear8bitLt(in_f, out_f, bias=bias, has_fp16_weights=False, threshold=INT8_THRESHOLD, device="meta")
        cb = state_dict[prefix + "weight"].to(device)
        q.weight = bnb.nn.Int8Params(cb, requires_grad=False, has_fp16_weights=False, CB=cb, SCB=state_dict[prefix + "SCB"].to(device))
    if bias:
        q.bias = nn.Parameter(state_dict[prefix + "bias"].to(device=device, dtype=compute_dtype), requires_grad=False)
    return q


def quantized_keys(prefix: str, bits: int, bias: bool) -> set[str]:
    """The state-dict keys a saved ``bits``-bit layer at ``prefix`` holds."""
    if bits == 4:
        # nested_absmax / nested_quant_map are there only for double-quantised statistics
        names = ["weight", "weight.absmax", "weight.quant_map", "weight.quant_state.bitsandbytes__nf4"]
    else:
        names = ["weight", "SCB", "weight_format"]
    return {prefix + n for n in names + (["bias"] if bias else [])}


# ---- embeddings in host RAM ------------------------------------------------------------------------
class HostEmbedding(nn.Module):
    """The word-embedding table kept in host RAM: rows are looked up on the CPU and sent to the
    device of the ids. The table is a plain attribute (not a parameter or buffer), so
    ``model.to("cuda")`` leaves it where it is and ``next(model.parameters())`` still names the
    model's device and dtype. Saves/loads as ``weight`` like the embedding it replaces."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype | None = None):
        super().__init__()
        self.table = weight.detach().to(device="cpu", dtype=dtype or weight.dtype)
        self.num_embeddings, self.embedding_dim = self.table.shape

    @property
    def weight(self) -> torch.Tensor:
        return self.table

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids.cpu(), self.table).to(input_ids.device)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.table

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        if prefix + "weight" in state_dict:
            with torch.no_grad():
                self.table.copy_(state_dict[prefix + "weight"])
        else:
            missing_keys.append(prefix + "weight")


def offload_embedding_table(model) -> None:
    """Move ``transformer.word_embeddings`` into host RAM (see HostEmbedding)."""
    emb = model.transformer.word_embeddings
    if not isinstance(emb, HostEmbedding):
        model.transformer.word_embeddings = HostEmbedding(emb.weight)
        del emb


# ---- the model ----------------------------------------------------------------------------------------
def quant_targets(model):
    """(parent module, attribute, human name) of every linear to quantise; LoRA layers yield their ``original``."""
    for i, layer in enumerate(model.transformer.layers):
        for path in TARGETS:
            owner_name, attr = path.split(".")
            owner = getattr(layer, owner_name)
            lin = getattr(owner, attr)
            if hasattr(lin, "original"):  # sat LoraLinear: quantise the frozen base weight only
                yield lin, "original", f"transformer.layers.{i}.{path}.original"
            else:
                yield owner, attr, f"transformer.layers.{i}.{path}"


def head_last(model) -> None:
    """Put the ``chatglm-final`` mixin last. Its lm_head weight is the model's first parameter,
    which callers read for the model's dtype (``next(model.parameters()).dtype``); once that
    weight is int8 the answer would be wrong. Only ``final_forward`` lives there, so hook
    resolution does not depend on the order."""
    head = model.mixins.pop("chatglm-final")
    model.mixins["chatglm-final"] = head
    model.collect_hooks_()


def _quiet_bnb() -> None:
    from remoteglm.compat import quiet_bnb_casts

    quiet_bnb_casts()


def quantization_of(model) -> dict | None:
    """The quantisation record of a quantised model (``{"bits": 4, ...}``), else None."""
    cfg = getattr(model, "config", None)
    return (cfg.extra.get("quantization") if cfg is not None else None) or getattr(model, "_quantization", None)


def quantize_model(
    model,
    bits: int,
    *,
    device=None,
    lm_head: bool = False,
    offload_embeddings: bool = False,
    merge_lora: bool = False,
    progress: bool = False,
):
    """Quantise ChatGLM's linear layers in place to NF4 (``bits=4``) or int8 (``bits=8``).

    ``device``: where the quantised model ends up (default: where it is). Quantising a model held
    in host RAM onto ``"cuda"`` moves one layer at a time, so the fp16 model never has to fit on
    the card. ``lm_head`` also stores the output head in int8; ``offload_embeddings`` keeps the
    embedding table in host RAM; ``merge_lora`` folds LoRA pairs in before quantising (otherwise
    they stay in full precision beside the quantised base). Returns the model.
    """
    bits = check_bits(bits)
    if quantization_of(model):
        raise RemoteGLMError(f"the model is already quantised ({quantization_of(model)['bits']}-bit); load the float checkpoint to quantise it again")
    p = model.transformer.word_embeddings.weight
    dtype = p.dtype
    device = torch.device(device) if device is not None else p.device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    from remoteglm.model.lora import LORA_MIXIN
    from remoteglm.model.lora import merge_lora as _merge

    if merge_lora and LORA_MIXIN in model.mixins:
        _merge(model)
    todo = list(quant_targets(model))
    it = todo
    if progress:
        from tqdm import tqdm

        it = tqdm(todo, desc=f"int{bits} quantise", unit="layer", file=sys.stderr)
    for owner, attr, _ in it:
        lin = getattr(owner, attr)
        setattr(owner, attr, quantize_linear(lin, bits, device, compute_dtype=dtype))
        del lin  # drop the float copy now: host/GPU memory peaks at one layer, not one model
    if lm_head:
        head_owner = model.get_mixin("chatglm-final")
        head_owner.lm_head = quantize_linear(head_owner.lm_head, 8, device, compute_dtype=dtype)
        head_last(model)
    if offload_embeddings:
        offload_embedding_table(model)
    model.to(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    record = {"bits": bits, "method": "bitsandbytes", "format": "nf4" if bits == 4 else "int8",
              "blocksize": NF4_BLOCKSIZE if bits == 4 else None, "int8_threshold": INT8_THRESHOLD if bits == 8 else None,
              "modules": list(TARGETS), "lm_head_int8": bool(lm_head)}
    cfg = getattr(model, "config", None)
    if cfg is not None:
        cfg.extra["quantization"] = record
    else:
        model._quantization = record
    model.eval()
    return model


# ---- memory ---------------------------------------------------------------------------------------------
def _tensors_of(module: nn.Module):
    for t in module.parameters(recurse=False):
        yield t
        qs = getattr(t, "quant_state", None)
        if qs is not None:  # NF4 statistics live outside the parameter list
            yield from (x for x in (qs.absmax, qs.code) if isinstance(x, torch.Tensor))
            # the nested statistics are absent once bitsandbytes flattened them (CPU repacking)
            state2 = getattr(qs, "state2", None) if getattr(qs, "nested", False) else None
            if state2 is not None:
                yield from (x for x in (state2.absmax, state2.code) if isinstance(x, torch.Tensor))
        for name in ("CB", "SCB"):
            x = getattr(t, name, None)
            if isinstance(x, torch.Tensor):
                yield x
    yield from module.buffers(recurse=False)
    state = getattr(module, "state", None)  # Linear8bitLt keeps CB/SCB here after the first forward
    for name in ("CB", "SCB"):
        x = getattr(state, name, None)
        if isinstance(x, torch.Tensor):
            yield x
    if isinstance(module, HostEmbedding):
        yield module.table


def memory_by_device(model: nn.Module) -> dict[str, int]:
    """Bytes of weights (parameters, buffers, quantisation statistics) per device type, each
    storage counted once."""
    seen: set = set()
    out: dict[str, int] = {}
    for m in model.modules():
        for t in _tensors_of(m):
            if t.device.type == "meta":
                continue
            st = t.untyped_storage()
            key = (t.device.type, t.device.index, st.data_ptr())
            if key in seen or st.nbytes() == 0:
                continue
            seen.add(key)
            out[t.device.type] = out.get(t.device.type, 0) + st.nbytes()
    return out


def model_memory_bytes(model: nn.Module, device_type: str | None = None) -> int:
    """Bytes the model's weights occupy (on ``device_type`` only, if given)."""
    by = memory_by_device(model)
    return by.get(device_type, 0) if device_type else sum(by.values())


def describe_quant(model) -> str:
    """'int4 (NF4)' / 'int8 (LLM.int8)' / the float dtype: for banners and model cards."""
    rec = quantization_of(model)
    if rec:
        return "int4 (NF4)" if rec["bits"] == 4 else "int8 (LLM.int8)"
    return str(next(model.parameters()).dtype).replace("torch.", "")


def gib(n: int) -> str:
    """A byte count for people: '5.25 GiB', or MiB below a tenth of a GiB."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.1f} MiB"


def memory_summary(model) -> str:
    """'weights 5.25 GiB on cuda + 1.00 GiB host RAM, CUDA peak 5.31 GiB': what a model really uses."""
    by = memory_by_device(model)
    dev = next(model.parameters()).device.type
    text = f"weights {gib(by.get(dev, 0))} on {dev}"
    if dev != "cpu" and by.get("cpu"):
        text += f" + {gib(by['cpu'])} host RAM"
    if dev == "cuda":
        text += f", CUDA peak {gib(torch.cuda.max_memory_allocated())}"
    return text
