"""VQA and folder-per-class scene sets through `python -m remoteglm.eval` with the tiny random
model: metrics.json and the terminal agree with what the answer logs imply, GeoChat's anchors
stand beside ours, the reports open in headless Chromium, reruns reuse the logs, the leakage
guard and bad labels stop before a model is loaded. Also: loading mixed files and benchmark
detection."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from remoteglm.errors import RemoteGLMError
from remoteglm.eval.anchors import ANCHORS, anchor_table, detect_benchmark
from remoteglm.data.instructions import classify_prompt
from remoteglm.eval.classify import UNPARSED, ClassParser
from remoteglm.eval.evalset import load_eval_set
from remoteglm.eval.evaluate import main
from remoteglm.eval.report import render_report
from remoteglm.eval.normalize import normalize_answer
from remoteglm.eval.vqa import QTYPES, expected_value
from tests.browser import headless_chrome

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "data" / "sample" / "images"
CLASSES = ["农田", "住宅区", "海洋", "海滩", "湿地"]
SCENE_FILES = {"农田": ["s2_farmland.png", "SOAP_031.png"], "住宅区": ["s2_town.png"], "海洋": ["s2_ocean.png"],
               "海滩": ["s2_coastline.png"], "湿地": ["s2_marsh.png"]}
# RSVQA-like questions: (image, qtype, question, label), every type, labels as the importer writes them
QUESTIONS = [
    ("s2_town.png", "presence", "图中有道路吗？", "是"),
    ("s2_town.png", "presence", "图中有桥梁吗？", "否"),
    ("s2_town.png", "count", "图中有多少栋建筑物？", "12"),
    ("s2_town.png", "rural_urban", "这是农村地区还是城市地区？", "城市"),
    ("s2_town.png", "area", "图中住宅区的总面积是多少？", "120平方米"),
    ("s2_farmland.png", "presence", "图中有水体吗？", "否"),
    ("s2_farmland.png", "comparison", "道路的数量是否多于建筑物的数量？", "否"),
    ("s2_farmland.png", "count", "图中有多少座桥？", "0"),
    ("s2_farmland.png", "rural_urban", "这是农村地区还是城市地区？", "农村"),
    ("s2_inlet.png", "comparison", "水体的面积是否大于农田的面积？", "是"),
    ("s2_inlet.png", "area", "图中建筑物的总面积是多少？", "0平方米"),
    ("s2_inlet.png", "count", "图中有多少栋建筑物？", "少于10"),  # an RSVQA bin, as the importer writes it
]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("MASTER_PORT", None)
    return env


def _run(args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """rsvqa_hr/rsvqa_hr_test.json (12 questions on 3 images, plus one conversation record, which is
    not evaluated) and UCMerced_LandUse/ucm_scene_test.json (6 images in one folder per class)."""
    root = tmp_path_factory.mktemp("vqa_scene")
    vqa_dir = root / "rsvqa_hr"
    (vqa_dir / "Images").mkdir(parents=True)
    for name in {q[0] for q in QUESTIONS}:
        shutil.copyfile(IMAGES / name, vqa_dir / "Images" / name)
    records = [{"img": f"Images/{img}", "prompt": q, "label": lab, "task": "vqa", "qtype": t}
               for img, t, q, lab in QUESTIONS]
    records.append({"img": "Images/s2_town.png", "prompt": "图中有什么？", "label": "房屋和道路。", "task": "conversation"})
    vqa = vqa_dir / "rsvqa_hr_test.json"
    vqa.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    scene_dir = root / "UCMerced_LandUse"
    records = []
    for cls, names in SCENE_FILES.items():
        (scene_dir / cls).mkdir(parents=True)
        for name in names:
            shutil.copyfile(IMAGES / name, scene_dir / cls / name)
            records.append({"img": f"{cls}/{name}", "prompt": classify_prompt(CLASSES), "label": cls, "task": "classify"})
    scene = scene_dir / "ucm_scene_test.json"
    scene.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return {"vqa": vqa, "scene": scene, "root": root}


def _evaluate(tiny, data: Path, out: Path):
    p = _run(["-m", "remoteglm.eval", "--from_pretrained", str(tiny), "--labels", "tiny", "--data", str(data),
              "--out", str(out), "--batch_size", "8", "--max_new_tokens", "16"])
    assert p.returncode == 0, p.stderr[-3000:]
    return p, json.loads((out / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def vqa_run(tiny_checkpoint, files, tmp_path_factory):
    out = tmp_path_factory.mktemp("vqa_out") / "eval"
    p, m = _evaluate(tiny_checkpoint, files["vqa"], out)
    return p, out, m


@pytest.fixture(scope="module")
def scene_run(tiny_checkpoint, files, tmp_path_factory):
    out = tmp_path_factory.mktemp("scene_out") / "eval"
    p, m = _evaluate(tiny_checkpoint, files["scene"], out)
    return p, out, m


def _logged(out: Path, label: str = "tiny") -> dict:
    """(resolved image, prompt) -> the answer in the run's answer log."""
    lines = (out / "answers" / f"{label}.jsonl").read_text(encoding="utf-8").splitlines()
    return {(str(Path(r["img"]).resolve()), r["prompt"]): r["answer"] for r in map(json.loads, lines)}


