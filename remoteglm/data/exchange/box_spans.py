"""A family's box text in a conversation -> the records' BOX markers and boxes: the reverse of
``remoteglm.data.box_text.render_boxes``, for files made by other tools.

    text, boxes = to_markers('图中有2个：```json\\n[\\n\\t{"bbox_2d": [1, 2, 30, 40]}, ...]\\n```', codec, reader)
    # '图中有2个：<box><box>', (Box(...), Box(...))

Each run of box text in the codec's own syntax becomes one BOX marker per box it holds, so a run
``render_boxes`` wrote for consecutive markers comes back as those markers. The syntaxes:

- ``JsonCodec`` (Qwen2.5-VL, Qwen3-VL): a JSON list of ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}``
  objects, or one such object, optionally fenced in ```` ```json ... ``` ```` (QwenLM/Qwen3-VL
  cookbooks/2d_grounding.ipynb; qwen-vl-finetune/README.md "Grounding Example" writes a bare object);
- ``BracketCodec`` (GLM-4.1V, VisualGLM): ``open[[x1,y1,x2,y2],[...]]close``. The phrase in front of
  a bracket box stays text: GLM's form does not mark where a label starts, so a labelled box of a
  record comes back as its label's words before an unlabelled box (the model text is the same).

``reader(numbers, label)`` turns the four numbers of one box into a ``Box`` (or raises one line):
``grid_reader`` reads them in a codec's frame, checked to lie on the image.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable

from remoteglm.box_codec import BracketCodec, JsonCodec
from remoteglm.boxes import Box
from remoteglm.data.referring import BOX
from remoteglm.errors import RemoteGLMError

Reader = Callable[[list, "str | None"], Box]

_FENCE_OPEN = re.compile(r"```json[ \t]*\n?[ \t]*$")
_FENCE_CLOSE = re.compile(r"[ \t]*\n?[ \t]*```")
_NUMBER = re.compile(r"\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)\s*")
_BRACKET_LOOK = re.compile(r"\[\[\s*[-+]?\d")  # what bracket box text starts with


def grid_reader(codec: Any, image_size: tuple[int, int], where: str) -> Reader:
    """Numbers in ``codec``'s frame on an image of ``image_size`` -> the box in original pixels;
    one line for numbers off the frame (a box outside the image) or an empty box."""
    fw, fh = codec.frame(*image_size)

    def read(nums: list, label: str | None) -> Box:
        x1, y1, x2, y2 = nums
        if not (0 <= x1 <= fw and 0 <= x2 <= fw and 0 <= y1 <= fh and 0 <= y2 <= fh):
            raise RemoteGLMError(f"{where}: box {_show(nums)} lies outside the image: this family's numbers span "
                                 f"0..{fw} x 0..{fh} on the {image_size[0]} x {image_size[1]} image at these pixel settings "
                                 "(are --family / --min_pixels / --max_pixels the ones the file was made for?)")
        if not (x1 < x2 and y1 < y2):
            raise RemoteGLMError(f"{where}: box {_show(nums)} is empty or reversed (x1 < x2 and y1 < y2 are needed)")
        return codec.from_grid([float(v) for v in nums], image_size, label)

    return read


def to_markers(text: str, codec: Any, reader: Reader, where: str) -> tuple[str, tuple[Box, ...]]:
    """``text`` with each run of the codec's box text replaced by BOX markers, and the boxes."""
    if BOX in text:
        raise RemoteGLMError(f"{where}: the text already holds {BOX!r}, the records' box marker; "
                             "it cannot be told apart from a box")
    if isinstance(codec, JsonCodec):
        return _json_runs(text, reader, where)
    if isinstance(codec, BracketCodec):
        return _bracket_runs(text, codec.open, codec.close, reader, where)
    raise RemoteGLMError(f"{where}: no reader for the box text of {type(codec).__name__}")


