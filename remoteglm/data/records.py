"""Fine-tune records: the ``Record`` type and ``load_records``, which reads a fine-tune JSON list
(``{img, prompt, label[, history]}``) or a Chinese Karpathy dataset (``dataset_<name>_zh.json``).
Training, the tiny model's pre-training and evaluation read their records here."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remoteglm.data.instructions import SENTENCE_PROMPTS
from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json


@dataclass
class Record:
    img: Path
    prompt: str
    label: str
    history: tuple[tuple[str, str], ...] = ()  # earlier turns of a conversation record, oldest first


def _history(path: Path, i: int, value: Any) -> tuple[tuple[str, str], ...]:
    """A record's optional ``"history": [[question, answer], ...]`` (ChatGLM's fine-tune convention)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
            isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in value):
        raise RemoteGLMError(f"{path}: item {i} 'history' must be a list of [question, answer] string pairs")
    return tuple((q, a) for q, a in value)


def resolve_image(img: str, base: Path) -> Path:
    """Image paths are relative to the JSON file's directory; fall back to the working directory."""
    p = Path(img)
    if p.is_absolute():
        return p
    cand = base / p
    if cand.exists():
        return cand
    return p if p.exists() else cand


def image_base(path: Path, data, image_root: str | Path | None = None) -> Path:
    """Where the relative image paths of the data file ``path`` (parsed: ``data``) are looked up:
    ``image_root`` if given, else a Karpathy dataset's own ``image_root`` field (relative to the
    file), else the file's folder."""
    if image_root:
        return Path(image_root)
    if isinstance(data, dict) and data.get("image_root"):
        return path.parent / data["image_root"]
    return path.parent


def load_records(path: str | Path, split: str = "train", seed: int = 42,
                 image_root: str | Path | None = None) -> list[Record]:
    """Read a fine-tune JSON list or a Chinese Karpathy dataset (``images[].sentences[].raw``).

    A Karpathy dataset gives one record per Chinese sentence of each image in ``split``, with a
    description question drawn (seeded) from the pool its built fine-tune files use
    (``remoteglm.data.instructions.SENTENCE_PROMPTS``). ``image_root`` (else the dataset's own
    ``image_root`` field, else the JSON's folder) is where relative image paths are looked up.
    """
    path = Path(path)
    data = read_json(path, "fine-tune data", hint="; pass a fine-tune JSON ({img, prompt, label} list) or a "
                     "dataset_<name>_zh.json (e.g. data/sample/sample_train.json)")
    base = image_base(path, data, image_root)
    records: list[Record] = []
    if isinstance(data, list):
        for i, item in enumerate(data):
            if not isinstance(item, dict) or not {"img", "prompt", "label"} <= item.keys():
                raise RemoteGLMError(f"{path}: item {i} is not an {{\"img\", \"prompt\", \"label\"}} object")
            if not str(item["label"]).strip():
                raise RemoteGLMError(f"{path}: item {i} has an empty label")
            records.append(Record(resolve_image(str(item["img"]), base), str(item["prompt"]), str(item["label"]),
                                  _history(path, i, item.get("history"))))
    elif isinstance(data, dict) and isinstance(data.get("images"), list):
        rng = random.Random(seed)
        for im in data["images"]:
            if im.get("split", "train") != split:
                continue
            img = resolve_image(os.path.join(im.get("filepath", ""), im["filename"]), base)
            for s in im.get("sentences", []):
                text = (s.get("raw") or "").strip()
                if text:
                    records.append(Record(img, rng.choice(SENTENCE_PROMPTS), text))
    else:
        raise RemoteGLMError(
            f"{path}: unknown format; expected a list of {{img, prompt, label}} or a Karpathy-style "
            "{\"images\": [...]} dataset (run translation_en2zh.py to make one)")
    if not records:
        raise RemoteGLMError(f"{path}: no training samples found (split '{split}')")
    return records
