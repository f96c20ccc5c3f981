"""``python -m remoteglm.data.importers rsgpt``: RSGPT's RSICap and RSIEval -> Chinese records.

The fixture files are written here in the released layout (github.com/Lavender105/RSGPT, dataset/ at
commit d3fd7fc): ``RSICap/captions.json`` {"annotations": [{image_id, filename, text_input,
text_output}]} and ``RSIEval/annotations.json`` {"annotations": [{filename, caption, qa_pairs:
[{question, answer, type}]}]}, with answers as the release writes them ("Yes.", "There are two cars
in the image.", "more than 100", "urban", "White."). The endpoint is a scripted server on 127.0.0.1
answering each English sentence with a fixed Chinese one; expected records are written out by hand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from remoteglm.data.importers import main
from remoteglm.data.instructions import DESCRIPTION_PROMPTS
from remoteglm.data.paragraphs import split_sentences
from remoteglm.data.rsgpt import closed_answer, count_answer
from remoteglm.data.translate import normalise
from remoteglm.eval.evalset import load_eval_set
from scripted_server import ScriptedServer, TableServer

RSICAP = [{"image_id": "0", "filename": "P0001_0001.png", "text_input": "Describe this image in detail.",
           "text_output": "This is an aerial image showing a parking lot. There are ten cars parked in the parking "
                          "lot, e.g. White ones.  Some trees grow along the road."},
          {"image_id": "1", "filename": "P0002_0002.png", "text_input": "Take a look at this image and describe what "
           "you notice.", "text_output": "This is a satellite image of a harbor. Two ships are docked at the harbor."}]


def qa(question: str, answer: str, kind: str) -> dict:
    return {"question": question, "answer": answer, "type": kind}


RSIEVAL = [{"filename": "P1000_0001.png",
            "caption": "This is a high-resolution aerial image. A road runs through a residential area.",
            "qa_pairs": [qa("Does this image contains trees?", "Yes.", "presence"),
                         qa("How many cars are there in this image?", "There are two cars in the image.", "quantity"),
                         qa("How many trees are there in this image?", "A lot of.", "quantity"),
                         qa("What is the color of the roof?", "White.", "color"),
                         qa("Is this image a rural or urban scene?", "urban", "scene"),
                         qa("Is the area covered by road greater than that of the parking lot in this image?", "No.",
                            "area_comp"),
                         qa("How many small vehicles in the image?", "more than 100", "quantity")]},
           {"filename": "P1000_0002.png", "caption": "This is a panchromatic satellite image showing farmland.",
            "qa_pairs": [qa("Are there any buildings in this image?", "No.", "presence")]}]

ZH = {"This is an aerial image showing a parking lot.": "这是一张显示停车场的航拍图像。",
      "There are ten cars parked in the parking lot, e.g. White ones.": "停车场里停着十辆汽车，例如白色的汽车。",
      "Some trees grow along the road.": "道路两旁生长着一些树木。",
      "This is a satellite image of a harbor.": "这是一张港口的卫星图像。",
      "Two ships are docked at the harbor.": "两艘船停靠在港口。",
      "This is a high-resolution aerial image.": "这是一张高分辨率航拍图像。",
      "A road runs through a residential area.": "一条道路穿过住宅区。",
      "This is a panchromatic satellite image showing farmland.": "这是一张显示农田的全色卫星图像。",
      "Does this image contains trees?": "这张图像中有树木吗？",
      "How many cars are there in this image?": "这张图像中有多少辆汽车？",
      "How many trees are there in this image?": "这张图像中有多少棵树木？",
      "A lot of.": "很多。",
      "What is the color of the roof?": "屋顶是什么颜色？",
      "White.": "白色。",
      "Is this image a rural or urban scene?": "这张图像是农村场景还是城市场景？",
      "Is the area covered by road greater than that of the parking lot in this image?":
          "这张图像中道路覆盖的面积是否大于停车场？",
      "How many small vehicles in the image?": "图像中有多少辆小型车辆？",
      "Are there any buildings in this image?": "这张图像中有建筑物吗？"}
REPLIES = {normalise(en): zh for en, zh in ZH.items()}


def Scripted(bad: frozenset = frozenset()) -> TableServer:
    """The endpoint answering from REPLIES (``bad``: sentences answered in English)."""
    return TableServer(REPLIES, bad)


def dataset(tmp_path: Path) -> Path:
    """RSGPT's dataset/ folder as released: the two files and their images/ folders (PNGs of different content)."""
    root = tmp_path / "RSGPT" / "dataset"
    for folder, fname, entries in (("RSICap", "captions.json", RSICAP), ("RSIEval", "annotations.json", RSIEVAL)):
        (root / folder / "images").mkdir(parents=True)
        for e in entries:
            Image.new("RGB", (64, 64), (int(e["filename"][1:5]) % 250, int(e["filename"][6:9]) * 60, 9)).save(
                root / folder / "images" / e["filename"])
        (root / folder / fname).write_text(json.dumps({"annotations": entries}, indent=4))
    return root


