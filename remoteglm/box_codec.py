"""Box codecs: a family's text for boxes, both ways. A family picks one (``Family.box_codec``);
training, cli, web, API and evaluation use only ``encode`` / ``decode``, so a box survives
original pixels -> the family's text -> parsed -> original pixels (within half a step of the
family's grid).

    codec = family.box_codec(path, min_pixels=..., max_pixels=...)
    text = codec.encode([Box(10, 20, 300, 400, "储油罐")], (800, 600))
    boxes, failures = codec.decode(answer, (800, 600))

A codec is a coordinate frame (what the family's numbers measure, per image size) and a syntax:
``JsonCodec`` writes Qwen's ``[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]``, ``BracketCodec``
CogVLM's / GLM's ``[[x1,y1,x2,y2]]`` with the label in front. Decoding reads both syntaxes,
since models do not always answer in their own: it takes every box it finds in any prose, counts
each box it cannot read (malformed or missing numbers, an inverted box) as one failure, and never
raises. No box at all is ``([], 0)``: whether that is a miss is the task's to say.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

from remoteglm.boxes import Box

Size = tuple[int, int]  # (width, height), PIL's order
Frame = Callable[[int, int], Size]  # image (width, height) -> the extent of the family's numbers

_NUMBER = re.compile(r"\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)\s*")
# "bbox_2d": [ ... ]  (quotes optional; the numbers are checked afterwards)
_JSON_BOX = re.compile(r"""["']?bbox_2d["']?\s*:\s*(\[[^\[\]{}]*\]?|[^,{}\n]*)""")
_LABEL = re.compile(r""""label"\s*:\s*"((?:[^"\\]|\\.)*)\"""")
_BRACKETS = re.compile(r"\[\[([^\[\]]*(?:\]\s*[,;]\s*\[[^\[\]]*)*)\]\]")
# what ends the phrase in front of a bracket box (its label)
_LABEL_STOP = re.compile(r"[\n\r,，。；;:：、!！?？]|<\|[^|]*\|>|\]\]")


def relative(n: int) -> Frame:
    """The frame of coordinates relative to the image, 0..``n`` on both axes."""
    return lambda width, height: (n, n)


@dataclass(frozen=True)
class BoxCodec(ABC):
    """``frame(width, height)``: the extent the family's numbers span on an image of that size
    (its resized pixels, or a fixed 0..n grid). ``settings``: what the frame depends on (the
    resolution a run used), for the stages to record and compare."""

    frame: Frame
    settings: dict = field(default_factory=dict)
    digits: int = 0  # zero-pad numbers to this width (CogVLM writes 000..999)

    # ---- numbers: original pixels <-> the family's grid -----------------------------------------
    def to_grid(self, box: Box, size: Size) -> tuple[int, int, int, int]:
        (w, h), (fw, fh) = size, self.frame(*size)
        b = box.clip(w, h)
        return (round(b.x1 * fw / w), round(b.y1 * fh / h), round(b.x2 * fw / w), round(b.y2 * fh / h))

    def from_grid(self, nums: list[float], size: Size, label: str | None) -> Box | None:
        """The box these four numbers mean on the original image, or None (unreadable)."""
        (w, h), (fw, fh) = size, self.frame(*size)
        x1, y1, x2, y2 = nums
        if x2 < x1 or y2 < y1:
            return None
        return Box(x1 * w / fw, y1 * h / fh, x2 * w / fw, y2 * h / fh, label).clip(w, h)

    def _fmt(self, v: int) -> str:
        return f"{v:0{self.digits}d}" if self.digits else str(v)

    # ---- text -------------------------------------------------------------------------------
    @abstractmethod
    def encode(self, boxes: list[Box], image_size: Size) -> str:
        """The family's text for ``boxes`` (original pixels) on an image of ``image_size``."""

    def decode(self, text: str, image_size: Size) -> tuple[list[Box], int]:
        """(boxes in original pixels, in the order written; how many boxes could not be read)."""
        if not isinstance(text, str) or not text:
            return [], 0
        boxes: list[tuple[int, Box]] = []
        failures = 0
        # JSON objects first, then brackets in what is left (a JSON list of lists is brackets)
        rest = list(text)
        for m in _JSON_BOX.finditer(text):
            start, end = _enclosing_object(text, m.start(), m.end())
            label = _json_label(text[start:end])
            box = self._read(m.group(1), image_size, label)
            if box is None:
                failures += 1
            else:
                boxes.append((m.start(), box))
            rest[start:end] = " " * (end - start)
        rest_text = "".join(rest)
        for m in _BRACKETS.finditer(rest_text):
            label = _phrase_before(rest_text, m.start())
            for part in re.split(r"\]\s*[,;]\s*\[|;", m.group(1)):
                box = self._read(part, image_size, label)
                if box is None:
                    failures += 1
                else:
                    boxes.append((m.start(), box))
        boxes.sort(key=lambda t: t[0])
        return [b for _, b in boxes], failures

    def _read(self, fragment: str, size: Size, label: str | None) -> Box | None:
        inner = fragment.strip()
        if inner.startswith("["):
            if not inner.endswith("]"):
                return None  # cut off mid-list
            inner = inner[1:-1]
        parts = inner.split(",")
        if len(parts) != 4 or not all(_NUMBER.fullmatch(p) for p in parts):
            return None
        nums = [float(p) for p in parts]
        if not all(math.isfinite(v) for v in nums):
            return None
        return self.from_grid(nums, size, label)


@dataclass(frozen=True)
class JsonCodec(BoxCodec):
    """Qwen's grounding answer: a fenced JSON list of ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}``."""

    def encode(self, boxes: list[Box], image_size: Size) -> str:
        rows = []
        for b in boxes:
            obj: dict = {"bbox_2d": list(self.to_grid(b, image_size))}
            if b.label is not None:
                obj["label"] = b.label
            rows.append("\t" + json.dumps(obj, ensure_ascii=False))
        return "```json\n[\n" + ",\n".join(rows) + "\n]\n```"


@dataclass(frozen=True)
class BracketCodec(BoxCodec):
    """``label[[x1,y1,x2,y2]]``, optionally wrapped in the family's box tokens (``open``/``close``);
    unlabelled boxes in a row are written as one list ``[[...],[...]]``, labelled ones one per line."""

    open: str = ""
    close: str = ""

    def encode(self, boxes: list[Box], image_size: Size) -> str:
        def one(group: list[Box]) -> str:
            lists = ",".join("[" + ",".join(self._fmt(v) for v in self.to_grid(b, image_size)) + "]" for b in group)
            return f"{group[0].label or ''}{self.open}[{lists}]{self.close}"

        groups: list[list[Box]] = []
        for b in boxes:
            if groups and b.label is None and groups[-1][-1].label is None:
                groups[-1].append(b)
            else:
                groups.append([b])
        return "\n".join(one(g) for g in groups)


def _enclosing_object(text: str, start: int, end: int) -> tuple[int, int]:
    """The span of the ``{...}`` around a match (the match itself when it has no braces)."""
    lo = text.rfind("{", 0, start)
    if lo < 0 or "}" in text[lo:start]:
        lo = start
    hi = text.find("}", end)
    if hi < 0 or "{" in text[end:hi]:
        return lo, end
    return lo, hi + 1


def _json_label(obj_text: str) -> str | None:
    m = _LABEL.search(obj_text)
    if not m:
        return None
    try:
        return json.loads(f'"{m.group(1)}"')
    except json.JSONDecodeError:
        return m.group(1)


def _phrase_before(text: str, pos: int) -> str | None:
    """The words right before a bracket box, back to the last punctuation, token or box."""
    head = text[:pos]
    stops = list(_LABEL_STOP.finditer(head))
    # a box token right before the box opens it: look in front of it
    if stops and stops[-1].end() == len(head.rstrip()) and stops[-1].group().startswith("<|"):
        head = head[:stops[-1].start()]
        stops = list(_LABEL_STOP.finditer(head))
    phrase = head[stops[-1].end():] if stops else head
    return phrase.strip() or None