def looks_like_boxes(text: str) -> bool:
    """True when ``text`` holds box text of either syntax (an import without --family refuses it)."""
    return "bbox_2d" in text or bool(_BRACKET_LOOK.search(text))


def _show(nums: list) -> str:
    return "[" + ", ".join(f"{v:g}" if isinstance(v, (int, float)) else repr(v) for v in nums) + "]"


def _numbers(value: Any, where: str) -> list:
    ok = (isinstance(value, list) and len(value) == 4
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
    if not ok:
        raise RemoteGLMError(f"{where}: bbox_2d {json.dumps(value, ensure_ascii=False)[:60]} is not four numbers "
                             "[x1, y1, x2, y2]")
    return value


def _box_objects(value: Any) -> list[dict] | None:
    """The box objects of a parsed JSON value, or None when it is not box text."""
    items = [value] if isinstance(value, dict) else value if isinstance(value, list) and value else None
    if items is None or not all(isinstance(o, dict) and "bbox_2d" in o for o in items):
        return None
    return items


def _json_runs(text: str, reader: Reader, where: str) -> tuple[str, tuple[Box, ...]]:
    dec = json.JSONDecoder()
    out, boxes, i, done = [], [], 0, 0
    while True:
        starts = [k for k in (text.find("[", i), text.find("{", i)) if k >= 0]
        if not starts:
            break
        j = min(starts)
        try:
            value, end = dec.raw_decode(text, j)
        except ValueError:
            i = j + 1
            continue
        objs = _box_objects(value)
        if objs is None:
            i = j + 1
            continue
        if isinstance(value, dict) and text[done:j].rstrip()[-1:] in ("[", ","):  # inside a list that did not parse
            raise RemoteGLMError(f"{where}: box text that is not a readable JSON box list: {text[:80]!r}")
        start, stop = j, end
        head, tail = _FENCE_OPEN.search(text, done, j), _FENCE_CLOSE.match(text, end)
        if head and tail:
            start, stop = head.start(), tail.end()
        for o in objs:
            extra = sorted(set(o) - {"bbox_2d", "label"})
            if extra:
                raise RemoteGLMError(f"{where}: a box object has {', '.join(map(repr, extra))} beside bbox_2d and label, "
                                     "which records cannot keep; remove those keys")
            label = o.get("label")
            if label is not None and not isinstance(label, str):
                raise RemoteGLMError(f"{where}: a box label is {json.dumps(label)[:40]}, not a string")
            boxes.append(reader(_numbers(o["bbox_2d"], where), label))
        out += [text[done:start], BOX * len(objs)]
        done = i = stop
    rest = "".join(out) + text[done:]
    if "bbox_2d" in rest:
        raise RemoteGLMError(f"{where}: box text that is not a readable JSON box list: {text[:80]!r}")
    return rest, tuple(boxes)


def _bracket_runs(text: str, open_: str, close: str, reader: Reader,
                  where: str) -> tuple[str, tuple[Box, ...]]:
    run = re.compile(re.escape(open_) + r"\[(\[[^\[\]]*\](?:\s*[,;]\s*\[[^\[\]]*\])*)\]" + re.escape(close))
    boxes: list[Box] = []

    def one(m: re.Match) -> str:
        lists = re.findall(r"\[([^\[\]]*)\]", m.group(1))
        for inner in lists:
            parts = inner.split(",")
            if len(parts) != 4 or not all(_NUMBER.fullmatch(p) for p in parts):
                raise RemoteGLMError(f"{where}: box [{inner}] is not four numbers [x1,y1,x2,y2]")
            boxes.append(reader([float(p) for p in parts], None))
        return BOX * len(lists)

    rest = run.sub(one, text)
    if (open_ and open_ in rest) or _BRACKET_LOOK.search(rest):
        raise RemoteGLMError(f"{where}: box text that is not in this family's form "
                             f"({open_}[[x1,y1,x2,y2]]{close}): {text[:80]!r}")
    return rest, tuple(boxes)
