"""``python -m remoteglm.data.importers rsgpt4v``: RS-GPT4V's instruction files -> Chinese records.

RS-GPT4V publishes no data file in a repository (github.com/GeoX-Lab/RS-GPT4V holds a README), so the
fixtures are in the layout its paper's training (LLaVA-1.5) reads, as LLaVA documents it
(haotian-liu/LLaVA docs/Finetune_Custom_Data.md): [{id, image, conversations: [{from: human|gpt,
value}]}], "<image>" in the first human turn; a JSON file and a JSON Lines file. Boxes are written in
the texts as [x1, y1, x2, y2]; expected pixel boxes are worked out by hand. The endpoint is a scripted
server on 127.0.0.1 answering each English sentence with a fixed Chinese one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from remoteglm.boxes import Box
from remoteglm.data.importers import main
from remoteglm.data.translate import normalise
from remoteglm.eval.evalset import load_eval_set
from scripted_server import TableServer

ZH = {"Describe this image in detail.": "详细描述这张图像。",
      "This is a satellite image of a harbor.": "这是一张港口的卫星图像。",
      "Two ships are docked at the harbor.": "两艘船停靠在港口。",
      "How many ships are docked?": "有多少艘船停靠？",
      "Two ships are docked.": "两艘船停靠着。",
      "Where are they?": "它们在哪里？",
      "At the harbor.": "在港口。",
      "Please provide the bounding box coordinate of the region this sentence describes: the ship on the left.":
          "请给出这句话所描述区域的边界框坐标：左边的船。",
      "What is in the region": "该区域中是什么",
      "A ship.": "一艘船。",
      "Where is the ship on the left?": "左边的船在哪里？",
      "Two ships:": "两艘船："}
REPLIES = {normalise(en): zh for en, zh in ZH.items()}
REFER_Q = "Please provide the bounding box coordinate of the region this sentence describes: the ship on the left."


def conv(image: str, *turns: str, id_: str = "x") -> dict:
    roles = ("human", "gpt")
    return {"id": id_, "image": image, "conversations": [
        {"from": roles[k % 2], "value": ("<image>\n" + t) if k == 0 else t} for k, t in enumerate(turns)]}


TRAIN = [conv("caption/harbor.png", "Describe this image in detail.",
              "This is a satellite image of a harbor. Two ships are docked at the harbor.", id_="cap_1"),
         conv("caption/harbor.png", "How many ships are docked?", "Two ships are docked.", "Where are they?",
              "At the harbor.", id_="conv_1"),
         conv("caption/harbor.png", REFER_Q, "[0.1, 0.2, 0.3, 0.4]", id_="vg_1"),
         conv("vg/wide.png", "What is in the region [0.5, 0.5, 0.75, 1.0]?", "A ship.", id_="vg_2"),
         conv("caption/harbor.png", "Where is the ship on the left?", "Two ships: [0.1, 0.1, 0.2, 0.2], "
              "[0.3, 0.3, 0.4, 0.4].", id_="vg_3"),
         conv("vg/wide.png", "What is in the region [0.5, 0.5, 0.75, 1.0]?", "A ship.", "How many ships are docked?",
              "Two ships are docked.", id_="conv_box")]
TEST = [conv("test/small.png", REFER_Q, "[0.25, 0.5, 0.5, 0.75]", id_="t1"),
        conv("test/small.png", "Describe this image in detail.", "Two ships are docked at the harbor.", id_="t2")]


def Scripted(bad: frozenset = frozenset()) -> TableServer:
    """The endpoint answering from REPLIES (``bad``: sentences answered in English)."""
    return TableServer(REPLIES, bad)


@pytest.fixture
def srv():
    s = Scripted()
    yield s
    s.close()


def release(tmp_path: Path, train=TRAIN, test=TEST) -> Path:
    """The files and an images/ folder (800 x 800, 400 x 200 and 256 x 256 PNGs of different content)."""
    root = tmp_path / "RS-GPT4V"
    for rel, size, colour in (("caption/harbor.png", (800, 800), 10), ("vg/wide.png", (400, 200), 90),
                              ("test/small.png", (256, 256), 170)):
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (colour, 40, 40)).save(root / "images" / rel)
    (root / "train.json").write_text(json.dumps(train, indent=2))
    (root / "test.jsonl").write_text("\n".join(json.dumps(c) for c in test) + "\n")
    return root


def run(capsys, tmp_path: Path, srv, *extra) -> tuple[int, str]:
    root = tmp_path / "RS-GPT4V"
    args = ["rsgpt4v", "--train", root / "train.json", "--test", root / "test.jsonl", "--images", root / "images",
            "--out_dir", tmp_path / "data" / "rsgpt4v", "--cache", tmp_path / "cache.sqlite", "--no_progress",
            "--base_url", srv.base_url, "--model", "m", "--retries", "0", *extra]
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_turns_history_and_boxes_in_original_pixels(tmp_path, capsys, srv):
    root = release(tmp_path)
    rc, err = run(capsys, tmp_path, srv, "--boxes", "normalized")
    assert rc == 0, err
    out = tmp_path / "data" / "rsgpt4v"
    train = {r["source_id"]: r for r in load(out / "rsgpt4v_train.json")}
    assert set(train) == {"cap_1", "conv_1", "vg_1", "vg_2", "vg_3"}  # conv_box: a box before its last turn
    cap = train["cap_1"]
    assert cap["img"] == os.path.relpath(root / "images" / "caption" / "harbor.png", out)
    assert (cap["prompt"], cap["label"], cap["task"]) == ("详细描述这张图像。", "这是一张港口的卫星图像。两艘船停靠在港口。",
                                                          "instruction")
    assert "<image>" not in json.dumps(train, ensure_ascii=False)
    c = train["conv_1"]
    assert (c["history"], c["prompt"], c["label"], c["task"]) == (
        [["有多少艘船停靠？", "两艘船停靠着。"]], "它们在哪里？", "在港口。", "conversation")
    # 800 x 800: [0.1, 0.2, 0.3, 0.4] -> 80, 160, 240, 320
    refer = train["vg_1"]
    assert (refer["kind"], refer["label"], refer["label_boxes"], refer["prompt_boxes"]) == (
        "refer", "<box>", [[80.0, 160.0, 240.0, 320.0]], [])
    assert refer["prompt"] == "请给出这句话所描述区域的边界框坐标：左边的船。" and "task" not in refer
    # 400 x 200: [0.5, 0.5, 0.75, 1.0] -> 200, 100, 300, 200 (fractions of each side)
    identify = train["vg_2"]
    assert (identify["kind"], identify["prompt"], identify["prompt_boxes"], identify["label"]) == (
        "identify", "该区域中是什么<box>？", [[200.0, 100.0, 300.0, 200.0]], "一艘船。")
    grounded = train["vg_3"]
    assert (grounded["kind"], grounded["label"], grounded["label_boxes"]) == (
        "grounded", "两艘船：<box><box>", [[80.0, 80.0, 160.0, 160.0], [240.0, 240.0, 320.0, 320.0]])
    test = {r["source_id"]: r for r in load(out / "rsgpt4v_test.json")}
    assert test["t1"]["label_boxes"] == [[64.0, 128.0, 128.0, 192.0]] and test["t1"]["label_en"] == "[0.25, 0.5, 0.5, 0.75]"
    assert test["t2"]["prompt_en"] == "Describe this image in detail."
    assert "1 conversations with boxes before their last turn left out" in err
    assert "train: 2 images, 5 records" in err and "test: 1 images, 2 records" in err
    registry = load(tmp_path / "data" / "splits.json")
    (source,) = registry["sources"].values()
    assert sorted((Path(k).name, v[3]) for k, v in source["files"].items()) == [
        ("harbor.png", "train"), ("small.png", "test"), ("wide.png", "train")]
    # the evaluation reads the test file's refer record as grounding, in the same pixels
    es = load_eval_set(out / "rsgpt4v_test.json")
    assert [(g.kind, g.label_boxes) for g in es.grounding] == [("refer", [Box(64.0, 128.0, 128.0, 192.0)])]
    assert es.skipped == {"instruction": 1}
    # a rerun asks and writes nothing
    before = {str(p): p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*") if p.is_file()}
    srv.asked = []
    rc, err = run(capsys, tmp_path, srv, "--boxes", "normalized")
    assert rc == 0 and "up to date" in err and srv.asked == [], err
    assert {str(p): p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*") if p.is_file()} == before


def test_per_mille_and_pixel_boxes(tmp_path, capsys, srv):
    release(tmp_path, [conv("caption/harbor.png", REFER_Q, "[100, 200, 300, 400]")], TEST[1:])
    rc, err = run(capsys, tmp_path, srv, "--boxes", "per_mille")
    assert rc == 0, err
    (rec,) = load(tmp_path / "data" / "rsgpt4v" / "rsgpt4v_train.json")
    assert rec["label_boxes"] == [[80.0, 160.0, 240.0, 320.0]]
    rc, err = run(capsys, tmp_path, srv, "--boxes", "pixels")
    assert rc == 0, err
    (rec,) = load(tmp_path / "data" / "rsgpt4v" / "rsgpt4v_train.json")
    assert rec["label_boxes"] == [[100.0, 200.0, 300.0, 400.0]]


def test_a_turn_failing_every_round_leaves_its_conversation_out(tmp_path, capsys):
    release(tmp_path)
    srv = Scripted(frozenset({normalise("Where are they?")}))
    try:
        rc, err = run(capsys, tmp_path, srv, "--boxes", "normalized")
    finally:
        srv.close()
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 2 and len(lines) == 1 and "1 conversations still not translated" in lines[0], err
    out = tmp_path / "data" / "rsgpt4v"
    assert "conv_1" not in {r["source_id"] for r in load(out / "rsgpt4v_train.json")}
    (failure,) = load(out / "failures.json")
    assert [s["sentence"] for s in failure["sentences"]] == ["Where are they?"]


def test_a_dry_run_estimates_and_writes_nothing(tmp_path, capsys, srv):
    release(tmp_path)
    rc, err = run(capsys, tmp_path, srv, "--boxes", "normalized", "--dry_run")
    assert rc == 0 and "would translate" in err, err
    assert srv.asked == [] and not (tmp_path / "data").exists() and not (tmp_path / "cache.sqlite").exists()


def _train(root: Path, items) -> None:
    (root / "train.json").write_text(items if isinstance(items, str) else json.dumps(items))


BROKEN = {
    "box scale not given": ([], lambda r: None, "pass --boxes normalized"),
    "fractions named pixels": (["--boxes", "pixels"], lambda r: None, "fractions, not --boxes pixels"),
    "pixels named fractions": (["--boxes", "normalized"], lambda r: _train(r, [conv(
        "caption/harbor.png", REFER_Q, "[10, 20, 300, 400]")]), "numbers above 1"),
    "box outside the image": (["--boxes", "per_mille"], lambda r: _train(r, [conv(
        "caption/harbor.png", REFER_Q, "[900, 900, 1300, 1300]")]), "lies outside the 800 x 800 image"),
    "empty box": (["--boxes", "normalized"], lambda r: _train(r, [conv(
        "caption/harbor.png", REFER_Q, "[0.3, 0.2, 0.3, 0.4]")]), "empty or reversed"),
    "unknown role": (["--boxes", "normalized"], lambda r: _train(r, [{"image": "caption/harbor.png", "conversations": [
        {"from": "user", "value": "Describe."}, {"from": "gpt", "value": "A harbor."}]}]), "role 'user'"),
    "answer first": (["--boxes", "normalized"], lambda r: _train(r, [{"image": "caption/harbor.png", "conversations": [
        {"from": "gpt", "value": "A harbor."}, {"from": "human", "value": "Describe."}]}]), "expected human's"),
    "question without answer": (["--boxes", "normalized"], lambda r: _train(r, [{
        "image": "caption/harbor.png", "conversations": [{"from": "human", "value": "Describe."}]}]), "ends with gpt's"),
    "turn without text": (["--boxes", "normalized"], lambda r: _train(r, [{"image": "caption/harbor.png", "conversations": [
        {"from": "human", "value": 3}, {"from": "gpt", "value": "A harbor."}]}]), "no 'value' string"),
    "no image field": (["--boxes", "normalized"], lambda r: _train(r, [{"conversations": TRAIN[0]["conversations"]}]),
                       "has no 'image'"),
    "image outside the folder": (["--boxes", "normalized"], lambda r: _train(r, [{**TRAIN[0], "image": "../x.png"}]),
                                 "not a path under --images"),
    "image missing": (["--boxes", "normalized"], lambda r: (r / "images" / "vg" / "wide.png").unlink(),
                      "wide.png not found"),
    "not a list": (["--boxes", "normalized"], lambda r: _train(r, {"data": TRAIN}), "expected a non-empty JSON list"),
    "malformed JSON Lines": (["--boxes", "normalized"], lambda r: (r / "test.jsonl").write_text("{\"id\": 1\n"),
                             "line 1 is not JSON"),
    "file missing": (["--boxes", "normalized"], lambda r: (r / "train.json").unlink(), "file not found"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_inputs_are_one_line_and_write_nothing(tmp_path, capsys, srv, kind):
    root = release(tmp_path)
    extra, damage, says = BROKEN[kind]
    damage(root)
    rc, err = run(capsys, tmp_path, srv, *extra)
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 2 and len(lines) == 1 and says in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "data").exists() and srv.asked == []
