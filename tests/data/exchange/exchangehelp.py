"""Helpers of the exchange tests: tiny PNGs of several sizes (so Qwen2.5-VL's resize scales
them up, down and unevenly) and records of every kind the toolkit writes."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

SIZES = {"wide.png": (300, 200), "big.png": (1000, 800), "small.png": (37, 41), "strip.png": (640, 128)}
# Qwen2.5-VL at these settings scales big.png down ~1.4x, small.png up ~2.2x: the resize matters,
# and a grid step stays under 2 px, so a box comes back within 1 px
MIN_PIXELS, MAX_PIXELS = 3136, 401408


def records() -> list[dict]:
    """Captions, a conversation, VQA, classification and every grounding kind (labelled boxes too)."""
    return [
        {"img": "images/wide.png", "prompt": "描述这张图片。", "label": "一片绿色的农田。", "task": "caption"},
        {"img": "images/big.png", "prompt": "图中有几条河？", "label": "两条。",
         "history": [["描述这张图片。", "一片农田，旁边有河。"], ["河是什么颜色？", "蓝色。"]], "task": "conversation"},
        {"img": "images/strip.png", "prompt": "图中有飞机吗？", "label": "有。", "task": "presence"},
        {"img": "images/small.png", "prompt": "这张图片属于哪个场景类别？", "label": "机场", "task": "classify"},
        {"img": "images/big.png", "prompt": "请框出图中左侧的储油罐的位置。", "label": "<box>", "kind": "refer",
         "prompt_boxes": [], "label_boxes": [[100.5, 200, 300, 400.25]], "category": "storagetank",
         "expression": "左侧的储油罐", "polygon": [100.5, 200, 300, 200, 300, 400.25, 100.5, 400.25]},
        {"img": "images/wide.png", "prompt": "图中<box>处是什么？", "label": "储油罐。", "kind": "identify",
         "prompt_boxes": [[12, 30, 120, 150]], "label_boxes": []},
        {"img": "images/small.png", "prompt": "找出图中所有的飞机。", "label": "<box><box>", "kind": "detect",
         "prompt_boxes": [], "label_boxes": [[1, 2, 10, 12], [20, 21, 36, 40]], "category": "airplane"},
        {"img": "images/strip.png", "prompt": "描述这张图片，并框出其中的每个物体。",
         "label": "图中有2个飞机<box><box>，1个储油罐<box>。", "kind": "grounded", "prompt_boxes": [],
         "label_boxes": [[10, 10, 60, 50], [400, 20, 470, 90], [500, 30, 630, 120]]},
    ]


LABELLED = {"img": "images/big.png", "prompt": "图中有几个储油罐？", "label": "2个：<box><box>", "kind": "count",
            "prompt_boxes": [], "label_boxes": [[10, 20, 300, 400, "储油罐"], [500, 60, 990, 790, "大型储油罐"]]}


def make_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, (name, size) in enumerate(SIZES.items()):
        Image.new("RGB", size, (40 * k, 120, 200 - 30 * k)).save(folder / name)


def make_data(folder: Path) -> Path:
    """``folder`` with images/, records.json (every kind) and labelled.json (labelled boxes)."""
    make_images(folder / "images")
    (folder / "records.json").write_text(json.dumps(records(), ensure_ascii=False), encoding="utf-8")
    (folder / "labelled.json").write_text(json.dumps([LABELLED], ensure_ascii=False), encoding="utf-8")
    return folder
