"""The grounding records of each image or tile of a detection import
(:mod:`~remoteglm.data.grounding_import`): the rule-built tasks of
:func:`~remoteglm.data.referring.grounding_tasks`, with an object's refer/identify pair made from the
translation of its English description where there is one (:mod:`~remoteglm.data.grounding_translate`).

DIOR-RSVG's object-index splits take :func:`described_records` instead: the objects' own descriptions only.

The rule-built tasks need no translation, so :class:`RuleBuilt` makes them in a thread of its own
while the expressions are being translated: that step mostly waits on the endpoint, and the tasks
of a detection set's thousands of images take a second or two of CPU.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from .annotations import AnnotatedImage
from .build import image_path
from .grounding_translate import translated
from .referring import grounding_tasks, refer_tasks
from .tiles import tile


def units(images: list, size: int | None, overlap: int):
    """(source image, its annotation or a tile's, window or None) per image or tile with objects."""
    for im in images:
        a = im.annotated
        if size is None or (a.width <= size and a.height <= size):
            yield im, a, None
            continue
        for window, t in tile(a, size, overlap):
            if t.objects:
                yield im, t, window


class RuleBuilt:
    """``[((image, annotation, window), rule-built tasks)]`` of ``images`` cut as :func:`units` does,
    made in a daemon thread from the start (nothing to wait for at exit or on Ctrl-C); ``result()``
    waits for them, and raises what the thread raised."""

    def __init__(self, images: list, size: int | None, overlap: int, names):
        self._out: list = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._make, args=(images, size, overlap, names), daemon=True)
        self._thread.start()

    def _make(self, images, size, overlap, names) -> None:
        try:
            self._out = [((im, a, w), grounding_tasks(a, names)) for im, a, w in units(images, size, overlap)]
        except BaseException as e:  # handed to the caller by result()
            self._error = e

    def result(self) -> list:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._out


def _tasks(a: AnnotatedImage, rule: list, names, tr) -> list:
    """The rule-built tasks ``rule``, an object's refer/identify pair made with the translation of its
    English description where there is one (also for an object no rule-built expression singles out)."""
    zh = {o.box.xyxy: (o, e) for o in a.objects
          if o.text and not o.difficult and (e := translated(tr, o.text, names(o.category)))}
    out, done = [], set()
    for t in rule:
        key = (t.answer_boxes if t.kind == "refer" else t.question_boxes if t.kind == "identify" else ())
        if key and key[0].xyxy in zh:
            if key[0].xyxy not in done:
                done.add(key[0].xyxy)
                o, e = zh[key[0].xyxy]
                out.extend(refer_tasks(e, o.box, o.category, o.polygon))
            continue
        out.append(t)
    return out + [t for k, (o, e) in zh.items() if k not in done for t in refer_tasks(e, o.box, o.category, o.polygon)]


@functools.lru_cache(maxsize=64)
def _in(folder: Path, out_dir: Path) -> str:
    """``build.image_path`` of the files in ``folder`` less their names: once for the thousands there."""
    return image_path(folder, "_", out_dir)[:-1]


def unit_records(unit: tuple, rule: list, names, out_dir: Path, tr=None) -> tuple[list[dict], int]:
    """The records of one image or tile (``unit``, with its rule-built tasks ``rule``), and how many of
    its English descriptions they keep."""
    im, a, window = unit
    img = _in(out_dir / "tiles", out_dir) + a.image if window else _in(im.path.parent, out_dir) + im.path.name
    english = {o.box.xyxy: o.text for o in a.objects if o.text}
    out, kept = [], set()
    for t in _tasks(a, rule, names, tr):
        d = t.to_dict(img)
        box = (t.answer_boxes if t.kind == "refer" else t.question_boxes if t.kind == "identify" else ())
        if box and box[0].xyxy in english:
            d["expression_en"] = english[box[0].xyxy]
            kept.add(box[0].xyxy)
        if window:
            d["source"] = {"img": _in(im.path.parent, out_dir) + im.path.name, "window": list(window)}
        out.append(d)
    return out, len(kept)


def described_records(im, names, out_dir: Path, tr=None) -> list[dict]:
    """The refer/identify records of each object of ``im`` from its own description alone (DIOR-RSVG's
    object-index splits, :mod:`~remoteglm.data.rsvg_splits`): the checked translation where there is
    one, else the English quoted (as :mod:`~remoteglm.data.vrsbench` does); ``expression_en`` kept."""
    img = _in(im.path.parent, out_dir) + im.path.name
    out = []
    for o in im.annotated.objects:
        expr = translated(tr, o.text, names(o.category)) or f"“{o.text}”"
        for t in refer_tasks(expr, o.box, o.category, o.polygon):
            out.append(t.to_dict(img) | {"expression_en": o.text})
    return out
