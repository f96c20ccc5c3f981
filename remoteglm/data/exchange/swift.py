"""ms-swift's standard dataset format, both ways (modelscope/ms-swift
``docs/source_en/Customization/Custom-dataset.md``: "Multimodal" and "Grounding"):

    {"messages": [{"role": "user", "content": "<image>问题"}, {"role": "assistant", "content": "回答"}],
     "images": ["/abs/image.png"]}

- Earlier turns are earlier message pairs, their answers marked ``"loss": false`` (the same page:
  the field overrides ``--loss_scale``), so ms-swift learns the last answer only, as this toolkit does.
- Grounding for Qwen2.5-VL / Qwen3-VL uses ms-swift's own box step: the family's JSON layout with
  ``<bbox>`` / ``<ref-object>`` placeholders and ``objects: {"ref": [...], "bbox": [[x1, y1, x2, y2],
  ...], "bbox_type": "real"}`` in original pixels. ms-swift scales each box to the image it shows the
  model (``swift/template/base.py`` ``normalize_bbox``, after the Qwen resize: issue #3407; Qwen2.5-VL
  ``norm_bbox = 'none'``, Qwen3-VL ``'norm1000'``) and, with ``QWENVL_BBOX_FORMAT=new``, writes a box
  as ``str([x1, y1, x2, y2])`` and a ref as its text (``templates/qwen.py`` ``Qwen2VLTemplate``): the
  same text as the family's codec (``json.dumps`` of a list of ints). The page documents exactly
  this layout for the official cookbook format.
- Other families (GLM-4.1V, VisualGLM): ms-swift's default box text ``[(x1,y1),(x2,y2)]`` is not
  theirs, so their box text is written into the messages as the family's codec writes it ("use the
  data format of the grounding task corresponding to the model"); so is any record whose box label
  JSON would have to escape. ``--swift_boxes text`` asks for that form for the Qwen families too
  (Qwen2.5-VL's numbers are then fixed by MIN_PIXELS/MAX_PIXELS: leave ms-swift's generic
  ``--max_pixels`` pre-resize off, which objects survive: Command-line-parameters.md ``norm_bbox``).
- ``chat_template_kwargs: {"min_pixels", "max_pixels"}`` (ms-swift >= 4.3.0, per sample) carries the
  pixel settings the boxes were written for, where they were named.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from remoteglm.box_codec import JsonCodec, relative
from remoteglm.boxes import Box
from remoteglm.data.box_text import render_boxes
from remoteglm.data.exchange.common import (
    IMAGE_TAG, META_KEY, Exporter, ImagePaths, Sample, meta_of, pair_turns, take_image_tag,
)
from remoteglm.data.records import Record
from remoteglm.errors import RemoteGLMError

BBOX, REF = "<bbox>", "<ref-object>"
# template/base.py Template.special_tokens: split out of the text wherever they appear
PLACEHOLDERS = (IMAGE_TAG, "<video>", "<audio>", BBOX, REF, "<cot-process>", "<start-image>")
_JSON_BOX = re.compile(r'"bbox_2d": \[[^\[\]]*\]')
_JSON_LABEL = re.compile(r'"label": "(?:[^"\\]|\\.)*"')
_AFTER_KEY = re.compile(r'"bbox_2d"\s*:\s*$')


def objects_form(codec: Any) -> bool:
    """Whether ms-swift's placeholders write this family's box text (its JSON layout)."""
    return isinstance(codec, JsonCodec)


class _Placeholders:
    """A codec stand-in for ``render_boxes``: the family's JSON text with each box's numbers as
    BBOX and its label as REF, collecting ``objects`` in the order ms-swift fills them."""

    def __init__(self, codec: Any):
        self.codec, self.refs, self.bboxes = codec, [], []

    def encode(self, boxes: list[Box], image_size: tuple[int, int]) -> str:
        text = self.codec.encode(boxes, image_size)
        text, n = _JSON_BOX.subn(f'"bbox_2d": {BBOX}', text)
        text, m = _JSON_LABEL.subn(f'"label": "{REF}"', text)
        labels = [b.label for b in boxes if b.label is not None]
        if n != len(boxes) or m != len(labels) or any(json.dumps(s, ensure_ascii=False)[1:-1] != s for s in labels):
            raise ValueError("not placeholder-safe")
        self.refs += labels
        self.bboxes += [[round(float(v), 2) for v in b.xyxy] for b in boxes]
        return text


def row(record: Record, meta: dict, exporter: Exporter, paths: ImagePaths, where: str,
        objects: bool = True, pixels: dict | None = None) -> dict:
    turns = exporter.turns(record, where)  # checks sizes, boxes on the image, placeholders in the text
    found = None
    if objects and (record.prompt_boxes or record.label_boxes) and objects_form(exporter.codec):
        size = exporter.size(record.img, where)
        ph = _Placeholders(exporter.codec)
        try:
            last = (render_boxes(record.prompt, record.prompt_boxes, ph, size),
                    render_boxes(record.label, record.label_boxes, ph, size))
        except ValueError:  # a label JSON escapes: the family's text instead
            last = None
        if last is not None:
            turns[-1], found = last, {"ref": ph.refs, "bbox": ph.bboxes, "bbox_type": "real"}
    msgs = []
    for k, (q, a) in enumerate(turns):
        msgs.append({"role": "user", "content": (IMAGE_TAG if k == 0 else "") + q})
        msgs.append({"role": "assistant", "content": a} | ({"loss": False} if k < len(turns) - 1 else {}))
    out: dict = {"messages": msgs, "images": [paths.write(record.img)]}
    if found:
        out["objects"] = found
    if pixels:
        out["chat_template_kwargs"] = dict(pixels)
    return out | ({META_KEY: meta} if meta else {})


def samples(path, rows: list[dict], drop_system: bool = False, pixels: dict | None = None) -> list[Sample]:
    """The conversations of an ms-swift file (the standard ``messages`` format)."""
    out = []
    for i, r in enumerate(rows):
        where = f"{path}: item {i}"
        msgs = r.get("messages")
        if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
            raise RemoteGLMError(f"{where}: no 'messages' list of {{role, content}} objects (ms-swift's standard format)")
        turns = []
        for m in msgs:
            role = m.get("role")
            if role not in ("system", "user", "assistant"):
                raise RemoteGLMError(f"{where}: unknown role {role!r} (records hold user and assistant turns)")
            turns.append((role, m.get("content")))
        if any(t[0] == "system" for t in turns) and not drop_system:
            raise RemoteGLMError(f"{where}: has a system prompt, which records do not keep; pass --drop_system "
                                 "to leave it out")
        pairs = pair_turns([t for t in turns if t[0] != "system"], where)
        images = r.get("images")
        images = [images] if isinstance(images, str) else images or []
        for key in ("videos", "audios"):
            if r.get(key):
                raise RemoteGLMError(f"{where}: has {key}; records hold one image")
        tags_seen = sum(t.count(IMAGE_TAG) for pair in pairs for t in pair)
        if len(images) != 1 or tags_seen != 1 or not isinstance(images[0], str):
            raise RemoteGLMError(f"{where}: {len(images)} image(s) and {tags_seen} {IMAGE_TAG} tag(s); a record has one "
                                 "image path (we train one image per sample)")
        _check_pixels(r.get("chat_template_kwargs"), pixels, where)
        pairs[0] = (take_image_tag(pairs[0][0], where), pairs[0][1])
        sample = Sample(where, images[0], pairs, meta_of(r, where))
        if r.get("objects"):
            _with_objects(sample, r["objects"])
        out.append(sample)
    return out


def _check_pixels(kwargs: Any, pixels: dict | None, where: str) -> None:
    if not isinstance(kwargs, dict) or not pixels:
        return
    for k, v in pixels.items():
        if kwargs.get(k) not in (None, v):
            raise RemoteGLMError(f"{where}: chat_template_kwargs {k} is {kwargs[k]}, but the boxes are read at {v}: "
                                 f"pass --{k} {kwargs[k]}")


def _with_objects(s: Sample, objects: Any) -> None:
    """Fill ms-swift's placeholders as its template does, the boxes kept exact: a BBOX that is a
    ``bbox_2d`` value becomes an index there, any other BBOX a one-box JSON object of its own."""
    if not isinstance(objects, dict):
        raise RemoteGLMError(f"{s.where}: 'objects' must be an object {{ref, bbox, bbox_type}}")
    refs, boxes = objects.get("ref") or [], objects.get("bbox") or []
    kind = objects.get("bbox_type") or "real"
    if kind not in ("real", "norm1"):
        raise RemoteGLMError(f"{s.where}: bbox_type {kind!r}: ms-swift knows 'real' and 'norm1'")
    if not (isinstance(refs, list) and all(isinstance(x, str) for x in refs) and isinstance(boxes, list)):
        raise RemoteGLMError(f"{s.where}: objects 'ref' must be a list of strings and 'bbox' a list of boxes")
    for b in boxes:
        if not (isinstance(b, list) and len(b) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b)):
            raise RemoteGLMError(f"{s.where}: objects bbox {json.dumps(b)[:60]} is not [x1, y1, x2, y2] "
                                 "(points are not records' boxes)")
    counter = {"ref": 0, "bbox": 0}

    def fill(text: str) -> str:
        parts = re.split(f"({re.escape(BBOX)}|{re.escape(REF)})", text)
        out = []
        for p in parts:
            if p == REF:
                if counter["ref"] >= len(refs):
                    raise RemoteGLMError(f"{s.where}: more {REF} placeholders than objects refs")
                out.append(refs[counter["ref"]])
                counter["ref"] += 1
            elif p == BBOX:
                k = counter["bbox"]
                if k >= len(boxes):
                    raise RemoteGLMError(f"{s.where}: more {BBOX} placeholders than objects boxes")
                grid = f"[{k}, {k}, {k}, {k}]"
                out.append(grid if _AFTER_KEY.search("".join(out)) else '{"bbox_2d": ' + grid + "}")
                counter["bbox"] += 1
            else:
                out.append(p)
        return "".join(out)

    s.turns = [(fill(q), fill(a)) for q, a in s.turns]
    if counter["bbox"] != len(boxes) or counter["ref"] != len(refs):
        raise RemoteGLMError(f"{s.where}: {len(boxes)} objects boxes and {len(refs)} refs for {counter['bbox']} {BBOX} "
                             f"and {counter['ref']} {REF} placeholders")

    def reader(size: tuple[int, int]):
        w, h = size

        def read(nums: list, label: str | None) -> Box:
            k = int(nums[0])
            if len(set(nums)) != 1 or not 0 <= k < len(boxes) or k != nums[0]:
                raise RemoteGLMError(f"{s.where}: box text beside 'objects': write every box as {BBOX}")
            x1, y1, x2, y2 = boxes[k]
            if kind == "norm1":
                x1, y1, x2, y2 = x1 * w, y1 * h, x2 * w, y2 * h
            if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
                raise RemoteGLMError(f"{s.where}: objects box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] is not a box on the "
                                     f"{w} x {h} image")
            return Box(float(x1), float(y1), float(x2), float(y2), label)

        return read

    s.reader, s.codec = reader, JsonCodec(frame=relative(1))
