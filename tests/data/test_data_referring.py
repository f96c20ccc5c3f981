"""Grounding tasks by rule: referring expressions unique in their image (category + position +
relative size) and refer / identify / grounded / detect / count tasks whose every answer follows
from the annotations."""

from __future__ import annotations

from pathlib import Path

from remoteglm.boxes import Box
from remoteglm.data.annotations import AnnotatedImage, Annotation
from remoteglm.data.dota import read_dota
from remoteglm.data.referring import BOX, expressions, grounding_tasks, position
from remoteglm.data.voc import read_voc

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "annotations"


def _img(*objects, size=(800, 800)):
    return AnnotatedImage("a.jpg", *size, objects=tuple(objects))


def _tank(x, y, side, difficult=False, cat="storagetank"):
    return Annotation(Box(x, y, x + side, y + side), cat, difficult=difficult)


def test_position_is_the_centre_on_a_three_by_three_grid():
    cells = {(x, y): position(_tank(x, y, 10), 900, 900) for x in (100, 400, 800) for y in (100, 400, 800)}
    assert cells == {(100, 100): "左上角", (400, 100): "上方", (800, 100): "右上角",
                     (100, 400): "左侧", (400, 400): "中间", (800, 400): "右侧",
                     (100, 800): "左下角", (400, 800): "下方", (800, 800): "右下角"}


def test_an_expression_takes_position_and_size_only_where_needed():
    big_tl, small_tl, big_br, small_br = _tank(10, 10, 100), _tank(150, 150, 20), _tank(650, 650, 100), _tank(600, 600, 20)
    plane, lone = Annotation(Box(300, 700, 340, 740), "airplane"), _tank(400, 380, 30, cat="windmill")
    got = expressions(_img(big_tl, small_tl, big_br, small_br, plane, lone))
    assert got == {0: "左上角的大型储油罐", 1: "左上角的小型储油罐", 2: "右下角的大型储油罐",
                   3: "右下角的小型储油罐", 4: "飞机", 5: "风车"}
    two = expressions(_img(_tank(10, 10, 100), _tank(650, 300, 20)))
    assert two == {0: "左上角的储油罐", 1: "右侧的储油罐"}  # the position alone tells them apart


def test_an_object_nothing_singles_out_gets_no_expression():
    # two alike tanks in the same cell; a difficult object still makes another ambiguous
    got = expressions(_img(_tank(10, 10, 50), _tank(100, 100, 50), _tank(700, 700, 50),
                           _tank(600, 10, 40, cat="ship"), _tank(700, 100, 40, cat="ship", difficult=True)))
    assert got == {2: "右下角的储油罐"}


def test_unnamed_categories_and_size_named_categories():
    cars = _img(Annotation(Box(0, 0, 100, 100), "large-vehicle"), Annotation(Box(700, 700, 710, 710), "large-vehicle"),
                Annotation(Box(300, 300, 320, 320), "Tree"))
    assert expressions(cars) == {0: "左上角的大型车辆", 1: "右下角的大型车辆"}  # no "大型大型车辆", no tree


def test_every_task_answer_follows_from_the_annotations():
    image = read_dota(FIX / "P0001.txt", (1000, 800))
    tasks = grounding_tasks(image)
    kinds = {t.kind for t in tasks}
    assert kinds == {"refer", "identify", "detect", "count"}  # small-vehicle is difficult: no grounded
    by_box = {o.box: o for o in image.objects}
    for t in tasks:
        assert t.question.count(BOX) == len(t.question_boxes) and t.answer.count(BOX) == len(t.answer_boxes)
        assert all(b in by_box for b in t.question_boxes + t.answer_boxes)
    refer = {t.question: t.answer_boxes for t in tasks if t.kind == "refer"}
    assert refer == {"请框出图中左上角的储油罐的位置。": (image.objects[0].box,),
                     "请框出图中右上角的储油罐的位置。": (image.objects[1].box,),
                     "请框出图中飞机的位置。": (image.objects[2].box,),
                     "请框出图中船舶的位置。": (image.objects[4].box,)}
    identify = {t.question_boxes: t.answer for t in tasks if t.kind == "identify"}
    assert identify[(image.objects[2].box,)] == "飞机。"
    count = {t.question: t.answer for t in tasks if t.kind == "count"}
    assert count["图中有几个储油罐？"] == f"2个：{BOX}{BOX}"
    assert "图中有几个小型车辆？" not in count  # its only object is difficult
    detect = [t for t in tasks if t.kind == "detect" and "储油罐" in t.question]
    assert [set(t.answer_boxes) for t in detect] == [{image.objects[0].box, image.objects[1].box}]


def test_a_grounded_description_counts_every_object_with_its_boxes():
    image = _img(_tank(650, 650, 100), _tank(10, 10, 100), Annotation(Box(300, 700, 340, 740), "airplane"))
    grounded = [t for t in grounding_tasks(image) if t.kind == "grounded"]
    assert len(grounded) == 1
    assert grounded[0].answer == f"图中有2个储油罐{BOX}{BOX}，1个飞机{BOX}。"
    assert tuple(b.xyxy for b in grounded[0].answer_boxes) == ((10, 10, 110, 110), (650, 650, 750, 750), (300, 700, 340, 740))
    assert grounded[0].to_dict("a.jpg")["label_boxes"][0] == [10, 10, 110, 110]


def test_the_real_tree_boxes_give_distinct_expressions():
    image = read_voc(FIX / "OSBS_029.xml")
    got = expressions(image, {"Tree": "树"}.get)
    assert got and len(set(got.values())) == len(got)
    assert all(v.endswith("树") for v in got.values())
    assert grounding_tasks(image) == []  # "Tree" is no category of the glossary


def test_records_carry_category_expression_and_the_rotated_box_where_the_source_has_one():
    """The neutral record form: pixel boxes plus the object's category, its referring text and (DOTA)
    its rotated box's 4 corners - so a consumer need not parse the Chinese prompt to get them."""
    image = read_dota(FIX / "P0001.txt", (1000, 1000), "P0001.png")
    recs = [t.to_dict("P0001.png") for t in grounding_tasks(image)]
    plane = next(o for o in image.objects if o.category == "plane")
    refer = [r for r in recs if r["kind"] in ("refer", "identify") and r.get("category") == "plane"]
    assert refer and all(r["polygon"] == list(plane.polygon) and r["expression"] in r["prompt"] + r["label"]
                         for r in refer), refer
    assert [430.5, 380.0, 470.0, 395.5, 460.0, 420.0, 420.5, 405.0] == refer[0]["polygon"]
    detect = [r for r in recs if r["kind"] in ("detect", "count")]
    assert detect and "plane" in {r["category"] for r in detect} <= {o.category for o in image.objects}
    voc = [t.to_dict("x.png") for t in grounding_tasks(read_voc(FIX / "SOAP_061.xml"), {"Alive": "活树", "Dead": "枯树"}.get)]
    assert voc and all("polygon" not in r for r in voc)  # VOC has no rotated box: no key, not a null