def test_vqa_numbers_are_what_the_logged_answers_imply(vqa_run, files):
    p, out, m = vqa_run
    assert m["tasks"] == ["vqa"] and m["n_questions"] == len(QUESTIONS) and m["n_images"] == 3
    assert m["images"] == [] and m["classes"] == []  # no captions, no scene classes in this file
    assert m["qtypes"] == list(QTYPES)
    logged = _logged(out)
    assert len(logged) == len({(img, q) for img, _, q, _ in QUESTIONS})
    (run,) = m["models"]
    assert run["caption"] == {} and "classification" not in run
    per_type = {t: [0, 0] for t in QTYPES}
    for q, (img, qtype, prompt, label) in zip(m["questions"], QUESTIONS):
        answer = logged[(str((files["vqa"].parent / "Images" / img).resolve()), prompt)]
        kind = {"presence": "yesno", "comparison": "yesno"}.get(qtype, qtype)
        got, want = normalize_answer(answer, kind), expected_value(label, kind)
        ok = got is not None and (float(got) <= 9 if label == "少于10" else got == want)
        assert (q["qtype"], q["prompt"], q["label"], q["kind"], q["expected"]) == (qtype, prompt, label, kind, want)
        assert q["answers"]["tiny"] == {"answer": answer, "normalized": got, "correct": ok}
        per_type[qtype][0] += 1
        per_type[qtype][1] += ok
    v = run["vqa"]
    for t, (n, correct) in per_type.items():
        assert (v["per_type"][t]["n"], v["per_type"][t]["correct"]) == (n, correct)
        assert v["per_type"][t]["accuracy"] == pytest.approx(correct / n)
    assert v["correct"] == sum(c for _, c in per_type.values()) and v["n"] == len(QUESTIONS)
    assert v["accuracy"] == pytest.approx(v["correct"] / len(QUESTIONS))
    assert v["average_accuracy"] == pytest.approx(sum(c / n for n, c in per_type.values()) / len(QTYPES))
    assert v["parsed"] == sum(q["answers"]["tiny"]["normalized"] is not None for q in m["questions"])
    # the anchors: RSVQA-HR from the file name, GeoChat's numbers beside ours
    a = m["anchors"]
    assert m["benchmark"] == a["benchmark"] == "RSVQA-HR" and "GeoChat" in a["source"]
    assert [(r["metric"], r["value"]) for r in a["rows"]] == [("presence", 58.45), ("comparison", 83.19)]
    for r in a["rows"]:
        assert r["ours"]["tiny"] == pytest.approx(v["per_type"][r["metric"]]["accuracy"] * 100)
    assert "not directly comparable" in a["note_en"] and "不能直接比较" in a["note_zh"]
    # the terminal: per-type table with OA and AA, the anchors beside ours, the record not evaluated
    assert "VQA accuracy (12 questions" in p.stdout and "rural_urban" in p.stdout
    assert f"{v['accuracy'] * 100:.1f}%" in p.stdout
    assert "RSVQA-HR presence: GeoChat 58.45% | ours: tiny" in p.stdout and "GeoChat 83.19%" in p.stdout
    assert "not directly comparable" in p.stdout
    assert "not evaluated: 1 record(s) of task 'conversation'" in p.stderr


