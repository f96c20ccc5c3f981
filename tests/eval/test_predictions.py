"""Re-scoring a saved answers file (``--predictions``) without a model: a hand-written file of the
sample's test images scored by hand, and each kind of bad file refused in one line before anything
is written."""

import json
from pathlib import Path

import pytest

from remoteglm.eval.evaluate import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
TEST = SAMPLE / "sample_test.json"
CAPTION = "描述这张图片。"
OSBS, YELL = SAMPLE / "images" / "OSBS_029.tif", SAMPLE / "images" / "YELL_road.png"


def _classify_prompt() -> str:
    return next(r["prompt"] for r in json.loads(TEST.read_text(encoding="utf-8")) if "类别" in r["prompt"])


def _lines(tmp_path, rows, name="tuned.jsonl") -> Path:
    f = tmp_path / name
    f.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return f


def _hand_rows():
    cls = _classify_prompt()
    return [  # each caption is one of the image's references; one class right, one wrong
        {"key": "k1", "img": str(OSBS), "prompt": CAPTION, "answer": "这个区域散布着许多绿色的树木。"},
        {"key": "k2", "img": str(YELL), "prompt": CAPTION, "answer": "一条弯曲的道路穿过森林。"},
        {"key": "k3", "img": str(OSBS), "prompt": cls, "answer": "森林"},
        {"key": "k4", "img": str(YELL), "prompt": cls, "answer": "河流"},
    ]


def test_hand_written_answers_scored_by_hand(tmp_path, capsys):
    f = _lines(tmp_path, _hand_rows())
    rc = main(["--predictions", str(f), "--data", str(TEST), "--out", str(tmp_path / "out")])
    assert rc == 0
    captured = capsys.readouterr()
    assert "loading" not in captured.err  # no model
    m = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    (run,) = m["models"]
    assert run["label"] == "tuned" and run["checkpoint"] is None and run["predictions"] == str(f.resolve())
    for level in ("word", "char"):  # each answer equals a reference of its image: every BLEU is 1
        assert [run["caption"][level][f"BLEU-{n}"] for n in (1, 2, 3, 4)] == pytest.approx([1, 1, 1, 1])
    c = run["classification"]
    assert (c["n"], c["correct"], c["accuracy"]) == (2, 1, 0.5)
    assert [im["answers"]["tuned"]["class_pred"] for im in m["images"]] == ["森林", "河流"]
    assert "scene classification accuracy" in captured.out and "50.0%  (1/2" in captured.out
    assert m["generation"]["predictions"] == [str(f.resolve())]
    assert "saved answers" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")


def test_extra_and_repeated_identical_answers_are_fine(tmp_path):
    rows = _hand_rows()
    extra = {"img": str(OSBS), "prompt": "别的问题？", "answer": "无关"}  # a prompt this evaluation does not ask
    f = _lines(tmp_path, [*rows, rows[0], extra])
    assert main(["--predictions", str(f), "--data", str(TEST), "--out", str(tmp_path / "out"), "--labels", "x"]) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert m["models"][0]["label"] == "x" and m["models"][0]["classification"]["correct"] == 1


def _bad(tmp_path, name, rows=None, text=None):
    f = tmp_path / name
    if text is not None:
        f.write_text(text, encoding="utf-8")
    elif rows is not None:
        _lines(tmp_path, rows, name)
    return f


@pytest.mark.parametrize("name, make, message", [
    ("gone.jsonl", lambda rows: None, "answers file not found: {f}"),
    ("empty.jsonl", lambda rows: "", "{f}: no answers in it"),
    ("cut.jsonl", lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + '{"img": "a', "{f}, line 5: not a JSON object"),
    ("list.jsonl", lambda rows: "[1, 2]\n", "{f}, line 1: not a JSON object"),
    ("noanswer.jsonl", lambda rows: json.dumps({"img": "a.png", "prompt": "p"}) + "\n",
     '{f}, line 1: needs "img", "prompt" and "answer" strings'),
    ("short.jsonl", lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:3]),
     "{f} has no answer for 1 of 4 prompts (e.g. image " + str(YELL)),
    ("two_runs.jsonl", lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                            for r in [*rows, dict(rows[2], answer="湿地")]),
     "{f}, line 5: a second, different answer for image " + str(OSBS)),
])
def test_bad_predictions_file_is_one_line(tmp_path, capsys, name, make, message):
    text = make(_hand_rows())
    f = _bad(tmp_path, name, text=text) if text is not None else tmp_path / name
    out = tmp_path / "out"
    rc = main(["--predictions", str(f), "--data", str(TEST), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert message.format(f=f) in err, err
    assert not out.exists()  # refused before anything was written


def test_predictions_and_a_checkpoint_exclude_each_other(tmp_path, capsys):
    f = _lines(tmp_path, _hand_rows())
    with pytest.raises(SystemExit) as e:
        main(["--predictions", str(f), "--from_pretrained", str(tmp_path), "--data", str(TEST)])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
