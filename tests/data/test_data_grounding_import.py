"""``python -m remoteglm.data.importers detection``: detection / referring sets -> grounding records.

The VOC set is the real NEON tree boxes (tests/fixtures/annotations/OSBS_029.xml, SOAP_061.xml) on
their real images; the DOTA set is the hand-written P0001.txt (1000 x 800) on an image drawn here,
cut into tiles, plus a small hand-written image that is not cut; the COCO set is coco_small.json.
Expected boxes are read from the files here with ElementTree / by hand, not through remoteglm.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from remoteglm.data.importers import main
from remoteglm.data.translate import check_expression
from scripted_server import ScriptedServer

ROOT = Path(__file__).resolve().parents[2]
ANN = ROOT / "tests" / "fixtures" / "annotations"
IMAGES = ROOT / "tests" / "fixtures" / "images"
TREE_NAMES = {"Tree": "树", "Alive": "活树", "Dead": "枯树"}


def run(capsys, *args) -> tuple[int, str]:
    rc = main(["detection", *map(str, args)])
    return rc, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def voc_boxes(xml: Path, name: str) -> list[list[float]]:
    return sorted([float(o.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax")]
                  for o in ET.parse(xml).getroot().iter("object") if o.find("name").text == name)


def voc_set(tmp_path: Path) -> tuple[list, Path]:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("OSBS_029\n")
    (lists / "test.txt").write_text("# the held-out image\nSOAP_061\n")
    names = tmp_path / "names.json"
    names.write_text(json.dumps(TREE_NAMES, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "data" / "trees_grounding"
    return ["--format", "voc", "--name", "trees", "--annotations", ANN, "--images", IMAGES, "--split_files", lists,
            "--names", names, "--out_dir", out], out


def test_the_real_tree_boxes_import_with_their_splits_and_a_rerun_writes_nothing(tmp_path, capsys):
    args, out = voc_set(tmp_path)
    rc, err = run(capsys, *args)
    assert rc == 0, err
    train, test = load(out / "trees_train.json"), load(out / "trees_test.json")
    assert not (out / "trees_val.json").exists()  # no val.txt: no val file
    assert {r["img"] for r in train} == {os.path.relpath(IMAGES / "OSBS_029.tif", out)}
    assert {r["img"] for r in test} == {os.path.relpath(IMAGES / "SOAP_061.png", out)}
    # 61 trees are more than one answer may list: only refer/identify; SOAP's 9 alive + 28 dead are listed
    assert {r["kind"] for r in train} == {"refer", "identify"}
    assert {r["kind"] for r in test} >= {"detect", "count", "grounded"}
    dead = [r for r in test if r["kind"] == "count" and "枯树" in r["prompt"]]
    assert len(dead) == 1 and dead[0]["label"].startswith("28个")
    assert sorted(b[:4] for b in dead[0]["label_boxes"]) == voc_boxes(ANN / "SOAP_061.xml", "Dead")
    for r in train + test:
        assert r["prompt"].count("<box>") == len(r["prompt_boxes"]) and r["label"].count("<box>") == len(r["label_boxes"])
    assert "train: 1 images, " in err and f"test: 1 images, {len(test)} records" in err
    registry = load(tmp_path / "data" / "splits.json")
    (source,) = registry["sources"].values()
    assert sorted((Path(k).name, v[3]) for k, v in source["files"].items()) == [("OSBS_029.tif", "train"),
                                                                               ("SOAP_061.png", "test")]
    before = snapshot(tmp_path / "data")
    rc, err = run(capsys, *args)
    assert rc == 0 and "up to date" in err
    assert snapshot(tmp_path / "data") == before


def test_english_descriptions_are_kept_beside_the_chinese_expression(tmp_path, capsys):
    ann, images, lists = tmp_path / "Annotations", tmp_path / "JPEGImages", tmp_path
    ann.mkdir(), images.mkdir()
    Image.new("RGB", (800, 800)).save(images / "00001.jpg")
    objects = [("storagetank", (40, 40, 200, 200), "a large storage tank on the upper left"),
               ("storagetank", (600, 600, 640, 640), "the small storage tank at the bottom right")]
    body = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox><description>{d}</description></object>"
                   for n, b, d in objects)
    (ann / "00001.xml").write_text(f"<annotation><filename>00001.jpg</filename><size><width>800</width>"
                                   f"<height>800</height></size>{body}</annotation>")
    (lists / "train.txt").write_text("00001\n")
    rc, err = run(capsys, "--format", "voc", "--name", "rsvg", "--annotations", ann, "--images", images,
                  "--out_dir", tmp_path / "out")
    assert rc == 0, err
    refer = [r for r in load(tmp_path / "out" / "rsvg_train.json") if r["kind"] == "refer"]
    got = {tuple(r["label_boxes"][0]): (r["prompt"], r["expression_en"]) for r in refer}
    assert got[(40, 40, 200, 200)][1] == objects[0][2] and "储油罐" in got[(40, 40, 200, 200)][0]
    assert got[(600, 600, 640, 640)][1] == objects[1][2]
    assert "2 of 2 English descriptions kept in expression_en" in err


# DIOR-RSVG-like: each object with an English description; the scripted endpoint's replies per
# description, in turn (the last one repeats): the first reply of each is bad, the next good.
RSVG_OBJECTS = [("storagetank", (40, 40, 200, 200), "a large storage tank on the upper left"),
                ("storagetank", (600, 600, 640, 640), "the small storage tank at the bottom right"),
                ("vehicle", (380, 380, 420, 420), "the car in the middle")]
REPLIES = {"a large storage tank on the upper left": ["左上方的一个大罐子。", "左上方的一个大储油罐。"],  # no category
           "the small storage tank at the bottom right": ["右下角的小储油罐。"],
           "the car in the middle": ["中间的3辆车。", "中间的汽车。"]}  # a number the English does not say


def rsvg_set(tmp_path: Path, objects=RSVG_OBJECTS) -> list:
    ann, images = tmp_path / "Annotations", tmp_path / "JPEGImages"
    ann.mkdir(), images.mkdir()
    Image.new("RGB", (800, 800)).save(images / "00001.jpg")
    body = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox><description>{d}</description></object>"
                   for n, b, d in objects)
    (ann / "00001.xml").write_text(f"<annotation><filename>00001.jpg</filename><size><width>800</width>"
                                   f"<height>800</height></size>{body}</annotation>")
    (tmp_path / "train.txt").write_text("00001\n")
    return ["--format", "voc", "--name", "rsvg", "--annotations", ann, "--images", images, "--out_dir",
            tmp_path / "out", "--cache", tmp_path / "cache.sqlite", "--model", "m", "--no_progress", "--retries", "0"]


class Scripted(ScriptedServer):
    """Answers each numbered description with its next reply in ``REPLIES``; logs what it was asked."""

    def __init__(self, down_after: int | None = None):
        self.asked, self.requests, self.down_after = [], [], down_after
        super().__init__(self.answer)
        self.httpd.handle_error = lambda *a: None  # a dropped connection is the point, not a traceback

    def answer(self, body: dict, items: dict) -> str:
        if self.down_after is not None and len(self.requests) >= self.down_after:
            raise ConnectionAbortedError("the endpoint went down")  # the connection drops, no reply
        self.requests.append(body["messages"])
        out = {}
        for k, en in items.items():
            n = self.asked.count(en)
            self.asked.append(en)
            out[k] = REPLIES[en][min(n, len(REPLIES[en]) - 1)]
        return json.dumps(out, ensure_ascii=False)


def _refer(out: Path) -> dict:
    return {tuple(r["label_boxes"][0]): r["prompt"] for r in load(out / "rsvg_train.json") if r["kind"] == "refer"}


def test_translated_expressions_are_checked_for_their_category_and_numbers_and_used(tmp_path, capsys):
    args = rsvg_set(tmp_path)
    srv = Scripted()
    try:
        rc, err = run(capsys, *args, "--base_url", srv.base_url, "--batch_size", "1")
    finally:
        srv.close()
    assert rc == 0, err
    refer = _refer(tmp_path / "out")
    assert refer[(40, 40, 200, 200)] == "请框出图中左上方的一个大储油罐的位置。"
    assert refer[(600, 600, 640, 640)] == "请框出图中右下角的小储油罐的位置。"
    # the lone vehicle has no rule-built expression beyond 车辆; its translated one is used
    assert refer[(380, 380, 420, 420)] == "请框出图中中间的汽车的位置。"
    identify = [r for r in load(tmp_path / "out" / "rsvg_train.json") if r["kind"] == "identify"]
    assert {r["label"] for r in identify} == {"左上方的一个大储油罐。", "右下角的小储油罐。", "中间的汽车。"}
    # each bad reply was refused and asked again, with the problem said; the good one was asked once
    assert sorted(srv.asked) == sorted([*REPLIES] + ["a large storage tank on the upper left", "the car in the middle"])
    # the re-asks, wherever they fell among the first asks (a re-ask goes out as soon as a slot is free)
    again = " ".join(m[-1]["content"] for m in srv.requests if "previous answer had problems" in m[-1]["content"])
    assert "储油罐" in again and "3" in again
    assert any("vehicle = 车辆" in m[0]["content"] for m in srv.requests)
    assert "3 distinct English expressions: 0 from cache, 3 new, 0 failed" in err
    assert not (tmp_path / "out" / "failures.json").exists()


def test_an_expression_must_name_its_category_and_invent_no_number_or_position():
    assert check_expression("the car in the middle", "中间的汽车。", "vehicle", "车辆") == []
    assert check_expression("the car in the middle", "中间的车辆。", "vehicle", "车辆") == []
    assert any("name it 储油罐" in p for p in check_expression("the tank on the left", "左侧的罐子。", "storagetank",
                                                                "储油罐"))
    assert check_expression("the car in the middle", "中间的2辆汽车。", "vehicle", "车辆")
    assert check_expression("the car in the middle", "左上角的汽车。", "vehicle", "车辆")


def test_an_endpoint_down_midway_keeps_rule_built_expressions_and_a_rerun_finishes(tmp_path, capsys):
    args = rsvg_set(tmp_path, RSVG_OBJECTS[1:])
    srv = Scripted(down_after=1)
    try:
        rc, err = run(capsys, *args, "--base_url", srv.base_url, "--batch_size", "1", "--concurrency", "1")
    finally:
        srv.close()
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 2 and len(lines) == 1 and "still not translated" in lines[0] and "Traceback" not in err, err
    failed = load(tmp_path / "out" / "failures.json")
    assert [(f["objects"], f["splits"]) for f in failed] == [(1, ["train"])]
    # the records are written: translated where the reply came back, else the rule-built expression
    assert _refer(tmp_path / "out") == {(600, 600, 640, 640): "请框出图中右下角的小储油罐的位置。",
                                        (380, 380, 420, 420): "请框出图中车辆的位置。"}
    assert [f["expression"] for f in failed] == ["the car in the middle"]
    srv = Scripted()
    try:
        rc, err = run(capsys, *args, "--base_url", srv.base_url, "--batch_size", "1")
    finally:
        srv.close()
    assert rc == 0, err
    assert srv.asked == ["the car in the middle"] * 2  # the cached one is not asked again (this one: bad, then good)
    assert _refer(tmp_path / "out") == {(600, 600, 640, 640): "请框出图中右下角的小储油罐的位置。",
                                        (380, 380, 420, 420): "请框出图中中间的汽车的位置。"}
    assert not (tmp_path / "out" / "failures.json").exists()


def test_a_dry_run_estimates_the_calls_and_writes_nothing(tmp_path, capsys):
    args = rsvg_set(tmp_path)
    srv = Scripted()
    try:
        rc, err = run(capsys, *args, "--base_url", srv.base_url, "--dry_run")
    finally:
        srv.close()
    assert rc == 0 and "would translate 3 English expressions in ~1 calls" in err, err
    assert srv.requests == [] and not (tmp_path / "out").exists() and not (tmp_path / "cache.sqlite").exists()
    assert not (tmp_path / "splits.json").exists()


def dota_set(tmp_path: Path) -> tuple[list, Path, Path]:
    labels, images, lists = tmp_path / "labelTxt", tmp_path / "images", tmp_path / "lists"
    for d in (labels, images, lists):
        d.mkdir()
    shutil.copy(ANN / "P0001.txt", labels)
    y, x = np.indices((800, 1000))  # every window's pixels differ from the others'
    Image.fromarray(np.stack([x % 256, y % 256, (x * y) % 256], axis=-1).astype(np.uint8)).save(images / "P0001.png")
    Image.new("RGB", (300, 200), (9, 9, 9)).save(images / "P0002.png")
    (labels / "P0002.txt").write_text("10 10 60 10 60 40 10 40 plane 0\n200 100 260 100 260 150 200 150 plane 0\n")
    (lists / "train.txt").write_text("P0001\n")
    (lists / "val.txt").write_text("P0002\n")
    out = tmp_path / "data" / "dota_grounding"
    return ["--format", "dota", "--name", "dota", "--annotations", labels, "--images", images, "--split_files", lists,
            "--out_dir", out, "--tile", "512", "--overlap", "100"], out, images


def test_a_large_dota_image_is_cut_into_tiles_with_its_boxes_moved(tmp_path, capsys):
    args, out, images = dota_set(tmp_path)
    rc, err = run(capsys, *args)
    assert rc == 0, err
    train, val = load(out / "dota_train.json"), load(out / "dota_val.json")
    original = Image.open(images / "P0001.png")
    tiles = {r["img"]: r["source"] for r in train}
    assert tiles and all(t.startswith("tiles/P0001__") for t in tiles)
    for img, source in tiles.items():
        x0, y0, x1, y1 = source["window"]
        assert source["img"] == os.path.relpath(images / "P0001.png", out)
        with Image.open(out / img) as t:  # the tile's pixels are the window's
            assert t.size == (x1 - x0, y1 - y0) and t.tobytes() == original.crop((x0, y0, x1, y1)).tobytes()
    for r in train:
        w, h = Image.open(out / r["img"]).size
        assert all(0 <= b[0] < b[2] <= w and 0 <= b[1] < b[3] <= h for b in r["prompt_boxes"] + r["label_boxes"])
    # the right-hand tank (820..900, 80..150) lies whole in the window starting at x = 488, moved by 488
    right = [r for r in train if r["img"] == "tiles/P0001__488_0.png" and r["kind"] == "detect" and "储油罐" in r["prompt"]]
    assert [b[:4] for b in right[0]["label_boxes"]] == [[332, 80, 412, 150]]
    # the small image is not cut; its 2 planes are counted on it
    assert {r["img"] for r in val} == {os.path.relpath(images / "P0002.png", out)} and "source" not in val[0]
    assert [r["label"][:2] for r in val if r["kind"] == "count"] == ["2个"]
    before = snapshot(tmp_path / "data")
    rc, err = run(capsys, *args)
    assert rc == 0 and "up to date" in err and snapshot(tmp_path / "data") == before
    # other tile settings: the earlier tiles go, only the new ones are left
    args[args.index("--tile") + 1] = "600"
    rc, err = run(capsys, *args)
    assert rc == 0, err
    now = {r["img"] for r in load(out / "dota_train.json")}
    assert now and now != set(tiles)
    assert {f"tiles/{p.name}" for p in (out / "tiles").iterdir()} == now


def test_a_coco_set_keeps_the_split_of_each_file(tmp_path, capsys):
    ann, images = tmp_path / "annotations", tmp_path / "images"
    ann.mkdir(), images.mkdir()
    coco = load(ANN / "coco_small.json")
    for im in coco["images"]:
        Image.new("RGB", (im["width"], im["height"])).save(images / im["file_name"])
    shutil.copy(ANN / "coco_small.json", ann / "instances_val2017.json")
    rc, err = run(capsys, "--format", "coco", "--name", "c", "--annotations", ann, "--images", images,
                  "--out_dir", tmp_path / "out")
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "out").glob("c_*.json")) == ["c_val.json"]
    imgs = {r["img"] for r in load(tmp_path / "out" / "c_val.json")}
    assert "../images/00010.jpg" in imgs and imgs <= {f"../images/{i['file_name']}" for i in coco["images"]}


def _damage(kind: str, tmp_path: Path, args: list) -> list:
    labels, images, lists = tmp_path / "labelTxt", tmp_path / "images", tmp_path / "lists"
    if kind == "no annotation folder":
        shutil.rmtree(labels)
    elif kind == "no image folder":
        shutil.rmtree(images)
    elif kind == "id without annotation":
        (lists / "val.txt").write_text("P0002\nP0009\n")
    elif kind == "id without image":
        (images / "P0002.png").unlink()
    elif kind == "box outside the image":
        (labels / "P0002.txt").write_text("250 150 400 150 400 190 250 190 plane 0\n")
    elif kind == "empty annotation":
        (labels / "P0002.txt").write_text("imagesource:GoogleEarth\ngsd:null\n")
    elif kind == "id in two lists":
        (lists / "val.txt").write_text("P0002\nP0001\n")
    elif kind == "no split lists":
        for f in lists.iterdir():
            f.unlink()
    elif kind == "category without a name":
        (labels / "P0002.txt").write_text("10 10 60 10 60 40 10 40 gizmo 0\n")
    elif kind == "overlap without tile":
        args = [a for a in args if a not in ("--tile", "512")]
    return args


@pytest.mark.parametrize("kind, says", [
    ("no annotation folder", "--annotations"), ("no image folder", "--images"),
    ("id without annotation", "'P0009' has no annotation file"), ("id without image", "'P0002' has no image"),
    ("box outside the image", "outside the 300 x 200 image"), ("empty annotation", "no objects annotated"),
    ("id in two lists", "'P0001' is also in train.txt"), ("no split lists", "no split list"),
    ("category without a name", "(gizmo)"), ("overlap without tile", "--overlap"),
])
def test_broken_inputs_are_one_line_and_write_nothing(tmp_path, capsys, kind, says):
    args, out, _ = dota_set(tmp_path)
    rc, err = run(capsys, *_damage(kind, tmp_path, args))
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 2 and len(lines) == 1 and says in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "data").exists()


def test_a_voc_size_that_is_not_the_image_size_is_one_line(tmp_path, capsys):
    args, out = voc_set(tmp_path)
    ann = tmp_path / "ann"
    ann.mkdir()
    xml = (ANN / "OSBS_029.xml").read_text().replace("<width>400</width>", "<width>800</width>")
    (ann / "OSBS_029.xml").write_text(xml)
    (ann / "SOAP_061.xml").write_text((ANN / "SOAP_061.xml").read_text())
    args[args.index("--annotations") + 1] = ann
    rc, err = run(capsys, *args)
    assert rc == 2 and "annotated for a 800 x 400 image" in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()
