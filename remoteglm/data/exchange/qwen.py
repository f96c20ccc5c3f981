"""Qwen's own fine-tuning scripts' data (QwenLM/Qwen3-VL, formerly QwenLM/Qwen2.5-VL,
``qwen-vl-finetune/README.md`` "Custom Dataset Configuration"; the reader is
``qwen-vl-finetune/qwenvl/data/data_processor.py`` ``_build_messages``), both ways:

    {"image": "images/001.jpg",
     "conversations": [{"from": "human", "value": "<image>\\n问题"}, {"from": "gpt", "value": "回答"}]}

The loader splits each human turn at its ``<image>`` tags and strips the text pieces, treats every
other ``from`` as the assistant, and learns every answer (``preprocess_qwen_visual`` labels each
assistant turn): an exported conversation record also trains its earlier answers there, unlike
here (say so to users; the last answer is the record's). Image paths are relative to the
dataset's ``data_path`` (``data/__init__.py``) or absolute; the boxes are the family's codec text
for the script's ``--min_pixels`` / ``--max_pixels`` (the processor resizes with them:
``update_processor_pixels``). The script trains Qwen2-VL / Qwen2.5-VL / Qwen3-VL only.
"""

from __future__ import annotations

from remoteglm.data.exchange.common import (
    IMAGE_TAG, META_KEY, Exporter, ImagePaths, Sample, meta_of, pair_turns, take_image_tag,
)
from remoteglm.data.records import Record
from remoteglm.errors import RemoteGLMError

PLACEHOLDERS = (IMAGE_TAG, "<video>")
FAMILIES = ("qwen2_5_vl", "qwen3_vl")  # what qwen-vl-finetune trains, of this toolkit's families
ROLES = {"human": "user", "gpt": "assistant"}


def row(record: Record, meta: dict, exporter: Exporter, paths: ImagePaths, where: str) -> dict:
    conv = []
    for k, (q, a) in enumerate(exporter.turns(record, where)):
        conv += [{"from": "human", "value": (IMAGE_TAG + "\n" if k == 0 else "") + q}, {"from": "gpt", "value": a}]
    out = {"image": paths.write(record.img), "conversations": conv}
    return out | ({META_KEY: meta} if meta else {})


def samples(path, rows: list[dict]) -> list[Sample]:
    """The conversations of a qwen-vl-finetune file, text stripped as its loader strips it."""
    out = []
    for i, r in enumerate(rows):
        where = f"{path}: item {i}"
        conv = r.get("conversations")
        if not isinstance(conv, list) or not all(isinstance(m, dict) for m in conv):
            raise RemoteGLMError(f"{where}: no 'conversations' list of {{from, value}} objects")
        if r.get("video") or r.get("videos"):
            raise RemoteGLMError(f"{where}: has a video; records hold one image")
        turns = []
        for m in conv:
            role = ROLES.get(m.get("from"))
            if role is None:
                raise RemoteGLMError(f"{where}: unknown role {m.get('from')!r} (Qwen's data has 'human' and 'gpt' turns)")
            text = m.get("value")
            if role == "user" and isinstance(text, str) and IMAGE_TAG not in text:
                text = text.strip()
            turns.append((role, text))
        pairs = pair_turns(turns, where)
        images = r.get("image", r.get("images"))
        images = [images] if isinstance(images, str) else images or []
        tags_seen = sum(t.count(IMAGE_TAG) for pair in pairs for t in pair)
        if len(images) != 1 or tags_seen != 1 or not isinstance(images[0], str):
            raise RemoteGLMError(f"{where}: {len(images)} image(s) and {tags_seen} {IMAGE_TAG} tag(s); a record has one "
                                 "image path (we train one image per sample)")
        pairs[0] = (take_image_tag(pairs[0][0], where, strip=True), pairs[0][1])
        out.append(Sample(where, images[0], pairs, meta_of(r, where)))
    return out