def test_scene_numbers_are_what_the_logged_answers_imply(scene_run, files):
    p, out, m = scene_run
    assert m["tasks"] == ["classify"] and m["classes"] == CLASSES and m["n_questions"] == 0
    logged = _logged(out)
    parser = ClassParser(CLASSES)
    (run,) = m["models"]
    c = run["classification"]
    truth = [cls for cls, names in SCENE_FILES.items() for _ in names]
    assert [im["class_zh"] for im in m["images"]] == truth and all(im["references"] == [] for im in m["images"])
    matrix = [[0] * (len(CLASSES) + 1) for _ in CLASSES]
    prompt = classify_prompt(CLASSES)
    for im in m["images"]:
        answer = logged[(str(Path(im["path"]).resolve()), prompt)]
        pred, how = parser.parse(answer)
        assert im["answers"]["tiny"] == {"classify": answer, "class_pred": pred, "match": how}
        matrix[CLASSES.index(im["class_zh"])][CLASSES.index(pred) if pred else len(CLASSES)] += 1
    assert c["confusion"] == {"rows": CLASSES, "columns": CLASSES + [UNPARSED], "matrix": matrix}
    correct = sum(matrix[i][i] for i in range(len(CLASSES)))
    assert (c["n"], c["correct"]) == (6, correct) and c["accuracy"] == pytest.approx(correct / 6)
    for i, cls in enumerate(CLASSES):
        n = len(SCENE_FILES[cls])
        assert c["per_class"][cls] == {"n": n, "correct": matrix[i][i], "accuracy": pytest.approx(matrix[i][i] / n)}
    a = m["anchors"]
    assert m["benchmark"] == "UCM" and a["rows"][0]["value"] == 84.43
    assert a["rows"][0]["ours"]["tiny"] == pytest.approx(c["accuracy"] * 100)
    assert "scene classification accuracy" in p.stdout and f"({correct}/6" in p.stdout
    assert "UCM accuracy: GeoChat 84.43% | ours: tiny" in p.stdout and "not directly comparable" in p.stdout
    assert "BLEU" not in p.stdout  # no captions here


def test_reports_open_in_headless_chromium(vqa_run, scene_run, tmp_path):
    from selenium.webdriver.common.by import By

    for _, out, _ in (vqa_run, scene_run):
        text = (out / "report.html").read_text(encoding="utf-8")
        assert "<script" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    driver = headless_chrome(tmp_path)
    try:
        # VQA: per-type table, anchors with the caveat, examples with thumbnails, no caption tables
        _, out, m = vqa_run
        driver.get((out / "report.html").as_uri())
        assert driver.title == "RemoteGLM evaluation — rsvqa_hr_test / test"
        table = driver.find_element(By.ID, "vqa-accuracy")
        assert table.is_displayed()
        for t in QTYPES:
            assert t in table.text
        v = m["models"][0]["vqa"]
        assert f"{v['accuracy'] * 100:.1f}%" in table.text and f"{v['correct']}/{v['n']}" in table.text
        anchors = driver.find_element(By.ID, "anchors").text
        assert "58.45%" in anchors and "83.19%" in anchors and "GeoChat" in anchors
        assert f"{v['per_type']['presence']['accuracy'] * 100:.2f}%" in anchors
        note = driver.find_element(By.ID, "anchors-note").text
        assert "not directly comparable" in note and "不能直接比较" in note
        rows = driver.find_elements(By.CSS_SELECTOR, "#vqa-examples tr")
        assert len(rows) == 1 + len(QUESTIONS)  # at most 5 per type: all 12 here
        assert "图中有多少栋建筑物？" in driver.find_element(By.ID, "vqa-examples").text
        sizes = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert len(sizes) == len(QUESTIONS) and all(ok and w == 80 for ok, w in sizes)
        assert not driver.find_elements(By.ID, "caption-word") and not driver.find_elements(By.ID, "side-by-side")
        # scene: accuracy, anchors, per-class chart, confusion matrix, the images with their class answers
        _, out, m = scene_run
        driver.get((out / "report.html").as_uri())
        assert driver.find_element(By.ID, "accuracy").is_displayed()
        assert "84.43%" in driver.find_element(By.ID, "anchors").text
        assert "不能直接比较" in driver.find_element(By.ID, "anchors-note").text
        assert driver.find_element(By.ID, "per-class-chart").is_displayed()
        cm = driver.find_elements(By.CSS_SELECTOR, "table.cm")
        assert len(cm) == 1 and "unparsed" in cm[0].text and "湿地" in cm[0].text
        side = driver.find_element(By.ID, "side-by-side")
        assert len(side.find_elements(By.CSS_SELECTOR, "tr")) == 1 + 6 and "references" not in side.text
        assert not driver.find_elements(By.ID, "caption-word") and not driver.find_elements(By.ID, "vqa-accuracy")
        sizes = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert len(sizes) == 6 and all(ok and w == 160 for ok, w in sizes)
    finally:
        driver.quit()


