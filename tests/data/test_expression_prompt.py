"""A referring expression's prompt names its category the way the check wants it named.

The glossary says ship = 船 and bridge = 桥 for captions, but the object categories of the
detection sets are 船舶 and 桥梁; the check of an expression (``translate.check_expression``) asks
for the category's name, so the prompt must give that name, not the glossary's shorter one. The
endpoint is the fake LLM server (tests/data/fake_llm.py), which, like an LLM, uses the
``english = 中文`` pairs of the prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from remoteglm.data.importers import main
from remoteglm.data.translate import build_messages


def test_the_category_name_wins_over_the_glossary_term_in_the_prompt():
    system = build_messages(["the gray ship on the left"], terms={"ship": "船舶"})[0]["content"]
    assert "ship = 船舶" in system and "ship = 船;" not in system and not system.rstrip().endswith("ship = 船")


def test_ship_and_bridge_expressions_are_translated_with_their_category_names(tmp_path: Path, capsys, fake_llm):
    ann, images = tmp_path / "Annotations", tmp_path / "JPEGImages"
    ann.mkdir(), images.mkdir()
    Image.new("RGB", (800, 800)).save(images / "00001.png")
    objects = [("ship", (40, 40, 200, 200), "the gray ship on the left"),
               ("bridge", (400, 400, 600, 600), "the long bridge in the middle")]
    body = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox><description>{d}</description></object>"
                   for n, b, d in objects)
    (ann / "00001.xml").write_text(f"<annotation><filename>00001.png</filename><size><width>800</width>"
                                   f"<height>800</height></size>{body}</annotation>")
    (tmp_path / "train.txt").write_text("00001\n")
    srv = fake_llm()
    rc = main(["detection", "--format", "voc", "--name", "rsvg", "--annotations", str(ann), "--images", str(images),
               "--out_dir", str(tmp_path / "out"), "--cache", str(tmp_path / "cache.sqlite"), "--model", "m",
               "--base_url", srv.base_url, "--no_progress", "--retries", "0"])
    err = capsys.readouterr().err
    assert rc == 0, err
    refer = {tuple(r["label_boxes"][0]): r["prompt"] for r in json.loads((tmp_path / "out" / "rsvg_train.json")
                                                                          .read_text(encoding="utf-8"))
             if r["kind"] == "refer"}
    assert "灰色船舶" in refer[(40, 40, 200, 200)] and "桥梁" in refer[(400, 400, 600, 600)]
    assert srv.requests == 1  # both accepted at the first answer


def test_a_ship_named_with_the_glossarys_word_is_named():
    """The glossary's 船 (ship) names an object of category ship (船舶), as 桥 names a 桥梁: a re-ask's
    note "glossary term missing: ship->船" then never contradicts "name it 船舶"."""
    from remoteglm.data.translate import check_expression

    assert check_expression("a ship in the middle", "中间的一艘船。", "ship", "船舶") == []
    assert check_expression("the long bridge on the left", "左边的长桥。", "bridge", "桥梁") == []
    assert any("name it 船舶" in p for p in check_expression("a ship in the middle", "中间的一个东西。", "ship", "船舶"))
