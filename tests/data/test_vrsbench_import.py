"""``python -m remoteglm.data.importers vrsbench``: VRSBench's referring files -> refer records.

The fixture files are written here in the released layout (huggingface.co/datasets/xiang709/VRSBench):
``VRSBench_EVAL_referring.json`` entries with the fields of the authors' prepare_eval_all.ipynb
("Prepare Referring") and ``VRSBench_train.json`` LLaVA-style conversations whose ``[refer]`` turns
carry the box; ``ground_truth`` is ``{<x1><y1><x2><y2>}`` in hundredths of the image's width and
height. Expected pixel boxes are worked out by hand below, not through remoteglm.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from remoteglm.data.importers import main
from scripted_server import ScriptedServer


def eval_entry(qid: int, image: str, question: str, gt: str, cls: str, unique: int) -> dict:
    """One entry as prepare_eval_all.ipynb writes it (obb_v1/obb_v2: its use_obb output)."""
    return {"image_id": image, "question": question, "ground_truth": gt, "dataset": "RSBench", "question_id": qid,
            "type": "ref", "unique": unique, "obj_corner": [0.25, 0.4, 0.33, 0.4, 0.33, 0.6, 0.25, 0.6],
            "obj_cls": cls, "obj_ids": [0], "size_group": "", "obb_v1": "{<29><50><8><20>|<0>}",
            "obb_v2": "{<25><40><33><60>|<0>}"}


def conversation(image: str, tag: str, question: str, answer: str) -> dict:
    return {"id": "dataset/v1.0", "image": image,
            "conversations": [{"from": "human", "value": f"<image>\n[{tag}] {question}"},
                              {"from": "gpt", "value": answer}]}


EVAL = [eval_entry(0, "00001_0000.png", "a large storage tank on the upper left", "{<25><40><33><60>}",
                   "storage-tank", 0),
        eval_entry(1, "00001_0000.png", "the small storage tank at the bottom right", "{<80><85><90><95>}",
                   "storage-tank", 0),
        eval_entry(2, "00002_0000.png", "the car in the middle", "{<45><45><55><52>}", "vehicle", 1)]
TRAIN = [conversation("00003_0000.png", "caption", "Could you describe the contents of this image for me?",
                      "The image, sourced from GoogleEarth, shows a harbor."),
         conversation("00003_0000.png", "refer", "could you tell me the location for <p>the car in the middle</p>?",
                      "{<10><70><30><90>}"),
         conversation("00003_0000.png", "vqa", "How many ships are there?", "2")]


def vrsbench(tmp_path: Path, eval_entries=EVAL, train=TRAIN) -> tuple[list, Path]:
    """A VRSBench folder as the release unpacks: the two files, Images_train/ and Images_val/ (512 x 512 PNGs
    of different content, as each image's registry entry is its content)."""
    root = tmp_path / "VRSBench"
    for folder, names in (("Images_val", ("00001_0000.png", "00002_0000.png")), ("Images_train", ("00003_0000.png",))):
        (root / folder).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (512, 512), (int(name[3:5]) * 40, 90, 30)).save(root / folder / name)
    (root / "VRSBench_EVAL_referring.json").write_text(json.dumps(eval_entries, indent=4))
    (root / "VRSBench_train.json").write_text(json.dumps(train))
    out = tmp_path / "data" / "vrsbench"
    return ["--root", root, "--out_dir", out, "--cache", tmp_path / "cache.sqlite", "--no_progress"], out