def run(capsys, tmp_path: Path, srv: ScriptedServer, *extra) -> tuple[int, str]:
    args = ["rsgpt", "--root", tmp_path / "RSGPT" / "dataset", "--out_dir", tmp_path / "data" / "rsgpt", "--cache",
            tmp_path / "cache.sqlite", "--no_progress", "--base_url", srv.base_url, "--model", "m", "--retries", "0",
            *extra]
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def srv():
    s = Scripted()
    yield s
    s.close()


def test_rsicap_is_train_descriptions_and_rsieval_test_captions_and_questions(tmp_path, capsys, srv):
    root = dataset(tmp_path)
    rc, err = run(capsys, tmp_path, srv)
    assert rc == 0, err
    out = tmp_path / "data" / "rsgpt"
    train, test = load(out / "rsicap_train.json"), load(out / "rsieval_test.json")
    first = train[0]
    assert first["img"] == os.path.relpath(root / "RSICap" / "images" / "P0001_0001.png", out)
    # sentence by sentence, joined in order ("e.g. White" does not end a sentence)
    assert first["label"] == "这是一张显示停车场的航拍图像。停车场里停着十辆汽车，例如白色的汽车。道路两旁生长着一些树木。"
    assert first["task"] == "description" and first["prompt"] in DESCRIPTION_PROMPTS
    assert first["caption_en"] == RSICAP[0]["text_output"] and len(train) == 2
    caption = next(r for r in test if r["task"] == "caption" and r["img"].endswith("P1000_0001.png"))
    assert caption["label"] == "这是一张高分辨率航拍图像。一条道路穿过住宅区。" == caption["references"][0]
    closed = {r["question_en"]: (r["prompt"], r["label"], r["qtype"]) for r in test if r["task"] == "vqa"}
    assert closed == {
        "Does this image contains trees?": ("这张图像中有树木吗？", "是", "presence"),
        "How many cars are there in this image?": ("这张图像中有多少辆汽车？", "2", "count"),
        "Is this image a rural or urban scene?": ("这张图像是农村场景还是城市场景？", "城市", "scene"),
        "Is the area covered by road greater than that of the parking lot in this image?":
            ("这张图像中道路覆盖的面积是否大于停车场？", "否", "area_comp"),
        "How many small vehicles in the image?": ("图像中有多少辆小型车辆？", "超过100", "count"),
        "Are there any buildings in this image?": ("这张图像中有建筑物吗？", "否", "presence")}
    opened = {r["answer_en"]: (r["label"], r["qtype"]) for r in test if r["task"] == "vqa_open"}
    assert opened == {"A lot of.": ("很多。", "quantity"), "White.": ("白色。", "color")}
    # closed answers never reach the LLM; every distinct sentence is asked once
    assert sorted(srv.asked) == sorted(REPLIES) and "Yes" not in " ".join(srv.asked)
    registry = load(tmp_path / "data" / "splits.json")
    (source,) = registry["sources"].values()
    assert sorted((Path(k).name, v[3]) for k, v in source["files"].items()) == [
        ("P0001_0001.png", "train"), ("P0002_0002.png", "train"), ("P1000_0001.png", "test"), ("P1000_0002.png", "test")]
    assert "train: 2 images, 2 records" in err and "test: 2 images, 10 records" in err


def test_the_evaluation_reads_rsieval_as_captions_and_scored_questions(tmp_path, capsys, srv):
    dataset(tmp_path)
    assert run(capsys, tmp_path, srv)[0] == 0
    es = load_eval_set(tmp_path / "data" / "rsgpt" / "rsieval_test.json")
    assert es.tasks == ["caption", "vqa"]
    assert sorted(len(im.references) for im in es.caption_images) == [1, 1]
    assert sorted((q.label, q.kind) for q in es.questions) == [
        ("2", "count"), ("否", "yesno"), ("否", "yesno"), ("城市", "rural_urban"), ("是", "yesno"), ("超过100", "count")]
    assert es.skipped == {"vqa_open": 2}


def test_a_rerun_asks_and_writes_nothing(tmp_path, capsys, srv):
    dataset(tmp_path)
    assert run(capsys, tmp_path, srv)[0] == 0
    before, srv.asked = snapshot(tmp_path / "data"), []
    rc, err = run(capsys, tmp_path, srv)
    assert rc == 0 and "up to date" in err, err
    assert srv.asked == [] and snapshot(tmp_path / "data") == before


