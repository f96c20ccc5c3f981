"""Grounding records of a fine-tune JSON (kind refer / identify / grounded / detect), re-scored from a
hand-written answers log whose boxes are in a family's own text (written with its codec): the
numbers equal the hand-computed ones, the report draws the boxes, and a log with no family is
refused in one line before anything is written."""

import json
import re
from pathlib import Path

import pytest

from remoteglm.boxes import Box
from remoteglm.eval.evaluate import main
from remoteglm.eval.report import thumbnail_data_uri
from remoteglm.registry import family_named

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "data" / "sample" / "images"
OSBS, SOAP, YELL = IMAGES / "OSBS_029.tif", IMAGES / "SOAP_061.png", IMAGES / "YELL_road.png"  # 400², 400², 512x424
REFER = "请框出图中的树。"


def _data(tmp_path) -> Path:
    recs = [
        {"img": str(OSBS), "kind": "refer", "prompt": REFER, "label": "<box>", "label_boxes": [[0, 0, 100, 100]]},
        {"img": str(SOAP), "kind": "refer", "prompt": REFER, "label": "<box>", "label_boxes": [[100, 100, 200, 200, "树"]]},
        {"img": str(YELL), "kind": "refer", "prompt": REFER, "label": "<box>", "label_boxes": [[10, 10, 60, 60]]},
        {"img": str(OSBS), "kind": "detect", "prompt": "框出所有的树。", "label": "<box><box>",
         "label_boxes": [[0, 0, 100, 100], [200, 200, 300, 300]]},
        {"img": str(SOAP), "kind": "identify", "prompt": "描述<box>中的区域。", "label": "一片茂密的绿色树林。",
         "prompt_boxes": [[40, 40, 120, 120]]},
        {"img": str(YELL), "kind": "grounded", "prompt": "描述这张图并框出物体。", "label": "一条道路<box>穿过两片树林<box><box>。",
         "label_boxes": [[0, 200, 512, 260], [0, 0, 200, 190], [300, 270, 500, 420]]},
    ]
    f = tmp_path / "vrsbench_refer_test.json"  # the name says VRSBench: its anchors are shown
    f.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    return f


def _answers(tmp_path, family="qwen3_vl", record_family=False) -> tuple[Path, list[list[float]]]:
    codec = family_named(family).box_codec()
    enc = lambda boxes, size: codec.encode([Box(*b) for b in boxes], size)  # noqa: E731
    rows = [  # IoU 0.5, IoU 1, no box (a parse failure); detect: 1 hit, 1 duplicate, 1 miss
        (OSBS, REFER, enc([[0, 0, 100, 50]], (400, 400))),
        (SOAP, REFER, "目标在这里：" + enc([[100, 100, 200, 200]], (400, 400))),
        (YELL, REFER, "图中没有树。"),
        (OSBS, "框出所有的树。", enc([[0, 0, 100, 100], [0, 0, 100, 100], [350, 350, 390, 390]], (400, 400))),
        (SOAP, "描述" + enc([[40, 40, 120, 120]], (400, 400)) + "中的区域。", "一片茂密的绿色树林。"),
        # the words right, the boxes in the family's text taken out before scoring
        (YELL, "描述这张图并框出物体。", "一条道路" + enc([[0, 200, 512, 260]], (512, 424)) + "穿过两片树林"
         + enc([[0, 0, 200, 190], [300, 270, 500, 420]], (512, 424)) + "。"),
    ]
    lines = []
    for img, prompt, answer in rows:
        row = {"img": str(img), "prompt": prompt, "answer": answer}
        if record_family:
            row["family"] = family
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    f = tmp_path / "tuned.jsonl"
    f.write_text("".join(lines), encoding="utf-8")
    return f


