"""What a scene run asks each tile, and how the tiles' answers become map features: pure functions
(no model, no file), so the merging and the summary are tested on hand-made answers.

Tasks (``SceneTask``), each asked in the words its training records use:

- ``caption``  ``remoteglm.model.prompt.DEFAULT_PROMPT`` (描述这张图片。); one feature per tile,
  its footprint, with the answer text;
- ``classify`` ``remoteglm.data.instructions.classify_prompt(classes)``, which asks for the class
  name only; one feature per tile, its category the class the answer names (``answer_class``:
  the answer without punctuation and spaces is one of the classes; else None, the text stays in
  ``answer``). Evaluation's looser ``ClassParser`` (synonyms, names inside prose) is not used:
  serve/ cannot import eval/, which imports serve/;
- ``detect``   ``remoteglm.data.referring.detect_prompt(name)``; a feature per box;
- ``refer``    ``remoteglm.data.referring.refer_prompt(query)``; a feature per box (each tile
  answers where the object is in that tile, so a scene may get several).

Boxes come from a tile as the engine read them (``engine.boxes``: pixels of the tile image the
model was given, which may be reduced), are clipped to the tile, scaled to the window's size and
moved by its offset (``to_scene``). Across tile overlaps they are merged per category by
``remoteglm.scene.geo.nms``; a box that touches an inner edge of its tile (an object cut by the
tile) yields to one that does not, and is dropped when at least CUT_INSIDE of it lies inside
such a whole box (the cut part of an object another tile sees whole: their IoU can be low).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

from remoteglm.boxes import Box, intersection
from remoteglm.errors import RemoteGLMError

TASKS = ("caption", "classify", "detect", "refer")
BOX_TASKS = ("detect", "refer")
DEFAULT_CLASSES = "UCM"
NMS_IOU = 0.5
CUT_INSIDE = 0.7  # a cut box this much inside a whole box of its category is that object
_CJK = re.compile(r"[\u4e00-\u9fff]")
_PUNCT = re.compile(r"[\s。．.，,！!？?：:；;、“”\"'「」]")

Window = tuple[int, int, int, int]


@dataclass(frozen=True)
class SceneTask:
    """``kind`` (one of TASKS), the ``prompt`` asked of every tile, ``label`` (the detect
    category's or the refer query's name on its boxes), ``classes`` (classify)."""

    kind: str
    prompt: str
    label: str | None = None
    classes: tuple[str, ...] = field(default=())

    def settings(self) -> dict:
        return {"task": self.kind, "prompt": self.prompt, "label": self.label, "classes": list(self.classes)}


def category_name(text: str) -> str:
    """The Chinese name of a detection category: Chinese is taken as given; an English DIOR /
    DOTA category (``storagetank``, ``storage-tank``, ``ship``) through the glossary."""
    from remoteglm.data.glossary import DETECTION_CLASSES, object_name_zh

    text = (text or "").strip()
    if not text:
        raise RemoteGLMError("--category is empty: give the object's name, e.g. --category 储油罐 or --category storagetank")
    if _CJK.search(text):
        return text
    name = object_name_zh(text)
    if not name:
        known = ", ".join(DETECTION_CLASSES["DIOR"][:6])
        raise RemoteGLMError(f"--category {text!r} is not a DIOR or DOTA category the glossary knows "
                             f"(e.g. {known}); give its Chinese name instead, e.g. --category 储油罐")
    return name


def class_list(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """The classify task's classes: a dataset's (UCM, AID, NWPU-RESISC45, ...) or names separated
    by commas or 、."""
    from remoteglm.data.glossary import CLASSES, class_names_zh

    spec = DEFAULT_CLASSES if spec is None else spec
    if isinstance(spec, str):
        if spec in CLASSES:
            return tuple(class_names_zh(spec))
        names = [s.strip() for s in re.split(r"[,，、]", spec) if s.strip()]
    else:
        names = [str(s).strip() for s in spec if str(s).strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise RemoteGLMError(f"--classes {spec!r}: give a dataset ({', '.join(CLASSES)}) or two or more different "
                             "class names separated by commas, e.g. --classes 农田,森林,住宅区")
    return tuple(names)


def scene_task(kind: str, category: str | None = None, query: str | None = None,
               classes: str | Sequence[str] | None = None) -> SceneTask:
    """The task to ask every tile; one line for what is missing or does not belong."""
    from remoteglm.data.instructions import classify_prompt
    from remoteglm.data.referring import detect_prompt, refer_prompt
    from remoteglm.model.prompt import DEFAULT_PROMPT

    if kind not in TASKS:
        raise RemoteGLMError(f"--task {kind!r} is not one of {', '.join(TASKS)}")
    if category is not None and kind != "detect":
        raise RemoteGLMError(f"--category is for --task detect, not {kind}")
    if query is not None and kind != "refer":
        raise RemoteGLMError(f"--query is for --task refer, not {kind}")
    if classes is not None and kind != "classify":
        raise RemoteGLMError(f"--classes is for --task classify, not {kind}")
    if kind == "caption":
        return SceneTask("caption", DEFAULT_PROMPT)
    if kind == "classify":
        names = class_list(classes)
        return SceneTask("classify", classify_prompt(names), classes=names)
    if kind == "detect":
        if category is None:
            raise RemoteGLMError("--task detect needs --category NAME (Chinese, or an English DIOR/DOTA name "
                                 "such as storagetank)")
        name = category_name(category)
        return SceneTask("detect", detect_prompt(name), label=name)
    query = (query or "").strip()
    if not query:
        raise RemoteGLMError("--task refer needs --query TEXT, the object to find, e.g. --query 左侧的大型储油罐")
    return SceneTask("refer", refer_prompt(query), label=query)


# ---- tiles ----------------------------------------------------------------------------------------
def auto_tile(fit: Callable[[int, int], tuple[int, int]]) -> tuple[int, int]:
    """(tile side, overlap) from an engine's ``image_fit``: the largest square it keeps at full
    resolution (VisualGLM: its ViT's 224; the transformers families: the side of max_pixels; the
    processor rounds it to its patch multiple), and an eighth of it as overlap."""
    big = 1 << 15
    side = max(8, min(fit(big, big)))
    return side, side // 8


def read_size(window: Window, fit: Callable[[int, int], tuple[int, int]]) -> tuple[int, int] | None:
    """The size to read a window at: None (full resolution) unless the engine would reduce it,
    then the area it keeps, same shape (never enlarged)."""
    w, h = window[2] - window[0], window[3] - window[1]
    fw, fh = fit(w, h)
    if fw * fh >= w * h:
        return None
    s = (fw * fh / (w * h)) ** 0.5
    return max(1, round(w * s)), max(1, round(h * s))


def to_scene(boxes: Sequence[Box], window: Window, seen: tuple[int, int]) -> list[Box]:
    """Boxes in pixels of the tile image the model saw (``seen`` = its width, height) -> scene
    pixels of ``window``: clipped to the tile, scaled, moved; empty ones dropped."""
    x0, y0, x1, y1 = window
    sx, sy = (x1 - x0) / seen[0], (y1 - y0) / seen[1]
    out = []
    for b in boxes:
        c = b.clip(*seen)
        if c.area > 0:
            out.append(Box(x0 + c.x1 * sx, y0 + c.y1 * sy, x0 + c.x2 * sx, y0 + c.y2 * sy, b.label))
    return out


def _cut(box: Box, window: Window, size: tuple[int, int]) -> bool:
    """Whether ``box`` touches an edge of its tile that is not the scene's edge (half a pixel)."""
    x0, y0, x1, y1 = window
    return ((x0 > 0 and box.x1 <= x0 + 0.5) or (y0 > 0 and box.y1 <= y0 + 0.5)
            or (x1 < size[0] and box.x2 >= x1 - 0.5) or (y1 < size[1] and box.y2 >= y1 - 0.5))


