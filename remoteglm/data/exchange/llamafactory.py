"""LLaMA-Factory's multimodal ShareGPT data, both ways, and the ``dataset_info.json`` entry that
names it (hiyouga/LLaMA-Factory ``data/README.md``: "Multimodal Image Dataset" and "OpenAI
Format"; the reader is ``src/llamafactory/data/converter.py`` ``SharegptDatasetConverter``).

    {"messages": [{"role": "user", "content": "<image>问题"}, {"role": "assistant", "content": "回答"}],
     "images": ["/abs/or/relative/image.png"]}
    dataset_info.json: {"NAME": {"file_name": "FILE", "formatting": "sharegpt",
                        "columns": {"messages": "messages", "images": "images"},
                        "tags": {"role_tag": "role", "content_tag": "content",
                                 "user_tag": "user", "assistant_tag": "assistant"}}}

Earlier turns of a conversation record are earlier message pairs; LLaMA-Factory learns every
answer unless ``mask_history: true`` (``hparams/data_args.py``), which trains on the last one
only, as this toolkit does. Relative image paths are looked up in ``media_dir``, by default the
``dataset_dir`` that holds dataset_info.json (``converter.py`` ``_find_medias``).

LLaMA-Factory writes no box code of its own: the box text is the target family's, in the frame
of the image LLaMA-Factory shows the model. Its multimodal plugin first scales an image into
[image_min_pixels, image_max_pixels] (``mm_plugin.py`` ``BasePlugin._preprocess_image``: the sides
times sqrt(limit / area), truncated to whole pixels; ``Qwen2VLPlugin`` then raises a side under 28
to 28), and the model folder's own image processor resizes that (``tool_frame``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from remoteglm.data.exchange.common import (
    IMAGE_TAG, META_KEY, Exporter, ImagePaths, Sample, meta_of, pair_turns, take_image_tag,
)
from remoteglm.data.records import Record
from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json, write_json_atomic

IMAGE_MAX_PIXELS = 768 * 768  # LLaMA-Factory's defaults (hparams/model_args.py ProcessorArguments)
IMAGE_MIN_PIXELS = 32 * 32
PLACEHOLDERS = (IMAGE_TAG, "<video>", "<audio>")  # extras/constants.py
COLUMNS = {"messages": "messages", "images": "images"}
TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
INFO = "dataset_info.json"


def preresized(width: int, height: int, image_max_pixels: int, image_min_pixels: int) -> tuple[int, int]:
    """The size LLaMA-Factory's Qwen2-VL-style plugins hand the image processor."""
    if width * height > image_max_pixels:
        f = math.sqrt(image_max_pixels / (width * height))
        width, height = int(width * f), int(height * f)
    if width * height < image_min_pixels:
        f = math.sqrt(image_min_pixels / (width * height))
        width, height = int(width * f), int(height * f)
    if min(width, height) < 28:
        width, height = max(width, 28), max(height, 28)
    return width, height


def tool_frame(codec: Any, image_max_pixels: int = IMAGE_MAX_PIXELS, image_min_pixels: int = IMAGE_MIN_PIXELS):
    """``codec`` (the family's, at the model folder's own processor range) in the frame of the image
    LLaMA-Factory shows the model: its pre-resize first. A frame relative to the image (0..1000)
    is unchanged by it."""
    if codec is None:
        return None
    if image_min_pixels > image_max_pixels:
        raise RemoteGLMError(f"--image_min_pixels {image_min_pixels} is more than --image_max_pixels {image_max_pixels}")
    inner = codec.frame
    return replace(codec, frame=lambda w, h: inner(*preresized(w, h, image_max_pixels, image_min_pixels)),
                   settings={**codec.settings, "image_max_pixels": image_max_pixels,
                             "image_min_pixels": image_min_pixels})


def row(record: Record, meta: dict, exporter: Exporter, paths: ImagePaths, where: str) -> dict:
    msgs = []
    for k, (q, a) in enumerate(exporter.turns(record, where)):
        msgs += [{"role": "user", "content": (IMAGE_TAG if k == 0 else "") + q}, {"role": "assistant", "content": a}]
    out = {"messages": msgs, "images": [paths.write(record.img)]}
    return out | ({META_KEY: meta} if meta else {})


def info_entry(file_name: str) -> dict:
    return {"file_name": file_name, "formatting": "sharegpt", "columns": dict(COLUMNS), "tags": dict(TAGS)}