def test_report_examples_cap_and_no_anchors(vqa_run, scene_run):
    _, _, m = vqa_run
    html = render_report(m, 160, examples=1)
    assert "Showing 5 of 12 questions" in html  # one per type
    html = render_report({**m, "anchors": None}, 160)
    assert 'id="anchors"' not in html and "GeoChat" not in html
    _, _, m = scene_run
    assert "Showing 5 of 6 images" in render_report(m, 160, examples=1)  # one per class
    assert 'id="side-by-side"' not in render_report(m, 160, examples=0)


def test_rerun_reuses_the_answer_logs(vqa_run, tiny_checkpoint, files, capsys):
    _, out, before = vqa_run
    log = (out / "answers" / "tiny.jsonl").read_text(encoding="utf-8")
    rc = main(["--from_pretrained", str(tiny_checkpoint), "--labels", "tiny", "--data", str(files["vqa"]),
               "--out", str(out), "--batch_size", "8", "--max_new_tokens", "16"])
    assert rc == 0
    assert (out / "answers" / "tiny.jsonl").read_text(encoding="utf-8") == log  # nothing generated again
    after = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert after["questions"] == before["questions"] and after["models"][0]["vqa"] == before["models"][0]["vqa"]
    assert "RSVQA-HR presence: GeoChat 58.45%" in capsys.readouterr().out
    # --benchmark none: the same numbers, no anchors
    rc = main(["--from_pretrained", str(tiny_checkpoint), "--labels", "tiny", "--data", str(files["vqa"]),
               "--out", str(out), "--batch_size", "8", "--max_new_tokens", "16", "--benchmark", "none"])
    assert rc == 0 and "GeoChat" not in capsys.readouterr().out
    quiet = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert quiet["anchors"] is None and quiet["benchmark"] is None and quiet["questions"] == before["questions"]
    assert "GeoChat" not in (out / "report.html").read_text(encoding="utf-8")


