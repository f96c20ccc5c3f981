"""Grounding tasks built by rule from an image's annotations, in Chinese: every question and answer
follows from the boxes and categories alone (the LLM may rephrase them later, never invent them).

Referring expressions: the category's Chinese name, made unique in the image by its position
(a 3 x 3 grid: 左上角 ... 右下角) and its size among the objects of its category (大型 / 小型),
the shortest form that no other object of the category also fits ("储油罐", "左侧的储油罐",
"大型储油罐", "左上角的大型储油罐"); an object no such form singles out gets none.

Task kinds (``Task.kind``): ``refer`` (expression -> box), ``identify`` (box -> the expression),
``grounded`` (the image's objects counted, a box per object), ``detect`` (all objects of a category
-> boxes), ``count`` (how many, answered with the boxes). Boxes stay model-neutral: the texts hold
BOX where a box goes, and ``question_boxes`` / ``answer_boxes`` hold them in order; a family's box
codec writes them in its own form. A category with a difficult (uncertain) object is never counted
or listed, and an object whose category has no Chinese name is never named.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

from remoteglm.boxes import Box
from remoteglm.data.annotations import AnnotatedImage, Annotation
from remoteglm.data.glossary import object_name_zh

BOX = "<box>"
GRID = (("左上角", "上方", "右上角"), ("左侧", "中间", "右侧"), ("左下角", "下方", "右下角"))
SIZE_RATIO = 1.5  # area vs. the median of its category: this much larger is 大型, smaller 小型
MAX_ANSWER_BOXES = 50  # a longer answer (hundreds of cars) is no useful training text
_SIZE_WORDS = ("大型", "小型")

Names = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Task:
    kind: str
    question: str
    answer: str
    question_boxes: tuple[Box, ...] = ()
    answer_boxes: tuple[Box, ...] = ()
    category: str | None = None  # the source's category of the object(s) the task is about
    expression: str | None = None  # the referring text that singles the object out (refer, identify)
    polygon: tuple[float, ...] | None = None  # the object's rotated box (x1, y1, ..., x4, y4) where the source has one

    def to_dict(self, image: str) -> dict:
        """The fine-tune record of this task on ``image`` (``remoteglm.data.records``: prompt and
        label with BOX markers, boxes as [x1, y1, x2, y2] or [x1, y1, x2, y2, "label"] pixels), with
        ``category``, ``expression`` and ``polygon`` (original pixels) where the task has them."""
        d = {"img": image, "prompt": self.question, "label": self.answer, "kind": self.kind,
             "prompt_boxes": [_box_list(b) for b in self.question_boxes],
             "label_boxes": [_box_list(b) for b in self.answer_boxes]}
        extra = {"category": self.category, "expression": self.expression,
                 "polygon": list(self.polygon) if self.polygon else None}
        return d | {k: v for k, v in extra.items() if v is not None}


def _box_list(b: Box) -> list:
    return [*b.xyxy] + ([b.label] if b.label is not None else [])


def position(obj: Annotation, width: int, height: int) -> str:
    """Where the object's centre lies on a 3 x 3 grid of the image."""
    cx, cy = obj.centre
    return GRID[min(int(3 * cy / height), 2)][min(int(3 * cx / width), 2)]


def size_word(obj: Annotation, median: float | None) -> str:
    """大型 / 小型 against ``median``, the median area of its category in the image (None when it
    has no peer), "" when it is neither."""
    if median is None:
        return ""
    if obj.area >= SIZE_RATIO * median:
        return "大型"
    if obj.area * SIZE_RATIO <= median:
        return "小型"
    return ""


def _phrase(name: str, where: str, size: str) -> str:
    return f"{where}的{size}{name}" if where else f"{size}{name}"