def run(capsys, *args) -> tuple[int, str]:
    rc = main(["vrsbench", *map(str, args)])
    return rc, capsys.readouterr().err


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_boxes_become_original_pixels_and_the_splits_are_vrsbench_s(tmp_path, capsys):
    args, out = vrsbench(tmp_path)
    rc, err = run(capsys, *args)
    assert rc == 0, err
    test, train = load(out / "vrsbench_refer_test.json"), load(out / "vrsbench_refer_train.json")
    assert not (out / "vrsbench_refer_val.json").exists()
    root = tmp_path / "VRSBench"
    assert {r["img"] for r in test} == {os.path.relpath(root / "Images_val" / f"0000{i}_0000.png", out) for i in (1, 2)}
    assert {r["img"] for r in train} == {os.path.relpath(root / "Images_train" / "00003_0000.png", out)}
    # {<25><40><33><60>} on 512 x 512: 25 * 5.12 = 128, 40 * 5.12 = 204.8, 33 * 5.12 = 168.96, 60 * 5.12 = 307.2
    first = next(r for r in test if r["expression_en"] == "a large storage tank on the upper left")
    assert first["label_boxes"] == [[128.0, 204.8, 168.96, 307.2]]
    assert first["kind"] == "refer" and first["label"] == "<box>" and first["prompt_boxes"] == []
    assert first["prompt"].count("<box>") == 0 and "a large storage tank on the upper left" in first["prompt"]
    assert first["category"] == "storage-tank" and first["unique"] == 0
    # the train file: only its [refer] turn; {<10><70><30><90>} -> 51.2, 358.4, 153.6, 460.8
    assert [(r["expression_en"], r["label_boxes"]) for r in train] == [
        ("the car in the middle", [[51.2, 358.4, 153.6, 460.8]])]
    assert "train: 1 images, 1 records" in err and "test: 2 images, 3 records" in err
    # without an endpoint: one line says the records keep English and what to pass
    assert sum("keep the English" in ln and "--base_url" in ln for ln in err.splitlines()) == 1
    registry = load(tmp_path / "data" / "splits.json")
    (source,) = registry["sources"].values()
    assert sorted((Path(k).name, v[3]) for k, v in source["files"].items()) == [
        ("00001_0000.png", "test"), ("00002_0000.png", "test"), ("00003_0000.png", "train")]


def test_the_size_comes_from_the_image_header(tmp_path, capsys):
    args, out = vrsbench(tmp_path)
    Image.new("RGB", (800, 600), (7, 7, 7)).save(tmp_path / "VRSBench" / "Images_val" / "00002_0000.png")
    rc, err = run(capsys, *args, "--only", "eval")
    assert rc == 0, err
    car = next(r for r in load(out / "vrsbench_refer_test.json") if r["expression_en"] == "the car in the middle")
    assert car["label_boxes"] == [[360.0, 270.0, 440.0, 312.0]]  # {<45><45><55><52>} of 800 x 600
    assert not (out / "vrsbench_refer_train.json").exists()


# The scripted endpoint's replies per English expression, in turn (the last one repeats).
REPLIES = {"a large storage tank on the upper left": ["左上方的一个大罐子。", "左上方的一个大储油罐。"],  # no category
           "the small storage tank at the bottom right": ["右下角的小储油罐。"],
           "the car in the middle": ["中间的汽车。"]}


class Scripted(ScriptedServer):
    def __init__(self):
        self.asked = []
        super().__init__(self.answer)

    def answer(self, body: dict, items: dict) -> str:
        out = {}
        for k, en in items.items():
            n = self.asked.count(en)
            self.asked.append(en)
            out[k] = REPLIES[en][min(n, len(REPLIES[en]) - 1)]
        return json.dumps(out, ensure_ascii=False)


def test_expressions_are_translated_through_an_endpoint_and_a_rerun_asks_and_writes_nothing(tmp_path, capsys):
    args, out = vrsbench(tmp_path)
    srv = Scripted()
    endpoint = ["--base_url", srv.base_url, "--model", "m", "--batch_size", "1", "--retries", "0"]
    try:
        rc, err = run(capsys, *args, *endpoint)
        assert rc == 0, err
        prompts = {r["expression_en"]: r["prompt"] for r in load(out / "vrsbench_refer_test.json")}
        assert prompts == {"a large storage tank on the upper left": "请框出图中左上方的一个大储油罐的位置。",
                           "the small storage tank at the bottom right": "请框出图中右下角的小储油罐的位置。",
                           "the car in the middle": "请框出图中中间的汽车的位置。"}
        assert [r["prompt"] for r in load(out / "vrsbench_refer_train.json")] == ["请框出图中中间的汽车的位置。"]
        # the reply without the category (储油罐) was refused and asked again; the car, in both files, asked once
        assert sorted(srv.asked) == sorted([*REPLIES, "a large storage tank on the upper left"])
        assert "3 distinct English expressions: 0 from cache, 3 new, 0 failed" in err
        assert "keep the English" not in err and not (out / "failures.json").exists()
        before, srv.asked = snapshot(tmp_path / "data"), []
        rc, err = run(capsys, *args, *endpoint)  # the same command again
        assert rc == 0, err
        assert srv.asked == [] and "3 from cache, 0 new" in err and "up to date" in err
        assert snapshot(tmp_path / "data") == before
    finally:
        srv.close()


