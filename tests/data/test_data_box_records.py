"""Grounding records (issue 20): fine-tune records with prompt_boxes / label_boxes read by
load_records (one line for a malformed list or a box count that does not match the text's
markers), and the marker runs of a text written by a codec (remoteglm.data.box_text)."""

from __future__ import annotations

import json

import pytest

from remoteglm.boxes import Box
from remoteglm.data.box_text import render_boxes, render_record
from remoteglm.data.records import load_records
from remoteglm.errors import RemoteGLMError


class ListCodec:
    """A stand-in codec: each group as {x1,y1,x2,y2|...} with the image size, so a test sees
    which boxes went into which group and on which size."""

    def encode(self, boxes, size):
        return "{" + "|".join(",".join(f"{v:g}" for v in (b.x1, b.y1, b.x2, b.y2)) for b in boxes) + f"@{size[0]}x{size[1]}}}"


def _write(tmp_path, items):
    f = tmp_path / "g.json"
    f.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return f


def test_grounding_records_carry_their_boxes_and_kind(tmp_path):
    f = _write(tmp_path, [
        {"img": "a.png", "prompt": "图中<box>处是什么？", "label": "储油罐。", "kind": "identify",
         "prompt_boxes": [[10, 20, 30.5, 40]]},
        {"img": "a.png", "prompt": "图中有几个储油罐？", "label": "2个：<box><box>", "kind": "count",
         "label_boxes": [[1, 2, 3, 4, "储油罐"], [5, 6, 7, 8]]},
        {"img": "a.png", "prompt": "描述这张图片。", "label": "一个小镇。"},
    ])
    ident, count, plain = load_records(f)
    assert ident.prompt_boxes == (Box(10, 20, 30.5, 40),) and ident.label_boxes == () and ident.kind == "identify"
    assert count.label_boxes == (Box(1, 2, 3, 4, "储油罐"), Box(5, 6, 7, 8)) and count.kind == "count"
    assert plain.prompt_boxes == plain.label_boxes == () and plain.kind is None


@pytest.mark.parametrize("item, needle", [
    ({"prompt": "<box>", "prompt_boxes": {"x": 1}}, "'prompt_boxes' must be a list"),
    ({"prompt": "<box>", "prompt_boxes": [[1, 2, 3]]}, "'prompt_boxes' box 0 is [1, 2, 3]"),
    ({"prompt": "<box>", "prompt_boxes": [[1, "2", 3, 4]]}, "'prompt_boxes' box 0"),
    ({"prompt": "<box>", "prompt_boxes": [[1, 2, 3, True]]}, "'prompt_boxes' box 0"),
    ({"prompt": "<box>", "prompt_boxes": [[1, 2, 3, 4, 5]]}, "'prompt_boxes' box 0"),
    ({"label": "<box>", "label_boxes": [[30, 2, 10, 4]]}, "'label_boxes' box 0 [30, 2, 10, 4] is not a box"),
    ({"label": "<box>", "label_boxes": [[-1, 2, 10, 4]]}, "'label_boxes' box 0 [-1, 2, 10, 4] is not a box"),
    ({"label": "<box><box>", "label_boxes": [[1, 2, 10, 4]]}, "has 1 box(es) but its label has 2 <box> marker(s)"),
    ({"label": "两个", "label_boxes": [[1, 2, 10, 4]]}, "has 1 box(es) but its label has 0 <box> marker(s)"),
    ({"prompt": "图中<box>处是什么？"}, "has 0 box(es) but its prompt has 1 <box> marker(s)"),
    ({"kind": 3}, "'kind' must be a string"),
])
def test_a_malformed_grounding_record_is_one_line_naming_file_and_item(tmp_path, item, needle):
    good = {"img": "a.png", "prompt": "描述。", "label": "一个小镇。"}
    f = _write(tmp_path, [good, {**good, **item}])
    with pytest.raises(RemoteGLMError) as e:
        load_records(f)
    msg = str(e.value)
    assert needle in msg and str(f) in msg and "item 1" in msg and "\n" not in msg


def test_each_run_of_markers_is_one_group_written_by_the_codec():
    b = [Box(1, 2, 3, 4), Box(5, 6, 7, 8), Box(9, 10, 11, 12), Box(13, 14, 15, 16)]
    got = render_boxes("<box>有<box><box>和<box>", b, ListCodec(), (40, 30))
    assert got == "{1,2,3,4@40x30}有{5,6,7,8|9,10,11,12@40x30}和{13,14,15,16@40x30}"
    assert render_boxes("2个：<box><box>", b[:2], ListCodec(), (40, 30)) == "2个：{1,2,3,4|5,6,7,8@40x30}"
    assert render_boxes("没有框。", [], ListCodec(), (40, 30)) == "没有框。"


def test_a_box_past_the_image_edge_is_one_line_naming_the_image(tmp_path):
    f = _write(tmp_path, [{"img": "a.png", "prompt": "框出。", "label": "<box>", "label_boxes": [[10, 10, 50, 41]]}])
    rec = load_records(f)[0]
    assert render_record(rec, ListCodec(), (50, 41)) == ("框出。", "{10,10,50,41@50x41}")  # the edge itself is on it
    with pytest.raises(RemoteGLMError, match=r"a\.png: box \[10, 10, 50, 41\] reaches outside the 50 x 40 image"):
        render_record(rec, ListCodec(), (50, 40))
    with pytest.raises(RemoteGLMError, match="needs the family's box codec"):
        render_record(rec, None, (50, 41))
