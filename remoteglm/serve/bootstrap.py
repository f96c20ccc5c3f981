"""The start-up every front end shares (chat, web demo, API, evaluation): one process of its
own with ``--trust_checkpoint`` applied, the device, the "loading" line, the engine, the memory
line. Both lines go to stderr, so stdout keeps only answers and URLs."""

from __future__ import annotations

import sys
from pathlib import Path


def start_engine(args, path=None, *, name: str | None = None, defaults: dict | None = None,
                 max_new_tokens: int | None = None, seed: int | None = None, progress: bool = True):
    """``(engine, device, memory)`` for ``path`` (default ``args.from_pretrained``). ``args``
    holds the model options of ``remoteglm.options.add_model_args`` (``device``, ``dtype``,
    ``quant``, ``tokenizer``, ``min_pixels``, ``max_pixels``, ``trust_checkpoint``); ``name``
    defaults to the folder's name; the rest goes to ``load_engine``."""
    from remoteglm.compat import single_process_env
    from remoteglm.device import default_device
    from remoteglm.model.unpickle import trust_checkpoints
    from remoteglm.serve.loading import load_engine

    single_process_env()
    trust_checkpoints(args.trust_checkpoint)
    path = args.from_pretrained if path is None else path
    device = default_device(args.device)
    print(f"loading {path} on {device} ...", file=sys.stderr, flush=True)
    engine, memory = load_engine(path, quant=args.quant, tokenizer=args.tokenizer, device=device, dtype=args.dtype,
                                 name=name or Path(path).expanduser().resolve().name, defaults=defaults,
                                 max_new_tokens=max_new_tokens, seed=seed, min_pixels=args.min_pixels,
                                 max_pixels=args.max_pixels, progress=progress)
    print(f"{engine.weights_label}: {engine.quant}; {memory}", file=sys.stderr, flush=True)
    return engine, device, memory