def test_a_rerun_without_an_endpoint_writes_nothing(tmp_path, capsys):
    args, out = vrsbench(tmp_path)
    assert run(capsys, *args)[0] == 0
    before = snapshot(tmp_path / "data")
    rc, err = run(capsys, *args)
    assert rc == 0 and "up to date" in err, err
    assert snapshot(tmp_path / "data") == before


def test_a_dry_run_estimates_and_writes_nothing(tmp_path, capsys):
    args, out = vrsbench(tmp_path)
    srv = Scripted()
    try:
        rc, err = run(capsys, *args, "--base_url", srv.base_url, "--model", "m", "--dry_run")
    finally:
        srv.close()
    assert rc == 0 and "would translate 3 English expressions" in err, err
    assert srv.asked == [] and not (tmp_path / "data").exists() and not (tmp_path / "cache.sqlite").exists()


def _entry(gt: str) -> list:
    return [EVAL[0], {**EVAL[2], "ground_truth": gt}]


BROKEN = {
    "missing eval file": (lambda root: (root / "VRSBench_EVAL_referring.json").unlink(), "--eval_file"),
    "missing train file": (lambda root: (root / "VRSBench_train.json").unlink(), "--only eval"),
    "empty file": (lambda root: (root / "VRSBench_EVAL_referring.json").write_text(""), "is empty"),
    "no entries": (lambda root: (root / "VRSBench_EVAL_referring.json").write_text("[]"), "no entries"),
    "not a list": (lambda root: (root / "VRSBench_EVAL_referring.json").write_text(json.dumps({"x": EVAL})),
                   "a JSON list"),
    "entry without its fields": (lambda root: (root / "VRSBench_EVAL_referring.json").write_text(
        json.dumps([EVAL[0], {"image_id": "00002_0000.png", "question": "the car"}])), "entry 1 has no 'ground_truth'"),
    "image missing": (lambda root: (root / "Images_val" / "00002_0000.png").unlink(), "00002_0000.png not found"),
    "box outside the image": (lambda root: (root / "VRSBench_EVAL_referring.json").write_text(
        json.dumps(_entry("{<90><10><130><40>}"))), "lies outside the 512 x 512 image"),
    "degenerate box": (lambda root: (root / "VRSBench_EVAL_referring.json").write_text(
        json.dumps(_entry("{<92><0><96><0>}"))), "empty or reversed"),
    "unparseable ground truth": (lambda root: (root / "VRSBench_EVAL_referring.json").write_text(
        json.dumps(_entry("{<45><45><55>}"))), "not a box {<x1><y1><x2><y2>}"),
    "train turn without its box": (lambda root: (root / "VRSBench_train.json").write_text(json.dumps(
        [conversation("00003_0000.png", "refer", "could you tell me the location for <p>the car</p>?", "left")])),
        "not a box {<x1><y1><x2><y2>}"),
    "two boxes for one expression": (lambda root: (root / "VRSBench_train.json").write_text(json.dumps(
        [conversation("00003_0000.png", "refer", "could you tell me the location for <p>the car</p>?",
                      "{<10><70><30><90>}{<40><70><50><90>}")])), "is not a box {<x1><y1><x2><y2>} (one"),
    "train file without refer turns": (lambda root: (root / "VRSBench_train.json").write_text(
        json.dumps(TRAIN[:1])), "no [refer] conversation"),
    "train entry of another shape": (lambda root: (root / "VRSBench_train.json").write_text(
        json.dumps([{"image": "00003_0000.png", "question": "x"}])), "entry 0 is not"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_inputs_are_one_line_and_write_nothing(tmp_path, capsys, kind):
    args, out = vrsbench(tmp_path)
    damage, says = BROKEN[kind]
    damage(tmp_path / "VRSBench")
    rc, err = run(capsys, *args)
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 2 and len(lines) == 1 and says in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "data").exists()


def test_bad_boxes_are_counted_and_left_out_only_when_asked(tmp_path, capsys):
    entries = [*EVAL, {**EVAL[2], "question": "the bus", "ground_truth": "{<92><0><96><0>}"},
               {**EVAL[2], "question": "the truck", "ground_truth": "{<10><0><14><0>}"}]
    args, out = vrsbench(tmp_path, entries)
    rc, err = run(capsys, *args)
    assert rc == 2 and "2 entries have such a box" in err and "--skip_bad_boxes" in err, err
    rc, err = run(capsys, *args, "--skip_bad_boxes")
    assert rc == 0, err
    assert {r["expression_en"] for r in load(out / "vrsbench_refer_test.json")} == {e["question"] for e in EVAL}
    assert "2 entries left out (--skip_bad_boxes)" in err