def expressions(image: AnnotatedImage, names: Names = object_name_zh) -> dict[int, str]:
    """Object index -> its unique referring expression, for the objects that have one (not
    difficult, named, and singled out by position and size within their category)."""
    out = {}
    for cat in dict.fromkeys(o.category for o in image.objects):
        name = names(cat)
        if not name:
            continue
        members = [(i, o) for i, o in enumerate(image.objects) if o.category == cat]
        peers = [o for _, o in members]
        sized = not name.startswith(_SIZE_WORDS)  # "大型车辆" takes no second size word
        median = statistics.median(p.area for p in peers) if len(peers) > 1 else None  # once per category
        attrs = {i: (position(o, image.width, image.height), size_word(o, median) if sized else "")
                 for i, o in members}
        for i, o in members:
            if o.difficult:
                continue
            where, size = attrs[i]
            for use_where, use_size in ((False, False), (True, False), (False, True), (True, True)):
                if use_size and not size:
                    continue
                fits = [j for j, (w, s) in attrs.items()
                        if (not use_where or w == where) and (not use_size or s == size)]
                if fits == [i]:
                    out[i] = _phrase(name, where if use_where else "", size if use_size else "")
                    break
    return out


def _reading_order(objects: list[Annotation]) -> list[Annotation]:
    return sorted(objects, key=lambda o: (o.box.y1, o.box.x1))


def _countable(image: AnnotatedImage, names: Names) -> dict[str, list[Annotation]]:
    """Category -> its objects in reading order, for the named categories with no difficult object
    and at most MAX_ANSWER_BOXES objects."""
    groups: dict[str, list[Annotation]] = {}
    for o in image.objects:
        groups.setdefault(o.category, []).append(o)
    return {cat: _reading_order(objs) for cat, objs in groups.items()
            if names(cat) and not any(o.difficult for o in objs) and len(objs) <= MAX_ANSWER_BOXES}


def refer_prompt(expr: str) -> str:
    """The refer question: where is the object ``expr`` singles out (training records and the
    scene job ask it in these words)."""
    return f"请框出图中{expr}的位置。"


def detect_prompt(name: str) -> str:
    """The detect question: every object called ``name`` (a category's Chinese name)."""
    return f"找出图中所有的{name}。"


def refer_tasks(expr: str, box: Box, category: str | None = None,
                polygon: tuple[float, ...] | None = None) -> tuple[Task, Task]:
    """The refer and identify tasks of the object at ``box`` (of ``category``, rotated box
    ``polygon``) that ``expr`` singles out."""
    about = dict(category=category, expression=expr, polygon=polygon)
    return (Task("refer", refer_prompt(expr), BOX, answer_boxes=(box,), **about),
            Task("identify", f"图中{BOX}处是什么？", f"{expr}。", question_boxes=(box,), **about))


def grounding_tasks(image: AnnotatedImage, names: Names = object_name_zh) -> list[Task]:
    """Every task the annotations of ``image`` answer by rule (see the module docstring)."""
    tasks = []
    for i, expr in expressions(image, names).items():
        obj = image.objects[i]
        tasks.extend(refer_tasks(expr, obj.box, obj.category, obj.polygon))
    groups = _countable(image, names)
    for cat, objs in groups.items():
        name, boxes = names(cat), tuple(o.box for o in objs)
        tasks.append(Task("detect", detect_prompt(name), BOX * len(boxes), answer_boxes=boxes, category=cat))
        tasks.append(Task("count", f"图中有几个{name}？", f"{len(boxes)}个：{BOX * len(boxes)}", answer_boxes=boxes,
                          category=cat))
    every = len(groups) == len({o.category for o in image.objects})  # else the scene is told in part
    if groups and every and sum(map(len, groups.values())) <= MAX_ANSWER_BOXES:
        parts = [f"{len(objs)}个{names(cat)}{BOX * len(objs)}" for cat, objs in groups.items()]
        boxes = tuple(o.box for objs in groups.values() for o in objs)
        tasks.append(Task("grounded", "描述这张图片，并框出其中的每个物体。", f"图中有{'，'.join(parts)}。",
                          answer_boxes=boxes))
    return tasks
