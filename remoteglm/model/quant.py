"""Load a VisualGLM checkpoint quantised to int4 (NF4) or int8 on the way (``load_model_quantized``,
what the demos and the API call); ``remoteglm quantize SRC DST --bits 4|8`` saves a quantised copy
(``remoteglm.families.visualglm``) so later starts load it directly. The layers: ``remoteglm.model.quant_layers``."""

from __future__ import annotations

from remoteglm.device import parse_device, parse_dtype
from remoteglm.errors import RemoteGLMError
from remoteglm.model.checkpoint import load_model
from remoteglm.model.quant_checkpoint import is_quantized_checkpoint, load_quantized
from remoteglm.model.quant_layers import check_bits, quantize_model


def load_model_quantized(path, quant: int | None = None, tokenizer=None, device="cpu", dtype=None, *,
                         lm_head: bool | None = None, offload: bool | None = None, progress: bool = True):
    """What the demos and the API call: load ``path`` and quantise it to ``quant`` bits (None: as is).

    A directory written by ``save_quantized`` loads without re-quantising (``quant`` must then be
    None or match). For CUDA, a float checkpoint is read into host RAM and quantised onto the
    card layer by layer. ``lm_head`` / ``offload`` (int8 output head / embeddings in host RAM)
    default to on for CUDA, off for the CPU, where they save nothing worth the extra rounding.
    Returns ``(model, tokenizer, config)``.
    """
    if quant is not None:
        check_bits(quant)
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