def test_a_sentence_failing_every_round_leaves_its_record_out_and_a_rerun_asks_only_for_it(tmp_path, capsys):
    dataset(tmp_path)
    bad = normalise("Two ships are docked at the harbor.")
    srv = Scripted(frozenset({bad}))
    try:
        rc, err = run(capsys, tmp_path, srv)
        lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        assert rc == 2 and len(lines) == 1 and "1 texts still not translated" in lines[0], err
        out = tmp_path / "data" / "rsgpt"
        assert [r["caption_en"] for r in load(out / "rsicap_train.json")] == [RSICAP[0]["text_output"]]
        (failure,) = load(out / "failures.json")
        assert failure["image"] == "P0002_0002.png"
        assert failure["sentences"][0]["sentence"] == "Two ships are docked at the harbor."
        assert "English left untranslated" in failure["sentences"][0]["problem"]
        srv.bad, srv.asked = set(), []
        rc, err = run(capsys, tmp_path, srv)
        assert rc == 0, err
        assert srv.asked == [bad] and len(load(out / "rsicap_train.json")) == 2 and not (out / "failures.json").exists()
    finally:
        srv.close()


def test_a_dry_run_estimates_and_writes_nothing(tmp_path, capsys, srv):
    dataset(tmp_path)
    rc, err = run(capsys, tmp_path, srv, "--dry_run")
    assert rc == 0 and f"{len(REPLIES)} distinct English sentences" in err and "would translate" in err, err
    assert srv.asked == [] and not (tmp_path / "data").exists() and not (tmp_path / "cache.sqlite").exists()


def test_only_one_part(tmp_path, capsys, srv):
    dataset(tmp_path)
    (tmp_path / "RSGPT" / "dataset" / "RSICap" / "captions.json").unlink()
    rc, err = run(capsys, tmp_path, srv, "--only", "rsieval")
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "data" / "rsgpt").glob("r*.json")) == ["rsieval_test.json"]


def _write(root: Path, part: str, obj) -> None:
    folder, fname = ("RSICap", "captions.json") if part == "rsicap" else ("RSIEval", "annotations.json")
    (root / folder / fname).write_text(obj if isinstance(obj, str) else json.dumps(obj))


BROKEN = {
    "missing file": (lambda r: (r / "RSIEval" / "annotations.json").unlink(), "--only rsicap"),
    "empty file": (lambda r: _write(r, "rsicap", ""), "not an RSGPT annotation file"),
    "malformed JSON": (lambda r: _write(r, "rsicap", "{\"annotations\": ["), "malformed JSON"),
    "not the annotations object": (lambda r: _write(r, "rsicap", RSICAP), "expected {\"annotations\": [...]}"),
    "no annotations": (lambda r: _write(r, "rsieval", {"annotations": []}), "no annotations"),
    "caption missing": (lambda r: _write(r, "rsicap", {"annotations": [{"filename": "P0001_0001.png"}]}),
                        "annotation 0 has no 'text_output'"),
    "filename a path": (lambda r: _write(r, "rsieval", {"annotations": [{**RSIEVAL[0], "filename": "../x.png"}]}),
                        "is not a file name"),
    "qa_pairs not a list": (lambda r: _write(r, "rsieval", {"annotations": [{**RSIEVAL[0], "qa_pairs": {}}]}),
                            "'qa_pairs' must be a list"),
    "question without type": (lambda r: _write(r, "rsieval", {"annotations": [
        {**RSIEVAL[0], "qa_pairs": [{"question": "Is it?", "answer": "Yes."}]}]}), "qa_pairs[0] has no 'type'"),
    "image missing": (lambda r: (r / "RSIEval" / "images" / "P1000_0002.png").unlink(), "P1000_0002.png not found"),
    "images folder missing": (lambda r: [p.unlink() for p in (r / "RSICap" / "images").iterdir()]
                              and (r / "RSICap" / "images").rmdir(), "no such folder"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_inputs_are_one_line_and_write_nothing(tmp_path, capsys, srv, kind):
    root = dataset(tmp_path)
    damage, says = BROKEN[kind]
    damage(root)
    rc, err = run(capsys, tmp_path, srv)
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 2 and len(lines) == 1 and says in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "data").exists() and srv.asked == []


def test_closed_answers_by_rule():
    assert [count_answer(a) for a in ("Ten.", "12", "There are seven planes in the image.", "One.", "A lot of.",
                                       "twenty-two", "one on the left and two on the right")] == [
        "10", "12", "7", "1", None, "22", None]
    assert [closed_answer(a) for a in ("Yes.", "no", "rural", "more than 100", "Color image.")] == [
        ("是", "yesno"), ("否", "yesno"), ("农村", "rural_urban"), ("超过100", "count"), None]
    assert split_sentences("A road, i.e. a lane. The U.S. style. 3.5 m wide! Done") == [
        "A road, i.e. a lane.", "The U.S. style.", "3.5 m wide!", "Done"]
