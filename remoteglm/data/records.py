"""Fine-tune records: the ``Record`` type and ``load_records``, which reads a fine-tune JSON list
(``{img, prompt, label[, history]}``) or a Chinese Karpathy dataset (``dataset_<name>_zh.json``).
Training, the tiny model's pre-training and evaluation read their records here.

A grounding record adds ``kind`` and ``prompt_boxes`` / ``label_boxes``: lists of ``[x1, y1, x2, y2]``
or ``[x1, y1, x2, y2, "label"]`` in pixels of the original image, one per ``<box>`` marker of the
prompt / label, in order (``remoteglm.data.box_text`` writes them in a family's form)."""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remoteglm.boxes import Box
from remoteglm.data.instructions import SENTENCE_PROMPTS
from remoteglm.data.referring import BOX
from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json


@dataclass
class Record:
    img: Path
    prompt: str
    label: str
    history: tuple[tuple[str, str], ...] = ()  # earlier turns of a conversation record, oldest first
    prompt_boxes: tuple[Box, ...] = ()  # one per BOX marker of prompt, original-image pixels
    label_boxes: tuple[Box, ...] = ()   # one per BOX marker of label
    kind: str | None = None             # grounding task kind (refer, identify, grounded, detect, count)


def _history(path: Path, i: int, value: Any) -> tuple[tuple[str, str], ...]:
    """A record's optional ``"history": [[question, answer], ...]`` (ChatGLM's fine-tune convention)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
            isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in value):
        raise RemoteGLMError(f"{path}: item {i} 'history' must be a list of [question, answer] string pairs")
    return tuple((q, a) for q, a in value)


def read_boxes(path: Path, i: int, item: dict, key: str, text: str) -> tuple[Box, ...]:
    """A record's ``key`` box list, checked: numbers, x1 < x2, y1 < y2, none negative (the image's
    far edges are checked when its size is read), and as many boxes as ``text`` has BOX markers."""
    value = item.get(key) or []
    where = f"{path}: item {i} {key!r}"
    if not isinstance(value, list):
        raise RemoteGLMError(f"{where} must be a list of [x1, y1, x2, y2] or [x1, y1, x2, y2, \"label\"] boxes")
    out = []
    for k, b in enumerate(value):
        ok = (isinstance(b, list) and len(b) in (4, 5)
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b[:4])
              and (len(b) == 4 or isinstance(b[4], str)))
        if not ok:
            raise RemoteGLMError(f"{where} box {k} is {json.dumps(b, ensure_ascii=False)[:80]}: "
                                 "expected [x1, y1, x2, y2] or [x1, y1, x2, y2, \"label\"] (pixels)")
        x1, y1, x2, y2 = (float(v) for v in b[:4])
        if not (0 <= x1 < x2 and 0 <= y1 < y2):
            raise RemoteGLMError(f"{where} box {k} {b[:4]} is not a box on the image: need 0 <= x1 < x2 and 0 <= y1 < y2")
        out.append(Box(x1, y1, x2, y2, b[4] if len(b) == 5 else None))
    markers = text.count(BOX)
    if markers != len(out):
        field = "prompt" if key == "prompt_boxes" else "label"
        raise RemoteGLMError(f"{where} has {len(out)} box(es) but its {field} has {markers} {BOX} marker(s): "
                             "one box per marker, in order")
    return tuple(out)


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
            prompt, label = str(item["prompt"]), str(item["label"])
            kind = item.get("kind")
            if kind is not None and not isinstance(kind, str):
                raise RemoteGLMError(f"{path}: item {i} 'kind' must be a string")
            records.append(Record(resolve_image(str(item["img"]), base), prompt, label,
                                  _history(path, i, item.get("history")),
                                  read_boxes(path, i, item, "prompt_boxes", prompt),
                                  read_boxes(path, i, item, "label_boxes", label), kind))
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