def test_leak_guard_covers_vqa_and_scene_images(tiny_checkpoint, files, tmp_path, capsys):
    train = tmp_path / "train.json"
    train.write_text(json.dumps([{"img": str(files["vqa"].parent / "Images" / "s2_inlet.png"), "prompt": "图中有河吗？",
                                  "label": "是", "task": "vqa", "qtype": "presence"}], ensure_ascii=False))
    rc = main(["--from_pretrained", str(tiny_checkpoint), "--data", str(files["vqa"]), "--train_data", str(train),
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "1 of 3 evaluation images are in the training data" in err
    assert "loading" not in err and not (tmp_path / "o").exists()
    # a renamed copy of a scene image in a training file is found too
    copy = tmp_path / "copy.png"
    shutil.copyfile(IMAGES / "s2_ocean.png", copy)
    train.write_text(json.dumps([{"img": str(copy), "prompt": "p", "label": "海洋", "task": "classify"}], ensure_ascii=False))
    rc = main(["--from_pretrained", str(tiny_checkpoint), "--data", str(files["scene"]), "--train_data", str(train),
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "1 of 6 evaluation images are in the training data" in err and "s2_ocean.png" in err


@pytest.mark.parametrize("record, message", [
    ({"label": "也许", "qtype": "presence"}, "has label '也许', which is not a yesno answer"),
    ({"label": "红色", "qtype": "colour"}, "give a qtype (presence, comparison, count, rural_urban, area)"),
    ({"label": "很多", "qtype": "count"}, "not a count answer"),
])
def test_bad_vqa_label_is_one_line(tiny_checkpoint, files, tmp_path, capsys, record, message):
    bad = files["vqa"].parent / "bad_test.json"
    bad.write_text(json.dumps([{"img": "Images/s2_town.png", "prompt": "图中有道路吗？", "task": "vqa", **record}],
                              ensure_ascii=False), encoding="utf-8")
    rc = main(["--from_pretrained", str(tiny_checkpoint), "--data", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "item 0 (VQA" in err and message in err, err


def test_nothing_left_to_evaluate(tiny_checkpoint, files, tmp_path, capsys):
    rc = main(["--from_pretrained", str(tiny_checkpoint), "--data", str(files["scene"]), "--no_classify",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing left to evaluate (classify turned off" in err


# ---- loading and detection without a model -------------------------------------------------------------
def test_mixed_file_loads_every_task(tmp_path):
    """Captions, scene classes, RSVQA questions and the instruction data's kinds in one file."""
    for name in ("a.png", "b.png", "c.png"):
        shutil.copyfile(IMAGES / "s2_town.png", tmp_path / name)
    prompt = classify_prompt(["农田", "住宅区"])
    records = [
        {"img": "a.png", "prompt": "描述这张图片。", "label": "许多房屋。", "task": "caption"},
        {"img": "a.png", "prompt": prompt, "label": "住宅区", "task": "classify"},
        {"img": "a.png", "prompt": "图中有房屋吗？", "label": "是", "task": "presence"},  # tasks.py: joins the VQA
        {"img": "a.png", "prompt": "图中有多少栋房屋？", "label": "图中有很多房屋。", "task": "count"},  # a sentence: not
        {"img": "a.png", "prompt": "房屋是什么颜色的？", "label": "红色", "task": "attribute"},
        {"img": "b.png", "prompt": prompt, "label": "湿地", "task": "classify"},  # a class the prompt does not list
        {"img": "c.png", "prompt": "这是农村还是城市？", "label": "城市", "task": "vqa", "qtype": "rural_urban"},
        {"img": "c.png", "prompt": "图中有多少栋房屋？", "label": "3", "task": "vqa"},  # no qtype: the label tells
    ]
    f = tmp_path / "mixed_test.json"
    f.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    es = load_eval_set(f)
    assert es.tasks == ["caption", "classify", "vqa"]
    assert [im.key for im in es.images] == ["a.png", "b.png", "c.png"]
    assert [im.key for im in es.caption_images] == ["a.png"] and es.images[0].references == ["许多房屋。"]
    assert es.classes == ["农田", "住宅区", "湿地"]  # the listed classes, then labels no prompt lists
    assert [(im.key, im.class_zh) for im in es.images] == [("a.png", "住宅区"), ("b.png", "湿地"), ("c.png", None)]
    assert [(q.qid, q.key, q.qtype, q.kind) for q in es.questions] == [
        ("q2", "a.png", "presence", "yesno"), ("q6", "c.png", "rural_urban", "rural_urban"), ("q7", "c.png", "count", "count")]
    assert es.skipped == {"count": 1, "attribute": 1}
    limited = load_eval_set(f, limit=2)
    assert [q.qid for q in limited.questions] == ["q2"]  # questions of the first two images only
    f.write_text(json.dumps(records[4:5], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(RemoteGLMError, match=r"no captions, .* to evaluate \(tasks in the file: attribute\)"):
        load_eval_set(f)


def test_benchmark_detection():
    assert detect_benchmark("data/rsvqa_hr/rsvqa_hr_test.json") == "RSVQA-HR"
    assert detect_benchmark("data/RSVQA-HR/test_zh.json") == "RSVQA-HR"
    assert detect_benchmark("data/x/RSVQAHR_test.json") == "RSVQA-HR"
    assert detect_benchmark("data/rsvqa_lr/rsvqa_lr_test.json") is None  # no anchor for LR
    assert detect_benchmark("data/ucm/ucm_scene_test.json") == "UCM"
    assert detect_benchmark("data/x/test.json", ["/data/UCMerced_LandUse/Images/forest/forest01.tif"]) == "UCM"
    assert detect_benchmark("data/ucm/dataset_ucm_zh.json") == "UCM"
    assert detect_benchmark("data/AID/aid_test.json") == "AID"
    assert detect_benchmark("data/x/test.json", ["/d/AID/Airport/airport_1.jpg"]) == "AID"
    assert detect_benchmark("data/said/sample_test.json") is None  # a word containing "aid" is not AID
    assert detect_benchmark("data/sample/sample_test.json", ["data/sample/images/x.png"]) is None
    assert set(ANCHORS) == {"UCM", "AID", "RSVQA-HR", "VRSBench"}
    runs = [{"label": "m", "classification": {"accuracy": 0.5}}]
    t = anchor_table("AID", runs)
    assert t["rows"][0]["value"] == 72.03 and t["rows"][0]["ours"] == {"m": 50.0}
    assert anchor_table("RSVQA-HR", runs) is None  # no VQA results to set beside
    assert anchor_table(None, runs) is None
