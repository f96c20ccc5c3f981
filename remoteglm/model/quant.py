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

``save_quantized`` writes a sat-format directory whose ``model_config.json`` records the
quantisation; ``load_model_quantized`` reads it back without re-quantising.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from remoteglm.device import default_device, parse_device, parse_dtype
from remoteglm.errors import RemoteGLMError, cli_entry

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


def _check_bits(bits) -> int:
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


def _empty_quantized(lin_shape: tuple[int, int], bias: bool, bits: int, compute_dtype, state_dict: dict, prefix: str, device) -> nn.Module:
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


def _quant_keys(prefix: str, bits: int, bias: bool) -> set[str]:
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
def _targets(model):
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


def _head_last(model) -> None:
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
    bits = _check_bits(bits)
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
    todo = list(_targets(model))
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
        _head_last(model)
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


# ---- save / load -----------------------------------------------------------------------------------------
def save_quantized(model, out_dir, tokenizer=None, iteration: int = 1) -> Path:
    """Write a quantised model as a sat-format checkpoint directory (``model_config.json`` holds
    the ``quantization`` record). ``load_model_quantized(out_dir)`` reads it back as is."""
    from remoteglm.model.checkpoint import save_sat_checkpoint

    if not quantization_of(model):
        raise RemoteGLMError("the model is not quantised: call quantize_model first")
    from remoteglm.compat import unpack_bnb_cpu_layout

    unpack_bnb_cpu_layout(model)  # save the one layout every CPU and CUDA read
    sd = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in model.state_dict().items()}
    return save_sat_checkpoint(sd, model.config, out_dir, iteration=iteration, tokenizer=tokenizer)


def is_quantized_checkpoint(path) -> int | None:
    """Bits of a checkpoint directory written by save_quantized, else None (cheap: reads the config)."""
    from remoteglm.io import read_json
    from remoteglm.model.checkpoint import SAT_CONFIG, detect_format

    fmt, d = detect_format(path)
    if fmt != "sat":
        return None
    rec = read_json(d / SAT_CONFIG, require_object=True).get("quantization")
    return int(rec["bits"]) if isinstance(rec, dict) and rec.get("bits") in BITS else None


def load_quantized(path, tokenizer=None, device="cpu", dtype=None, offload_embeddings: bool = False):
    """Load a directory written by ``save_quantized`` -> ``(model, tokenizer, config)``."""
    from remoteglm.model import checkpoint as ck
    from remoteglm.model.lora import add_lora, lora_layers_in
    from remoteglm.model.visualglm import build_model, keep_rotary_fp32

    fmt, d = ck.detect_format(path)
    dev = parse_device(device)
    dt = parse_dtype(dtype, dev, cuda_default="fp16")
    ckpt = ck.read_sat(d)
    config, sd = ckpt.config, ckpt.state_dict
    rec = config.extra.get("quantization")
    if not isinstance(rec, dict) or rec.get("bits") not in BITS:
        raise RemoteGLMError(f"{d / ck.SAT_CONFIG} has no valid 'quantization' record: it was not written by save_quantized")
    bits = int(rec["bits"])
    tok = ck.resolve_tokenizer(d, tokenizer, config)
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
        targets = list(_targets(model))
        if rec.get("lm_head_int8"):
            targets.append((model.get_mixin("chatglm-final"), "lm_head", LM_HEAD))
        for owner, attr, name in targets:
            lin = getattr(owner, attr)
            b = 8 if name == LM_HEAD else bits
            has_bias = getattr(lin, "bias", None) is not None
            keys = _quant_keys(name + ".", b, has_bias)
            missing = sorted(k for k in keys if k not in sd)
            if missing:
                raise RemoteGLMError(f"{source}: missing {missing[0]}: the quantised checkpoint is incomplete; quantise the float checkpoint again")
            setattr(owner, attr, _empty_quantized(tuple(lin.weight.shape), has_bias, b, dt, sd, name + ".", dev))
            handled |= keys | {k for k in sd if k.startswith(name + ".weight.")}
        if rec.get("lm_head_int8"):
            _head_last(model)
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


