"""A record's boxes written into its text: each run of consecutive BOX markers becomes one
``codec.encode(group, image_size)``, so every stage that turns a grounding record into model
text (both trainers' encoders) writes the family's own box form the same way.

    render_boxes("图中<box>处是什么？", [Box(10, 20, 30, 40)], codec, (400, 400))
    # VisualGLM: '图中[[025,050,075,100]]处是什么？'

The codec is duck-typed (``encode(boxes, (width, height)) -> str``): data/ stands below the
families that make one. ``image_size`` is the original image's, upright (the encoders read it).
"""

from __future__ import annotations

from typing import Any, Sequence

from remoteglm.boxes import Box
from remoteglm.data.referring import BOX
from remoteglm.errors import RemoteGLMError


def check_on_image(boxes: Sequence[Box], image_size: tuple[int, int], where: str) -> None:
    """One line naming ``where`` when a box reaches past the image's right or bottom edge
    (load_records has checked the rest of each box)."""
    w, h = image_size
    for b in boxes:
        if b.x2 > w or b.y2 > h:
            raise RemoteGLMError(f"{where}: box [{b.x1:g}, {b.y1:g}, {b.x2:g}, {b.y2:g}] reaches outside the "
                                 f"{w} x {h} image")


def render_boxes(text: str, boxes: Sequence[Box], codec: Any, image_size: tuple[int, int]) -> str:
    """``text`` with each run of consecutive BOX markers replaced by the codec's text for the
    boxes of that run (boxes taken in order; load_records checked that the counts match)."""
    parts = text.split(BOX)
    if len(parts) - 1 != len(boxes):
        raise RemoteGLMError(f"{len(boxes)} box(es) for {len(parts) - 1} {BOX} marker(s) in {text[:60]!r}")
    out, group = [parts[0]], []
    for k, part in enumerate(parts[1:]):
        group.append(boxes[k])
        if part or k == len(parts) - 2:  # text after this marker (or the end) closes the run
            out += [codec.encode(group, image_size), part]
            group = []
    return "".join(out)


def render_record(record: Any, codec: Any, image_size: tuple[int, int] | None) -> tuple[str, str]:
    """(prompt, label) of a record with its boxes in the codec's form; the texts unchanged when
    it has no box (``image_size`` may then be None: nothing is read)."""
    if not (record.prompt_boxes or record.label_boxes):
        return record.prompt, record.label
    if codec is None:
        raise RemoteGLMError(f"{record.img}: a record with boxes needs the family's box codec to be written")
    check_on_image((*record.prompt_boxes, *record.label_boxes), image_size, str(record.img))
    return (render_boxes(record.prompt, record.prompt_boxes, codec, image_size),
            render_boxes(record.label, record.label_boxes, codec, image_size))
