"""One loader for every front end (cli_demo, web_demo, the API, evaluation, the fine-tune demo):
a model folder -> an ``Engine``. Which engine, and how it loads (layout, LoRA, merged,
quantised), is the folder's family's business (``remoteglm.registry``)."""

from __future__ import annotations

from pathlib import Path

from remoteglm.device import default_device
from remoteglm.registry import family_of


def check_checkpoint(path) -> str:
    """The name of the family that loads ``path``, else its one-line error (no weights read)."""
    fam = family_of(path)
    fam.check(Path(path).expanduser())
    return fam.name


def load_engine(path, *, quant: int | None = None, tokenizer=None, device: str | None = None, dtype=None,
                name: str | None = None, defaults: dict | None = None, max_new_tokens: int | None = None,
                seed: int | None = None, min_pixels: int | None = None, max_pixels: int | None = None,
                progress: bool = True):
    """(engine, memory summary) for ``path``; ``name`` defaults to the folder's name. Options a
    family does not take (``tokenizer``: VisualGLM; ``min_pixels``/``max_pixels``: the
    transformers families) are refused in one line by the family."""
    p = Path(path).expanduser()
    return family_of(p).load_engine(p, quant=quant, tokenizer=tokenizer, device=default_device(device), dtype=dtype,
                                    name=name or p.resolve().name, defaults=defaults, max_new_tokens=max_new_tokens, seed=seed,
                                    min_pixels=min_pixels, max_pixels=max_pixels, progress=progress)