def load_model_quantized(path, quant: int | None = None, tokenizer=None, device="cpu", dtype=None, *,
                         lm_head: bool | None = None, offload: bool | None = None, progress: bool = True):
    """What the demos and the API call: load ``path`` and quantise it to ``quant`` bits (None: as is).

    A directory written by ``save_quantized`` loads without re-quantising (``quant`` must then be
    None or match). For CUDA, a float checkpoint is read into host RAM and quantised onto the
    card layer by layer. ``lm_head`` / ``offload`` (int8 output head / embeddings in host RAM)
    default to on for CUDA, off for the CPU, where they save nothing worth the extra rounding.
    Returns ``(model, tokenizer, config)``.
    """
    from remoteglm.model.checkpoint import load_model

    if quant is not None:
        _check_bits(quant)
    dev = parse_device(device)
    on_gpu = dev.type == "cuda"
    lm_head = on_gpu if lm_head is None else lm_head
    offload = on_gpu if offload is None else offload
    saved = is_quantized_checkpoint(path)
    if saved is not None:
        if quant is not None and quant != saved:
            raise RemoteGLMError(f"{path} holds an int{saved} model; run with --quant {saved} (or without --quant), "
                                 f"or quantise the float checkpoint to int{quant}")
        return load_quantized(path, tokenizer=tokenizer, device=dev, dtype=dtype, offload_embeddings=offload)
    if quant is None:
        return load_model(path, tokenizer=tokenizer, device=dev, dtype=dtype)
    dt = parse_dtype(dtype, dev, cuda_default="fp16")
    model, tok, config = load_model(path, tokenizer=tokenizer, device="cpu", dtype=dt)
    quantize_model(model, quant, device=dev, lm_head=lm_head, offload_embeddings=offload, progress=progress)
    return model, tok, model.config


def describe_quant(model) -> str:
    """'int4 (NF4)' / 'int8 (LLM.int8)' / the float dtype: for banners and model cards."""
    rec = quantization_of(model)
    if rec:
        return "int4 (NF4)" if rec["bits"] == 4 else "int8 (LLM.int8)"
    return str(next(model.parameters()).dtype).replace("torch.", "")


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.1f} MiB"


def memory_summary(model) -> str:
    """'weights 5.25 GiB on cuda + 1.00 GiB host RAM, CUDA peak 5.31 GiB': what a model really uses."""
    by = memory_by_device(model)
    dev = next(model.parameters()).device.type
    text = f"weights {_gib(by.get(dev, 0))} on {dev}"
    if dev != "cpu" and by.get("cpu"):
        text += f" + {_gib(by['cpu'])} host RAM"
    if dev == "cuda":
        text += f", CUDA peak {_gib(torch.cuda.max_memory_allocated())}"
    return text


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m remoteglm.model.quant",
        description="Quantise a VisualGLM checkpoint's ChatGLM layers (NF4 or int8) and save it, so later starts load it directly."
    )
    ap.add_argument("src", help="float checkpoint directory (sat or HF; LoRA runs too)")
    ap.add_argument("dst", help="output directory (sat format)")
    ap.add_argument("--bits", type=int, choices=BITS, required=True)
    ap.add_argument("--tokenizer", help="ice_text.model (default: the one in SRC)")
    ap.add_argument("--device", default=None, help="where to quantise: cuda (default if available) or cpu")
    ap.add_argument("--merge_lora", action="store_true", help="fold LoRA pairs into the weights before quantising")
    ap.add_argument("--lm_head_int8", action="store_true", help="also store the output head in int8")
    from remoteglm.options import add_trust_arg

    add_trust_arg(ap)
    args = ap.parse_args(argv)
    from remoteglm.compat import single_process_env
    from remoteglm.model.checkpoint import load_model, trust_checkpoints

    single_process_env()
    trust_checkpoints(args.trust_checkpoint)
    if Path(args.dst).resolve() == Path(args.src).resolve():
        raise RemoteGLMError("dst must differ from src: the float checkpoint is kept")
    from remoteglm.model.vlm import is_vlm

    if is_vlm(args.src):
        raise RemoteGLMError(f"{args.src} is a GLM-4.1V / Qwen2.5-VL folder: those are quantised as they load; pass "
                             f"--quant {args.bits} to cli_demo.py, web_demo.py, the API or the evaluation instead")
    if is_quantized_checkpoint(args.src) is not None:
        raise RemoteGLMError(f"{args.src} is already quantised; pass the float checkpoint")
    device = default_device(args.device)
    dtype = parse_dtype(None, device, cuda_default="fp16")
    t0 = time.time()
    model, tok, _ = load_model(args.src, tokenizer=args.tokenizer, device="cpu", dtype=dtype)
    before = model_memory_bytes(model)
    quantize_model(model, args.bits, device=device, lm_head=args.lm_head_int8, merge_lora=args.merge_lora, progress=True)
    out = save_quantized(model, args.dst, tokenizer=tok)
    print(f"int{args.bits} checkpoint written to {out}: weights {_gib(before)} -> {_gib(model_memory_bytes(model))} "
          f"({time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
