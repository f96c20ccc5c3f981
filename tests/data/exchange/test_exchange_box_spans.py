"""A family's box text read back into BOX markers: the runs render_boxes writes, the forms other
tools write (a bare object, an unfenced list), and one line for text that is box text but not
readable, or off the image."""

from __future__ import annotations

import pytest

from remoteglm.boxes import Box
from remoteglm.data.box_text import render_boxes
from remoteglm.data.exchange.box_spans import grid_reader, to_markers
from remoteglm.errors import RemoteGLMError
from remoteglm.registry import family_named

SIZE = (640, 480)


def codec(name: str):
    return family_named(name).box_codec(min_pixels=3136, max_pixels=401408)


def read(text: str, name: str):
    c = codec(name)
    return to_markers(text, c, grid_reader(c, SIZE, "f: item 0"), "f: item 0")


@pytest.mark.parametrize("name", ["qwen2_5_vl", "qwen3_vl", "glm4v", "visualglm"])
def test_runs_of_markers_come_back_as_runs(name):
    boxes = [Box(10, 20, 100, 200), Box(300, 40, 600, 470), Box(5, 5, 60, 70)]
    text = "有2个<box><box>和1个<box>。"
    written = render_boxes(text, boxes, codec(name), SIZE)
    back, got = read(written, name)
    assert back == text
    assert len(got) == 3 and all(max(abs(u - v) for u, v in zip(a.xyxy, b.xyxy)) <= 1 for a, b in zip(boxes, got))


def test_qwen_forms_other_tools_write():
    # qwen-vl-finetune README's grounding answer: one bare object; an unfenced list; prose around it
    back, got = read('{"bbox_2d": [135, 114, 616, 472]}', "qwen3_vl")
    assert back == "<box>" and got[0].xyxy == pytest.approx((86.4, 54.72, 394.24, 226.56))
    back, got = read('它在 [{"bbox_2d": [0, 0, 500, 500], "label": "船"}, {"bbox_2d": [500, 500, 1000, 1000]}] 这里', "qwen3_vl")
    assert back == "它在 <box><box> 这里" and [b.label for b in got] == ["船", None]
    assert read("[1, 2] 和 {\"a\": 1} 不是框", "qwen3_vl") == ("[1, 2] 和 {\"a\": 1} 不是框", ())


@pytest.mark.parametrize("text, says", [
    ('```json\n[{"bbox_2d": [1, 2, 3]}]\n```', "is not four numbers"),
    ('```json\n[{"bbox_2d": [1, 2, 3, 4]}\n```', "not a readable JSON box list"),
    ('[{"bbox_2d": [1, 2, 3, 4], "score": 0.9}]', "'score' beside bbox_2d"),
    ('[{"bbox_2d": [10, 2, 3, 4]}]', "empty or reversed"),
    ('[{"bbox_2d": [0, 0, 900, 400]}]', "lies outside the image"),  # 640x480 -> 644x476 at these settings
    ("已有<box>标记", "already holds '<box>'"),
])
def test_unreadable_or_outside_box_text_is_one_line(text, says):
    with pytest.raises(RemoteGLMError, match=says) as e:
        read(text, "qwen2_5_vl")
    assert "\n" not in str(e.value) and str(e.value).startswith("f: item 0")


def test_bracket_text_in_another_form_is_one_line():
    with pytest.raises(RemoteGLMError, match="not in this family's form"):
        read("在[[10,20,30,40]]处", "glm4v")  # GLM-4.1V wraps its boxes in <|begin_of_box|>...<|end_of_box|>
    with pytest.raises(RemoteGLMError, match="outside the image"):
        read("在<|begin_of_box|>[[10,20,1300,40]]<|end_of_box|>处", "glm4v")
