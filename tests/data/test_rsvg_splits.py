"""DIOR-RSVG's own split lists: ``train.txt`` / ``val.txt`` / ``test.txt`` list OBJECT indices, one
integer a line, numbering every ``<object>`` of every XML file of ``Annotations/`` in file-name
order from 0 (the authors' ``data_loader.py``, github.com/ZhanYang-nwpu/RSVG-pytorch at 0531211;
their ``DIOR_RSVG/train.txt`` starts ``3, 4, 5, 7 ...``).

The set is written here in that layout: four 800 x 800 images ``00001.png`` ... with one XML each
(written in reverse name order, so only the names give the numbering), objects numbered

    00001.xml: 0 train, 1 test, 2 train      -> test image  (0, 2 left out)
    00002.xml: 3 val, 4 train                -> val image   (4 left out)
    00003.xml: 5 train, 6 train              -> train image
    00004.xml: 7 test, 8 val                 -> test image  (8 left out)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import remoteglm.data.grounding_import as gi
from remoteglm.data.importers import main
from remoteglm.data.grounding_import import split_ids
from remoteglm.data.rsvg_splits import is_object_index
from scripted_server import ScriptedServer

OBJECTS = {  # stem -> [(category, box, description)]
    "00001": [("storagetank", (40, 40, 200, 200), "a large storage tank on the upper left"),
              ("storagetank", (600, 600, 640, 640), "the small storage tank at the bottom right"),
              ("vehicle", (380, 380, 420, 420), "the car in the middle")],
    "00002": [("airplane", (100, 100, 300, 260), "the airplane on the left"),
              ("airplane", (500, 100, 700, 260), "the airplane on the right")],
    "00003": [("ship", (10, 700, 90, 760), "the ship in the lower left corner"),
              ("ship", (700, 700, 790, 760), "the ship in the lower right corner")],
    "00004": [("windmill", (300, 300, 360, 420), "the windmill in the middle"),
              ("bridge", (0, 600, 800, 680), "the long bridge on the lower side")],
}
OFFICIAL = {"train": [0, 2, 4, 5, 6], "val": [3, 8], "test": [1, 7]}
NUMBERED = [(stem, o) for stem, objs in OBJECTS.items() for o in objs]  # index -> (stem, object)
ZH = {"the small storage tank at the bottom right": "右下角的小储油罐。",
      "the airplane on the left": "左侧的飞机。",
      "the ship in the lower left corner": "左下角的船舶。",
      "the ship in the lower right corner": "右下角的船舶。",
      "the windmill in the middle": "中间的风车。"}


def voc(image: str, objects) -> str:
    """One file as DIOR-RSVG's are (its RSVGD/Annotations/00001.xml in the same repository)."""
    body = "".join(f"  <object>\n    <name>{n}</name>\n    <pose>Unspecified</pose>\n    <bndbox>\n"
                   f"      <xmin>{b[0]}</xmin>\n      <ymin>{b[1]}</ymin>\n      <xmax>{b[2]}</xmax>\n"
                   f"      <ymax>{b[3]}</ymax>\n    </bndbox>\n    <description>{d}</description>\n  </object>\n"
                   for n, b, d in objects)
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<annotation>\n'
            f"  <filename>{image}</filename>\n  <source>\n    <database>DIOR</database>\n  </source>\n"
            "  <size>\n    <width>800</width>\n    <height>800</height>\n    <depth>3</depth>\n  </size>\n"
            f"  <segmented>0</segmented>\n{body}</annotation>")


def write_lists(root: Path, lists: dict[str, list]) -> None:
    for split, ids in lists.items():
        (root / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


@pytest.fixture
def rsvg(tmp_path: Path) -> dict:
    root = tmp_path / "DIOR_RSVG"
    ann, images = root / "Annotations", root / "JPEGImages"
    ann.mkdir(parents=True), images.mkdir()
    for k, (stem, objects) in enumerate(reversed(OBJECTS.items())):  # not in name order
        Image.new("RGB", (800, 800), (40 * k, 20, 30)).save(images / f"{stem}.png")  # each its own content
        (ann / f"{stem}.xml").write_text(voc(f"{stem}.png", objects))
    write_lists(root, OFFICIAL)
    out = tmp_path / "data" / "rsvg_grounding"
    args = ["--format", "voc", "--name", "rsvg", "--annotations", ann, "--images", images, "--split_files", root,
            "--out_dir", out, "--no_progress"]
    return {"root": root, "ann": ann, "images": images, "out": out, "args": args,
            "registry": tmp_path / "data" / "splits.json"}


def run(capsys, *args) -> tuple[int, str]:
    rc = main(["detection", *map(str, args)])
    return rc, capsys.readouterr().err


def records(out: Path) -> dict[str, list]:
    return {p.stem.split("_")[-1]: json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob("rsvg_*.json"))}