@pytest.mark.parametrize("family", ["qwen3_vl", "glm4v", "visualglm"])
def test_grounding_rescored_by_hand(tmp_path, capsys, family):
    data, f = _data(tmp_path), _answers(tmp_path, family)
    out = tmp_path / "out"
    assert main(["--predictions", str(f), "--family", family, "--data", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    (run,) = m["models"]
    g = run["grounding"]
    assert (g["n"], g["parse_failures"]) == (3, 1)
    assert g["acc@0.5"] == pytest.approx(2 / 3) and g["acc@0.7"] == pytest.approx(1 / 3)
    assert g["mean_iou"] == pytest.approx((0.5 + 1 + 0) / 3, abs=0.01)  # within the family's grid rounding
    d = run["detection"]["detect"]
    assert (d["true_positives"], d["n_pred"], d["n_true"]) == (1, 3, 2)
    assert d["precision"] == pytest.approx(1 / 3) and d["recall"] == pytest.approx(1 / 2)
    assert run["region_caption"]["identify"]["char"]["BLEU-4"] == pytest.approx(1)
    assert run["region_caption"]["grounded"]["char"]["BLEU-4"] == pytest.approx(1)
    assert run["region_caption"]["grounded"]["word"]["BLEU-4"] == pytest.approx(1)
    assert "grounding" in m["tasks"] and run["family"] == family
    assert [r["ours"]["tuned"] for r in m["anchors"]["rows"]] == pytest.approx([200 / 3, 100 / 3, 200 / 3, 100 / 3])
    assert "Acc@0.5" in printed and "66.7%" in printed and "33.3%" in printed
    assert "detect: precision / recall" in printed


def test_report_draws_the_boxes(tmp_path):
    data, f = _data(tmp_path), _answers(tmp_path, record_family=True)  # the family the log records
    out = tmp_path / "out"
    assert main(["--predictions", str(f), "--data", str(data), "--out", str(out)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    boxed = re.findall(r'<img class="boxed" src="(data:image/jpeg;base64,[^"]+)"', page)
    assert len(boxed) == 6
    assert not {thumbnail_data_uri(p) for p in (OSBS, SOAP, YELL)} & set(boxed)
    assert len(set(boxed)) == 6  # each drawing differs: other boxes on each
    assert 'id="box-legend"' in page and "GeoChat 微调后 Acc@0.5" in page


def test_no_family_is_one_line(tmp_path, capsys):
    data, f = _data(tmp_path), _answers(tmp_path)
    out = tmp_path / "out"
    assert main(["--predictions", str(f), "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pass --family NAME" in err, err
    assert not out.exists()


def test_marker_count_mismatch_is_one_line(tmp_path, capsys):
    data = tmp_path / "bad.json"
    data.write_text(json.dumps([{"img": str(OSBS), "kind": "refer", "prompt": REFER, "label": "<box>",
                                 "label_boxes": [[0, 0, 10, 10], [5, 5, 20, 20]]}]), encoding="utf-8")
    f = _answers(tmp_path)
    assert main(["--predictions", str(f), "--family", "glm4v", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has 2 box(es) but its label has 1 <box> marker(s)" in err, err


def _qwen25_log(tmp_path, settings):
    """A Qwen2.5-VL log: boxes in pixels of the image after its resize at min/max pixels ``settings``."""
    codec = family_named("qwen2_5_vl").box_codec(**settings)
    rows = [(OSBS, codec.encode([Box(0, 0, 100, 100)], (400, 400))), (SOAP, "无"),
            (YELL, codec.encode([Box(10, 10, 60, 60)], (512, 424)))]
    f = tmp_path / "qwen.jsonl"
    f.write_text("".join(json.dumps({"img": str(i), "prompt": REFER, "answer": a, "family": "qwen2_5_vl",
                                     "box_settings": settings}) + "\n" for i, a in rows), encoding="utf-8")
    return f


def test_the_logged_resolution_decodes_qwen25_boxes(tmp_path, capsys):
    data = tmp_path / "refer.json"
    data.write_text(json.dumps([r for r in json.loads(_data(tmp_path).read_text(encoding="utf-8"))
                                if r["kind"] == "refer"], ensure_ascii=False), encoding="utf-8")
    settings = {"min_pixels": 3136, "max_pixels": 50176}  # 400 x 400 is resized to 224 x 224: not the original
    f = _qwen25_log(tmp_path, settings)
    assert main(["--predictions", str(f), "--data", str(data), "--out", str(tmp_path / "out")]) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    g, ious = m["models"][0]["grounding"], [r["answers"]["qwen"].get("iou") for r in m["grounding"]]
    assert (g["parse_failures"], g["acc@0.5"]) == (1, pytest.approx(2 / 3))
    assert ious[0] > 0.95 and ious[1] == 0 and ious[2] > 0.9  # within the resized grid's rounding
    bare = tmp_path / "bare.jsonl"  # the same log without its resolution: one line, nothing written
    bare.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "box_settings"}) + "\n"
                            for line in f.read_text(encoding="utf-8").splitlines()), encoding="utf-8")
    capsys.readouterr()
    assert main(["--predictions", str(bare), "--data", str(data), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "min/max pixels" in err and not (tmp_path / "o2").exists(), err


def test_checkpoint_answers_rescore_to_the_same_numbers(tiny_checkpoint, tmp_path):
    """A real (tiny VisualGLM) checkpoint: the prompts are written in its family's box text, its
    log records the family, and re-scoring that log without a model gives the same numbers."""
    data = _data(tmp_path)
    out = tmp_path / "run"
    assert main(["--from_pretrained", str(tiny_checkpoint), "--data", str(data), "--out", str(out), "--labels", "tiny",
                 "--max_new_tokens", "8", "--batch_size", "6", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in (out / "answers" / "tiny.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["family"] for r in rows} == {"visualglm"}
    asked = "描述" + family_named("visualglm").box_codec().encode([Box(40, 40, 120, 120)], (400, 400)) + "中的区域。"
    assert asked in {r["prompt"] for r in rows}
    first = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["models"][0]
    assert first["grounding"]["n"] == 3 and first["family"] == "visualglm"
    assert main(["--predictions", str(out / "answers" / "tiny.jsonl"), "--data", str(data), "--out",
                 str(tmp_path / "again"), "--labels", "tiny"]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text(encoding="utf-8"))["models"][0]
    for k in ("grounding", "detection", "region_caption"):
        assert again[k] == first[k]
