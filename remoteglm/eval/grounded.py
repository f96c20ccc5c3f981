"""Grounding records of a fine-tune JSON, evaluated: ``kind`` refer / identify / grounded / detect /
count, with ``prompt_boxes`` / ``label_boxes`` in pixels of the original image and the marker
``<box>`` (remoteglm.data.referring.BOX) in the texts where each box goes, in order; a run of
consecutive markers is one group, written together by the family's codec.

The prompt a model is asked is rendered with the evaluated family's codec; its answer is decoded
with the same codec back to original pixels. Scores (remoteglm.eval.grounding): refer -> Acc@0.5,
Acc@0.7, mean IoU, parse failures (the first box of the answer; none is a parse failure); detect
and count -> precision / recall at IoU 0.5; identify and grounded -> the caption scorers on the
texts with the boxes taken out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from remoteglm.boxes import Box
from remoteglm.data.referring import BOX
from remoteglm.errors import RemoteGLMError
from remoteglm.eval.grounding import score_detection, score_referring
from remoteglm.eval.metrics import LEVELS, score_captions

KINDS = ("refer", "identify", "grounded", "detect", "count")
BOX_KINDS = ("detect", "count")  # answered by a set of boxes
TEXT_KINDS = ("identify", "grounded")  # answered by text (boxes, if any, taken out before scoring)
# every text form a codec writes or reads (remoteglm/box_codec.py): fenced JSON, {"bbox_2d": ...}
# objects, box tokens, [[...]] lists; taken out so the words alone are scored
_BOX_TEXT = re.compile(r"```(?:json)?.*?```|\{[^{}]*bbox_2d[^{}]*\}|<\|(?:begin|end)_of_box\|>|\[\[[^\[\]]*(?:\][^\[\]]*\[[^\[\]]*)*\]\]",
                       re.S)


@dataclass
class GroundingItem:
    gid: str                 # "g<index in the file>"
    key: str                 # the image's key (EvalImage.key)
    path: Path
    kind: str
    prompt: str              # with BOX markers
    label: str               # with BOX markers
    prompt_boxes: list[Box]
    label_boxes: list[Box]


def read_item(path, i: int, rec: dict, key: str, img_path: Path) -> GroundingItem:
    """One grounding record, checked (one line per problem)."""
    kind = rec["kind"]
    prompt, label = str(rec["prompt"]), str(rec["label"])
    from remoteglm.data.records import read_boxes  # the one reading of a record's boxes (training's too)

    item = GroundingItem(f"g{i}", key, img_path, kind, prompt, label, list(read_boxes(path, i, rec, "prompt_boxes", prompt)),
                         list(read_boxes(path, i, rec, "label_boxes", label)))
    if kind == "refer" and len(item.label_boxes) != 1:
        raise RemoteGLMError(f"{path}: item {i} (refer) needs exactly one label box, has {len(item.label_boxes)}")
    if kind in TEXT_KINDS and not strip_boxes(label).strip():
        raise RemoteGLMError(f"{path}: item {i} ({kind}) has no words in its label to score")
    return item


def strip_boxes(text: str) -> str:
    """The words of an answer or label without its boxes (markers or any codec's text)."""
    return re.sub(r"\s+", " ", _BOX_TEXT.sub(" ", text.replace(BOX, " "))).strip()


def prompts(items: list[GroundingItem], codec, sizes: dict[Path, tuple[int, int]]) -> list[str]:
    from remoteglm.data.box_text import render_boxes  # the training's own rendering: the same text at test time

    return [render_boxes(it.prompt, it.prompt_boxes, codec, sizes[it.path]) for it in items]


def score_grounding(items: list[GroundingItem], answers: list[str], codec,
                    sizes: dict[Path, tuple[int, int]]) -> tuple[dict, list[dict]]:
    """``({"refer": score_referring, "detect"/"count": score_detection, "identify"/"grounded":
    {level: caption scores}}, per item {"answer", "boxes", "failures"[, "iou"]})``; kinds absent
    from the items are absent."""
    per, decoded = [], []
    for it, a in zip(items, answers):
        boxes, failures = codec.decode(a, sizes[it.path])
        decoded.append((boxes, failures))
        per.append({"answer": a, "boxes": [list(b.xyxy) for b in boxes], "failures": failures})
    out: dict = {}
    refer = [n for n, it in enumerate(items) if it.kind == "refer"]
    if refer:
        r = score_referring([items[n].label_boxes[0] for n in refer],
                            [decoded[n][0][0] if decoded[n][0] else None for n in refer])
        for n, v in zip(refer, r.pop("ious")):
            per[n]["iou"] = v
        out["refer"] = r
    for kind in BOX_KINDS:
        idx = [n for n, it in enumerate(items) if it.kind == kind]
        if idx:  # an answer with unreadable boxes and no readable one predicts nothing: a parse failure
            d = score_detection([items[n].label_boxes for n in idx],
                                [None if not decoded[n][0] and decoded[n][1] else decoded[n][0] for n in idx])
            d.pop("per_image")
            out[kind] = d
    for kind in TEXT_KINDS:
        idx = [n for n, it in enumerate(items) if it.kind == kind]
        if idx:
            hyps = {items[n].gid: strip_boxes(answers[n]) for n in idx}
            refs = {items[n].gid: [strip_boxes(items[n].label)] for n in idx}
            out[kind] = {level: score_captions(hyps, refs, level)[0] for level in LEVELS}
    return out, per