def info_with(folder: Path, name: str, file_name: str) -> dict:
    """The folder's dataset_info.json (other datasets kept) with ``name`` set to this file's entry."""
    path = folder / INFO
    info = read_json(path, require_object=True) if path.is_file() else {}
    old = info.get(name)
    if isinstance(old, dict) and old.get("file_name") not in (None, file_name):
        raise RemoteGLMError(f"{path} already has a dataset {name!r} for {old.get('file_name')}; "
                             "pick another --dataset_name")
    return info | {name: info_entry(file_name)}


def write_info(folder: Path, info: dict) -> Path:
    return write_json_atomic(folder / INFO, info, indent=2)


def _entry(path: Path) -> dict | None:
    """The dataset_info.json entry beside ``path`` that names it, if any."""
    info_path = path.parent / INFO
    if not info_path.is_file():
        return None
    info = read_json(info_path, require_object=True)
    hits = [(k, e) for k, e in info.items() if isinstance(e, dict) and e.get("file_name") == path.name]
    if len(hits) > 1:
        raise RemoteGLMError(f"{info_path}: {len(hits)} datasets name {path.name} ({', '.join(k for k, _ in hits)}); "
                             "keep one")
    if not hits:
        return None
    name, e = hits[0]
    if e.get("formatting", "alpaca") != "sharegpt":
        raise RemoteGLMError(f"{info_path}: dataset {name!r} is in {e.get('formatting', 'alpaca')!r} formatting; "
                             "only sharegpt data (messages with an images column) is read")
    return e


def samples(path: Path, rows: list[dict], drop_system: bool = False) -> list[Sample]:
    """The conversations of a LLaMA-Factory file, read with the columns and tags of its
    dataset_info.json entry if one beside it names the file, else by the README's two layouts
    (``messages`` with role/content, ``conversations`` with from/value)."""
    entry = _entry(path)
    out = []
    for i, r in enumerate(rows):
        where = f"{path}: item {i}"
        if entry is not None:
            cols, tags = {"messages": "conversations"} | entry.get("columns", {}), SHAREGPT_TAGS | entry.get("tags", {})
        elif "messages" in r:
            cols, tags = COLUMNS, TAGS | {"system_tag": "system"}
        elif "conversations" in r:
            cols, tags = {"messages": "conversations"}, SHAREGPT_TAGS
        else:
            raise RemoteGLMError(f"{where}: no 'messages' or 'conversations' list (a LLaMA-Factory sharegpt sample)")
        out.append(_sample(r, cols, tags, where, drop_system))
    return out


def _sample(r: dict, cols: dict, tags: dict, where: str, drop_system: bool) -> Sample:
    msgs = r.get(cols["messages"])
    if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
        raise RemoteGLMError(f"{where}: {cols['messages']!r} must be a list of message objects")
    roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags.get("system_tag"): "system"}
    turns = []
    for m in msgs:
        role = roles.get(m.get(tags["role_tag"]))
        if role is None:
            raise RemoteGLMError(f"{where}: unknown role {m.get(tags['role_tag'])!r} (records hold {tags['user_tag']!r} "
                                 f"and {tags['assistant_tag']!r} turns)")
        turns.append((role, m.get(tags["content_tag"])))
    system = [t for t in turns if t[0] == "system"] + ([("system", r[cols["system"]])] if r.get(cols.get("system")) else [])
    if system and not drop_system:
        raise RemoteGLMError(f"{where}: has a system prompt, which records do not keep; pass --drop_system to leave it out")
    turns = [t for t in turns if t[0] != "system"]
    images = r.get(cols.get("images", "images"))
    images = [images] if isinstance(images, str) else images or []
    pairs = pair_turns(turns, where)
    tags_seen = sum(t.count(IMAGE_TAG) for pair in pairs for t in pair)
    if len(images) != 1 or tags_seen != 1:
        raise RemoteGLMError(f"{where}: {len(images)} image(s) and {tags_seen} {IMAGE_TAG} tag(s); a record has one "
                             "image (we train one image per sample)")
    if not isinstance(images[0], str):
        raise RemoteGLMError(f"{where}: the image is a {type(images[0]).__name__}, not a path")
    pairs[0] = (take_image_tag(pairs[0][0], where), pairs[0][1])
    return Sample(where, images[0], pairs, meta_of(r, where))