def tile_features(records: Sequence[dict], task: SceneTask, size: tuple[int, int]) -> list[dict]:
    """The features of the answered tiles (journal records, ``status`` done) of a ``size``
    (width, height) scene: ``{"box": Box in scene pixels, "properties": {...}}``, in tile order;
    detect/refer boxes merged across overlaps (module doc)."""
    done = sorted((r for r in records if r.get("status") == "done"), key=lambda r: r["tile"])
    if task.kind not in BOX_TASKS:
        out = []
        for r in done:
            props = {"tile": r["tile"], "answer": r["answer"]}
            if task.kind == "classify":
                props["category"] = answer_class(r["answer"], task.classes)
            out.append({"box": Box(*r["window"]), "properties": props})
        return out
    from remoteglm.scene.geo import nms

    boxes, props, scores = [], [], []
    for r in done:
        for b in r.get("boxes") or ():
            box = Box(*b[:4], label=task.label)
            boxes.append(box)
            props.append({"category": task.label, "tile": r["tile"], "answer": r["answer"]})
            scores.append(0.0 if _cut(box, tuple(r["window"]), size) else 1.0)
    kept = nms(boxes, NMS_IOU, scores)
    whole = [j for j in kept if scores[j]]
    kept = [i for i in kept if scores[i] or not any(  # a cut box inside a whole one of another tile: the same object
        boxes[j].label == boxes[i].label and intersection(boxes[i], boxes[j]) >= CUT_INSIDE * boxes[i].area
        for j in whole)]
    return [{"box": boxes[i], "properties": props[i]} for i in kept]