def objects_of(recs: list, kind: str = "refer") -> list[tuple[str, list, str]]:
    return sorted((Path(r["img"]).stem, r["label_boxes" if kind == "refer" else "prompt_boxes"][0],
                   r["expression_en"]) for r in recs if r["kind"] == kind)


def expected(indices: list[int]) -> list[tuple[str, list, str]]:
    return sorted((NUMBERED[i][0], list(NUMBERED[i][1][1]), NUMBERED[i][1][2]) for i in indices)


def test_object_index_lists_give_each_image_one_split_and_each_file_only_its_official_expressions(rsvg, capsys):
    rc, err = run(capsys, *rsvg["args"])
    assert rc == 0, err
    got = records(rsvg["out"])
    assert set(got) == {"train", "val", "test"}
    # the test file holds exactly the official test expressions (1 on 00001, 7 on 00004), nothing else
    assert objects_of(got["test"]) == objects_of(got["test"], "identify") == expected([1, 7])
    assert objects_of(got["val"]) == expected([3])
    assert objects_of(got["train"]) == expected([5, 6])
    # only the dataset's own expressions: no detect/count/grounded, no rule-built position expressions
    for recs in got.values():
        assert {r["kind"] for r in recs} == {"refer", "identify"}
        for r in recs:  # no endpoint: the English, quoted, is the expression
            assert r["expression"] == f"“{r['expression_en']}”" and r["expression"] in (r["prompt"] + r["label"])
    by_en = {r["expression_en"]: r for recs in got.values() for r in recs}
    assert by_en["the windmill in the middle"]["category"] == "windmill"
    # no image in two splits, in the records or the registry
    imgs = {split: {Path(r["img"]).stem for r in recs} for split, recs in got.items()}
    assert imgs == {"train": {"00003"}, "val": {"00002"}, "test": {"00001", "00004"}}
    registry = json.loads(rsvg["registry"].read_text(encoding="utf-8"))
    (source,) = registry["sources"].values()
    assert sorted((Path(k).stem, v[3]) for k, v in source["files"].items()) == [
        ("00001", "test"), ("00002", "val"), ("00003", "train"), ("00004", "test")]
    lines = err.splitlines()
    assert sum("object-index split (DIOR-RSVG)" in ln for ln in lines) == 1, err
    assert any("9 objects of 4 XML files numbered in file-name order" in ln for ln in lines), err
    left = [ln for ln in lines if "left out" in ln and "official" in ln]
    assert len(left) == 1 and "4 official expressions left out" in left[0], err
    assert "2 train + 1 val on test images" in left[0] and "1 train on val images" in left[0], err
    assert "--base_url" in err  # how to translate them


class Endpoint(ScriptedServer):
    """Answers each description with its ZH translation (or, lacking one, an unusable reply)."""

    def __init__(self):
        self.asked: list[str] = []
        super().__init__(self.answer)

    def answer(self, body: dict, items: dict) -> str:
        self.asked.extend(items.values())
        return json.dumps({k: ZH.get(en, "无法翻译") for k, en in items.items()}, ensure_ascii=False)


def test_with_an_endpoint_only_the_kept_expressions_are_translated_and_used(rsvg, capsys, tmp_path):
    srv = Endpoint()
    try:
        rc, err = run(capsys, *rsvg["args"], "--base_url", srv.base_url, "--model", "m", "--cache",
                      tmp_path / "cache.sqlite", "--retries", "0", "--batch_size", "1")
    finally:
        srv.close()
    # the left-out expressions (0, 2, 4, 8) are never asked for; 7 ("the windmill ...") is, and translates
    assert set(srv.asked) == {NUMBERED[i][1][2] for i in (1, 3, 5, 6, 7)}
    got = records(rsvg["out"])
    refer = {r["expression_en"]: r for recs in got.values() for r in recs if r["kind"] == "refer"}
    assert refer["the airplane on the left"]["prompt"] == "请框出图中左侧的飞机的位置。"
    assert refer["the airplane on the left"]["expression"] == "左侧的飞机"
    assert refer["the small storage tank at the bottom right"]["category"] == "storagetank"
    assert set(refer) == {NUMBERED[i][1][2] for i in (1, 3, 5, 6, 7)}
    assert rc == 0, err


def test_split_ids_reads_the_real_lists_as_they_are(rsvg):
    assert split_ids(rsvg["root"]) == {s: [str(i) for i in ids] for s, ids in OFFICIAL.items()}


