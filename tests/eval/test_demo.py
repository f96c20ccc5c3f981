"""The closing demo module (remoteglm.eval.demo) on the tiny checkpoint: output, labels, exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from remoteglm.eval.demo import image_labels, main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
FARMLAND = SAMPLE / "images" / "s2_farmland.png"


def test_labels_of_an_image_by_path_or_by_content(tmp_path):
    labels = image_labels(FARMLAND, [SAMPLE / "sample_train.json"])
    assert len(labels) == 7 and "有许多不同颜色的农田。" in labels and "农田" in labels
    copy = tmp_path / "renamed.png"
    shutil.copy(FARMLAND, copy)
    assert image_labels(copy, [SAMPLE / "sample_train.json"]) == labels
    assert image_labels(SAMPLE / "images" / "OSBS_029.tif", [SAMPLE / "sample_train.json"]) == []  # a test image


def test_demo_prints_answers_and_scores_and_exits_0_even_when_low(tiny_checkpoint, capsys):
    # The random tiny checkpoint stands in for both sides: it answers noise, so F1 is low, rc still 0.
    rc = main(["--base", str(tiny_checkpoint), "--run", str(tiny_checkpoint), "--image", str(FARMLAND),
               "--train_data", str(SAMPLE / "sample_train.json"), "--max_new_tokens", "8"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "   before (base model " in out and "   after  (fine-tuned " in out, out
    assert "closest training label of this image:" in out
    assert ">> char F1 vs the training label: before " in out and "-> after " in out, out
    # same checkpoint on both sides, greedy: the same answer and the same score
    scores = out.split(">> char F1 vs the training label: before ")[1].split(" (")[0]
    b, a = scores.split(" -> after ")
    assert b == a


def test_demo_image_without_labels_still_answers(tiny_checkpoint, capsys, tmp_path):
    data = tmp_path / "one.json"
    data.write_text(json.dumps([{"img": str(SAMPLE / "images" / "s2_town.png"), "prompt": "描述这张图片。",
                                 "label": "一个小城镇里有许多建筑。"}], ensure_ascii=False), encoding="utf-8")
    rc = main(["--base", str(tiny_checkpoint), "--run", str(tiny_checkpoint), "--image", str(FARMLAND),
               "--train_data", str(data), "--max_new_tokens", "4"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "has no label in" in out and "char F1 vs" not in out


def test_demo_bad_image_is_one_line_error(tiny_checkpoint, capsys, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    rc = main(["--base", str(tiny_checkpoint), "--run", str(tiny_checkpoint), "--image", str(bad),
               "--train_data", str(SAMPLE / "sample_train.json")])
    assert rc != 0
    assert "error:" in capsys.readouterr().err
