"""One loader for every front end (cli_demo, web_demo, the API, evaluation, the fine-tune demo):
a checkpoint folder -> an ``Engine``. The engine is chosen from the folder: VisualGLM (sat or HF
layout, LoRA, merged, quantised) or a transformers VLM (GLM-4.1V / Qwen2.5-VL, or a LoRA run of
one: see ``remoteglm.model.vlm``)."""

from __future__ import annotations

from pathlib import Path

from remoteglm.device import default_device
from remoteglm.errors import RemoteGLMError, cli_entry


def check_checkpoint(path) -> str:
    """"vlm", "sat" or "hf" for a loadable folder, else the one-line error of its kind (no weights read)."""
    from remoteglm.model.checkpoint import detect_format
    from remoteglm.model.vlm import is_vlm

    return "vlm" if is_vlm(path) else detect_format(path)[0]


def describe_vlm_quant(model) -> str:
    qc = getattr(model.config, "quantization_config", None)
    if qc is not None:
        bits = 4 if getattr(qc, "load_in_4bit", False) or (isinstance(qc, dict) and qc.get("load_in_4bit")) else 8
        return "int4 (NF4)" if bits == 4 else "int8 (LLM.int8)"
    return str(next(model.parameters()).dtype).replace("torch.", "")


def load_engine(path, *, quant: int | None = None, tokenizer=None, device: str | None = None, dtype=None,
                name: str | None = None, defaults: dict | None = None, max_new_tokens: int | None = None,
                seed: int | None = None, min_pixels: int | None = None, max_pixels: int | None = None,
                progress: bool = True):
    """(engine, memory summary) for ``path``; ``name`` defaults to the folder's name."""
    import torch

    from remoteglm.model.quant import memory_summary
    from remoteglm.model.vlm import is_vlm

    dev = default_device(device)
    label = name or Path(path).expanduser().resolve().name
    if is_vlm(path):
        from remoteglm.model.vlm import load_vlm, sampling_defaults
        from remoteglm.serve.generation import CHAT_DEFAULTS
        from remoteglm.serve.vlm_engine import VLMEngine

        if tokenizer:
            raise RemoteGLMError("--tokenizer is for VisualGLM checkpoints; this folder brings its own tokenizer")
        from remoteglm.compat import quiet_warnings

        quiet_warnings()  # every front end (cli, web, API, evaluation): no library notices in the user's terminal
        model, proc = load_vlm(path, quant, dev, dtype, min_pixels=min_pixels, max_pixels=max_pixels)
        defaults = {**(defaults or CHAT_DEFAULTS), **sampling_defaults(path)}  # VisualGLM's tables, then the authors'
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        engine = VLMEngine(model, proc, name=label, quant=describe_vlm_quant(model), defaults=defaults,
                           max_new_tokens=max_new_tokens, generator=gen)
        return engine, memory_summary(model)
    if min_pixels or max_pixels:
        raise RemoteGLMError("--min_pixels / --max_pixels are for GLM-4.1V / Qwen2.5-VL folders; VisualGLM reads 224 x 224")
    from remoteglm.model.quant import describe_quant, load_model_quantized
    from remoteglm.serve.engine import Engine

    model, tok, _ = load_model_quantized(path, quant, tokenizer=tokenizer, device=dev, dtype=dtype, progress=progress)
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed) if seed is not None else None
    engine = Engine(model, tok, name=label, quant=describe_quant(model), defaults=defaults,
                    max_new_tokens=max_new_tokens, generator=gen)
    return engine, memory_summary(model)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """``python -m remoteglm.serve.loading DIR``: prints the engine that loads DIR ("transformers"
    or "visualglm"), or DIR's one error line (exit 2). finetune.sh asks this before it starts."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("dir")
    kind = check_checkpoint(ap.parse_args(argv).dir)
    print("transformers" if kind == "vlm" else "visualglm")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