def _damage(kind: str, rsvg: dict) -> list:
    root = rsvg["root"]
    if kind == "index out of range":
        write_lists(root, {"test": [1, 7, 9]})
    elif kind == "index in two lists":
        write_lists(root, {"val": [3, 8, 5]})
    elif kind == "a list with no index":
        (root / "val.txt").write_text("# nothing here\n")
    elif kind == "lists with no object":
        for split in OFFICIAL:
            (root / f"{split}.txt").write_text("\n")
    elif kind == "no XML file":
        for p in rsvg["ann"].iterdir():
            p.unlink()
    elif kind == "object without description":
        (rsvg["ann"] / "00003.xml").write_text(voc("00003.png", OBJECTS["00003"]).replace(
            "<description>the ship in the lower right corner</description>", ""))
    elif kind == "tile":
        return ["--tile", "512"]
    return []


@pytest.mark.parametrize("kind, says", [
    ("index out of range", "test.txt: object index 9 is out of range: the 4 XML files of"),
    ("index in two lists", "'5' is also in train.txt"),
    ("a list with no index", "val.txt: no object index"),
    ("lists with no object", "no object index"),
    ("no XML file", "no .xml annotation file"),
    ("object without description", "00003.xml: object 2 (index 6, in train.txt) has no <description>"),
    ("tile", "--tile"),
])
def test_broken_object_index_lists_are_one_line_and_write_nothing(rsvg, capsys, kind, says):
    extra = _damage(kind, rsvg)
    rc, err = run(capsys, *rsvg["args"], *extra)
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 2 and len(lines) == 1 and says in lines[0] and "Traceback" not in err, err
    assert not rsvg["out"].parent.exists()


def test_object_indices_are_told_from_image_ids_though_some_indices_are_file_stems(tmp_path):
    """DIOR-RSVG's 17,402 files are 00001.xml ... 17402.xml: its object indices 10000 to 17402 are
    stems as well; DIOR's image lists write every id as its file's stem, zero-padded."""
    for stem in ("00001", "00002", "10000", "17402"):
        (tmp_path / f"{stem}.xml").write_text("<annotation/>")
    assert is_object_index({"train": ["3", "10000"], "test": ["0", "17402"]}, tmp_path)
    assert not is_object_index({"train": ["00001", "10000"], "test": ["00002"]}, tmp_path)  # all stems
    assert not is_object_index({"train": ["00001", "00003"]}, tmp_path)  # an image id: has no file (one line later)
    assert not is_object_index({"train": ["P0001"]}, tmp_path)


def test_image_stem_lists_of_integers_stay_image_lists(tmp_path, capsys):
    """DIOR's own lists name images by their integer stems (``00001``): not object indices."""
    root = tmp_path / "DIOR"
    ann, images = root / "Annotations", root / "JPEGImages"
    ann.mkdir(parents=True), images.mkdir()
    for k, (stem, objects) in enumerate(OBJECTS.items()):
        Image.new("RGB", (800, 800), (40 * k, 20, 30)).save(images / f"{stem}.png")
        (ann / f"{stem}.xml").write_text(voc(f"{stem}.png", objects))
    write_lists(root, {"train": ["00001", "00002", "00003"], "test": ["00004"]})
    rc, err = run(capsys, "--format", "voc", "--name", "rsvg", "--annotations", ann, "--images", images,
                  "--split_files", root, "--out_dir", tmp_path / "out")
    assert rc == 0, err
    assert "object-index" not in err
    got = records(tmp_path / "out")
    assert {Path(r["img"]).stem for r in got["train"]} == {"00001", "00002", "00003"}
    assert "count" in {r["kind"] for r in got["train"]}  # the rule-built tasks of a detection set


def test_the_rerun_stamp_covers_the_object_index_lists(rsvg, capsys, monkeypatch):
    from remoteglm.data.rerun import sources

    assert "remoteglm/data/rsvg_splits.py" in {f for f, _, _ in sources(gi.__name__)}  # its code, too
    reads: list = []
    read_voc = gi.read_voc
    monkeypatch.setattr(gi, "read_voc", lambda p: reads.append(p) or read_voc(p))
    rc, err = run(capsys, *rsvg["args"])
    assert rc == 0 and len(reads) == 4, err
    reads.clear()
    rc, err = run(capsys, *rsvg["args"])
    assert rc == 0 and err.startswith("up to date: ") and reads == [], err
    # 7 moves from test to val: 00004 becomes a val image, its 8 is kept now; only the lists changed
    write_lists(rsvg["root"], {"val": [3, 7, 8], "test": [1]})
    rc, err = run(capsys, *rsvg["args"])
    assert rc == 0 and not err.startswith("up to date: ") and reads, err
    got = records(rsvg["out"])
    assert objects_of(got["val"]) == expected([3, 7, 8]) and objects_of(got["test"]) == expected([1])
    reads.clear()
    rc, err = run(capsys, *rsvg["args"])
    assert rc == 0 and err.startswith("up to date: ") and reads == [], err
