"""The model-family seam. Every stage (serving, fine-tuning, merging, quantising, evaluation,
``finetune.sh``) asks the family of a folder what to do; none asks which family it is.

    fam = family_of("checkpoints/Qwen2.5-VL-7B-Instruct")   # the families' own detection
    engine, memory = fam.load_engine(path, quant=4, device="cuda")
    fam.recipe(path)                                        # fine-tune defaults
    run_dir = fam.finetune(opts)                            # one option set for every family

A family is an instance of a ``Family`` subclass given to ``register``. The built-in ones live in
``remoteglm/families/`` (one module each) and are imported by name on first use, like
transformers' auto classes: they build on the stages (engines, trainers), so this module must not
import them, and depends on nothing above ``remoteglm.errors``.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from remoteglm.errors import RemoteGLMError

# module names under remoteglm.families: adding a family is its module plus one name here
BUILTIN = ("qwen2_5_vl", "glm4v", "qwen3_vl", "visualglm")


class Family(ABC):
    """What a model family owns: detection, loading (with quantisation), its chat format and
    generation backend (inside its engine), its trainer, merge, quantise, tiny model and recipe.

    ``name``: registry key; ``label``: what users call it; ``tiny_dir``: where ``finetune.sh``
    makes its tiny model on first use; ``train_options``: fine-tune options only this family
    takes (the CLI refuses them for others in one line); ``priority``: detection order (higher
    first; a family that claims any checkpoint layout to explain what is wrong with it goes last).
    """

    name: str = ""
    label: str = ""
    tiny_dir: str | None = None
    train_options: frozenset[str] = frozenset()
    priority: int = 0

    @abstractmethod
    def detect(self, folder: Path) -> bool:
        """True when ``folder`` is this family's: a base model, a run folder, a merged or
        quantised one (any path may be asked: a missing one, a file). May raise a one-line
        RemoteGLMError for a path that is this family's but broken, or that it can explain."""

    @abstractmethod
    def check(self, path: Path) -> None:
        """Everything that can be checked without reading weights (one line each)."""

    @abstractmethod
    def load_engine(self, path: Path, **opts) -> tuple[Any, str]:
        """(serving engine, memory summary); ``opts``: quant, tokenizer, device, dtype, name,
        defaults, max_new_tokens, seed, min_pixels, max_pixels, progress (``remoteglm.serve.loading``)."""

    def tiny_placeholder(self, path: Path) -> bool:
        """``path`` is this family's conventional tiny folder, not made yet (``finetune.sh`` makes it)."""
        return bool(self.tiny_dir) and not Path(path).exists() and Path(path).name == Path(self.tiny_dir).name

    @abstractmethod
    def recipe(self, path: Path, lora_rank: int | None = None) -> dict:
        """Fine-tune defaults for ``path`` (keys are fine-tune option names, plus ``demo_image``
        and ``threads``); a tiny model gets the settings that make it learn in a minute."""

    @abstractmethod
    def finetune(self, opts) -> Path:
        """Train with the fine-tune CLI's options (``remoteglm.train.options``); the run folder."""

    @abstractmethod
    def merge(self, src: Path, dst: Path, dtype: str | None = None, tokenizer: str | None = None) -> Path:
        """A LoRA run folded into plain weights at ``dst`` (loadable without this toolkit's LoRA code)."""

    @abstractmethod
    def quantize(self, src: Path, dst: Path, bits: int, **opts) -> Path:
        """A quantised copy at ``dst``, or one line saying how this family quantises instead."""

    def box_codec(self, path: str | os.PathLike | None = None, *, min_pixels: int | None = None,
                  max_pixels: int | None = None):
        """This family's text for boxes (``remoteglm.box_codec.BoxCodec``: ``encode(boxes, size)``,
        ``decode(text, size)``), for the model at ``path`` at the resolution a run uses
        (``min_pixels``/``max_pixels`` as given to fine-tuning or serving; None: the folder's own)."""
        raise RemoteGLMError(f"{self.label} has no box format in this toolkit")

    def memory_facts(self, path: Path | None = None):
        """The numbers ``remoteglm.train.planner``'s memory model needs (a ``planner.ModelFacts``) for
        the model at ``path``; None: the family's published full-size model."""
        raise RemoteGLMError(f"{self.label} has no memory model for --vram / --plan_only: set --batch_size yourself")

    @abstractmethod
    def make_tiny(self, out: Path, seed: int = 0, pretrain_steps: int | None = None, **opts) -> Path:
        """A tiny model of the real architecture saved in the real on-disk format at ``out``
        (``pretrain_steps``: its stand-in pre-training, None = the family's default)."""


_REGISTRY: dict[str, Family] = {}
_builtins_loaded = False


def register(family: Family) -> Family:
    """Add ``family`` (replacing one of the same name); returns it."""
    if not family.name or not family.label:
        raise ValueError("a family needs a name and a label")
    _REGISTRY[family.name] = family
    return family


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def families() -> list[Family]:
    """Every registered family, in detection order."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for mod in BUILTIN:
            importlib.import_module(f"remoteglm.families.{mod}")
    return sorted(_REGISTRY.values(), key=lambda f: -f.priority)


def family_named(name: str) -> Family:
    for f in families():
        if f.name == name:
            return f
    raise RemoteGLMError(f"unknown model family {name!r}: use one of {', '.join(f.name for f in families())}")


def labels() -> str:
    """'Qwen2.5-VL, GLM-4.1V, ... and VisualGLM-6B': what this toolkit loads."""
    names = [f.label for f in families()]
    return ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]


def tiny_family(path: str | os.PathLike) -> Family | None:
    """The family whose tiny model conventionally lives at ``path`` (``finetune.sh`` makes it there)."""
    p = Path(path)
    for f in families():
        if f.tiny_dir and p.name == Path(f.tiny_dir).name:
            return f
    return None


def family_of(path: str | os.PathLike) -> Family:
    """The family that loads ``path``, or one line saying what is wrong with it."""
    d = Path(path).expanduser()
    for f in families():
        if f.detect(d):
            return f
    raise RemoteGLMError(f"{d} is not a model folder this toolkit loads ({labels()})")