def answer_class(answer: str, classes: Sequence[str]) -> str | None:
    """The class ``answer`` names when it is just a class name (punctuation and spaces aside)."""
    bare = _PUNCT.sub("", answer or "")
    return bare if bare in classes else None


def counts(features: Sequence[dict]) -> dict[str, int]:
    """Features per category (None: answers no class fits), most first."""
    c = Counter(f["properties"].get("category") for f in features)
    return dict(c.most_common())


def quicklook_boxes(features: Sequence[dict], size: tuple[int, int], shown: tuple[int, int]) -> list[Box]:
    """The features' boxes (scene pixels of a ``size`` scene) on a ``shown``-size picture of it."""
    sx, sy = shown[0] / size[0], shown[1] / size[1]
    return [Box(b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy, b.label)
            for b in (f["box"] for f in features)]


def summary(task: SceneTask, overview: str | None, found: dict[str, int], tiles: dict[str, int],
            pixel_coordinates: bool) -> str:
    """The short Chinese scene summary: the overview's caption, then counts built by rule from
    the tile answers (``found``: ``counts``), then what was asked (``tiles``: total, done,
    skipped, failed)."""
    lines = [f"场景概览：{overview.strip()}" if overview and overview.strip() else "场景概览：（模型没有给出描述）"]
    if task.kind == "detect":
        n = found.get(task.label, 0)
        lines.append(f"共检测到 {n} 个{task.label}。" if n else f"未检测到{task.label}。")
    elif task.kind == "refer":
        n = found.get(task.label, 0)
        lines.append(f"共找到 {n} 处“{task.label}”。" if n else f"未找到“{task.label}”。")
    elif task.kind == "classify":
        parts = [f"{k} {v} 个" for k, v in found.items() if k is not None]
        if found.get(None):
            parts.append(f"无法归类 {found[None]} 个")
        lines.append("图块分类：" + ("、".join(parts) if parts else "无") + "。")
    else:
        lines.append(f"已描述 {tiles['done']} 个图块，每个图块的描述见 scene.geojson。")
    lines.append(f"共 {tiles['total']} 个图块：回答 {tiles['done']} 个，跳过 {tiles['skipped']} 个（无数据或有效像元不足），"
                 f"失败 {tiles['failed']} 个。")
    if pixel_coordinates:
        lines.append("影像没有坐标系，要素坐标为像素坐标（x 向右，y 向下）。")
    return "\n".join(lines) + "\n"
