"""The evaluate command end to end: a tiny model overfit on the sample's test images against the
untrained one through `python -m remoteglm.eval --compare`, the HTML report in headless Chromium,
the leakage guard, bad input, resuming from the answer log, and both kinds of --data file."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from remoteglm.device import default_device
from remoteglm.eval.evaluate import main
from remoteglm.eval.evalset import load_eval_set
from tests.browser import headless_chrome

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
DATASET = SAMPLE / "dataset_sample_zh.json"
TEST_IMAGES = ["images/OSBS_029.tif", "images/YELL_road.png"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("MASTER_PORT", None)  # each process picks its own free port
    return env


def _run(args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def base_model(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint with ChatGLM's weight matrices at std 1/sqrt(hidden) instead of sat's
    0.02. At 0.02 a 64-wide random model attends almost uniformly and LoRA alone cannot make it
    repeat a caption within a test's time (measured: 300 steps still answer '' or '。'); at
    1/sqrt(hidden) 100 LoRA steps reproduce the training captions. The ViT, Q-Former and LM head
    are left as they are."""
    from remoteglm.model.layout import sat_weights_file

    out = tmp_path_factory.mktemp("eval_base") / "tiny-base"
    shutil.copytree(tiny_checkpoint, out)
    f = sat_weights_file(out)
    state = torch.load(f, map_location="cpu", weights_only=False)
    hidden = json.loads((out / "model_config.json").read_text())["hidden_size"]
    with torch.no_grad():
        for name, w in state["module"].items():
            if name.startswith("transformer.") and w.dim() == 2:
                w.mul_((hidden ** -0.5) / w.std())
    torch.save(state, f)
    return out


@pytest.fixture(scope="module")
def overfit(base_model, tmp_path_factory):
    """LoRA fine-tune on the two test images (one caption + the class each): (run dir, train json)."""
    tmp = tmp_path_factory.mktemp("eval_overfit")
    records = [r for r in json.loads((SAMPLE / "sample_test.json").read_text(encoding="utf-8"))
               if r["prompt"] == "描述这张图片。" or "类别" in r["prompt"]]
    first = {}
    for r in records:  # the first caption of each image and its class record
        first.setdefault((r["img"], "类别" in r["prompt"]), dict(r, img=str(SAMPLE / r["img"])))
    train = tmp / "overfit_train.json"
    train.write_text(json.dumps(list(first.values()), ensure_ascii=False), encoding="utf-8")
    assert len(first) == 4
    p = _run(["finetune_visualglm.py", "--from_pretrained", str(base_model), "--train_data", str(train),
              "--train_iters", "100", "--batch_size", "4", "--lr", "1e-2", "--lora_alpha", "10",
              "--save", str(tmp / "runs"), "--num_workers", "0", "--feature_cache", str(tmp / "features")])
    assert p.returncode == 0, p.stderr[-3000:]
    return Path((tmp / "runs" / "LAST_RUN").read_text().strip()), train


@pytest.fixture(scope="module")
def evaluated(base_model, overfit, tmp_path_factory):
    """The full evaluate command, base vs overfit, on the sample's test split."""
    run_dir, train = overfit
    out = tmp_path_factory.mktemp("eval_out") / "report"
    p = _run(["-m", "remoteglm.eval", "--compare", str(base_model), str(run_dir), "--labels", "base", "tuned",
              "--data", str(DATASET), "--split", "test", "--train_data", str(train), "--allow-leak",
              "--out", str(out), "--max_new_tokens", "32", "--batch_size", "2"])
    assert p.returncode == 0, p.stderr[-3000:]
    return p, out, json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def test_overfit_model_scores_higher_than_untrained(evaluated):
    p, out, m = evaluated
    base, tuned = m["models"]
    assert (base["label"], tuned["label"]) == ("base", "tuned")
    for level in ("word", "char"):
        for k in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"):
            assert tuned["caption"][level][k] > base["caption"][level][k], (level, k, base["caption"], tuned["caption"])
    assert tuned["classification"]["accuracy"] > base["classification"]["accuracy"]
    # every test image, all five references, both models' caption and class answers
    assert [im["key"] for im in m["images"]] == TEST_IMAGES
    for im in m["images"]:
        assert len(im["references"]) == 5
        assert set(im["answers"]) == {"base", "tuned"}
        assert all({"caption", "classify", "class_pred", "scores"} <= a.keys() for a in im["answers"].values())
    assert m["classes"] == ["农田", "住宅区", "海洋", "海滩", "湿地", "河流", "森林", "道路"]
    assert m["generation"]["decoding"] == "greedy"
    assert "nltk" in m["metric_notes"]["METEOR"] and "jieba" in m["metric_notes"]["word"]
    # the run went on past the guard because of --allow-leak, loudly, and the result says so
    assert m["leak"]["count"] == 2
    assert "WARNING" in p.stderr and "--allow-leak" in p.stderr
    assert "generate [tuned]" in p.stderr and "prompt/s" in p.stderr  # tqdm progress with rate / ETA
    assert "CIDEr-D" in p.stdout and "scene classification accuracy" in p.stdout


def test_report_opens_in_headless_chromium(evaluated, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    _, out, m = evaluated
    report = out / "report.html"
    text = report.read_text(encoding="utf-8")
    assert "<script" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    driver = headless_chrome(tmp_path)
    try:
        driver.get(report.as_uri())
        assert driver.title == "RemoteGLM evaluation — sample / test"
        for table_id in ("caption-word", "caption-char", "accuracy", "side-by-side"):
            assert driver.find_element(By.ID, table_id).is_displayed()
        word = driver.find_element(By.ID, "caption-word").text
        assert "词级" in word and "jieba" in word and "CIDEr-D" in word and "tuned" in word
        assert "字级" in driver.find_element(By.ID, "caption-char").text
        rows = driver.find_elements(By.CSS_SELECTOR, "#side-by-side tr")
        assert len(rows) == 1 + len(m["images"])
        assert "一条弯曲的道路穿过森林。" in rows[2].text  # a reference of YELL_road
        sizes = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(sizes) == 2 and all(ok and w == 160 and h > 100 for ok, w, h in sizes)
        assert driver.find_element(By.ID, "per-class-chart").is_displayed()
        assert len(driver.find_elements(By.CSS_SELECTOR, "table.cm")) == 2
        assert driver.find_element(By.ID, "leak-warning").is_displayed()
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    with Image.open(shot) as img:
        assert img.size[0] >= 1000
        assert len(img.convert("RGB").getcolors(1 << 24)) > 500  # tables, text and photos, not a blank page


def test_leak_guard_refuses(tiny_checkpoint, tmp_path):
    # the CLI, as a user runs it: one line, exit 2, before any model is loaded, nothing written
    out = tmp_path / "out"
    p = _run(["-m", "remoteglm.eval", "--from_pretrained", str(tiny_checkpoint), "--data", str(DATASET),
              "--train_data", str(SAMPLE / "sample_test.json"), "--out", str(out)])
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: "), p.stderr
    assert "2 of 2 evaluation images are in the training data" in p.stderr and "--allow-leak" in p.stderr
    assert "loading" not in p.stderr and not out.exists()


def test_leak_guard_finds_renamed_copies(tiny_checkpoint, tmp_path, capsys):
    copy = tmp_path / "renamed.tif"
    shutil.copyfile(SAMPLE / "images" / "OSBS_029.tif", copy)
    train = tmp_path / "train.json"
    train.write_text(json.dumps([{"img": str(copy), "prompt": "描述这张图片。", "label": "树木。"}], ensure_ascii=False))
    rc = main(["--from_pretrained", str(tiny_checkpoint), "--data", str(DATASET), "--train_data", str(train),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "1 of 2 evaluation images are in the training data" in err and "OSBS_029.tif" in err


def test_no_leak_with_the_real_training_split():
    from remoteglm.eval.runner import check_leakage

    es = load_eval_set(DATASET, "test")
    assert check_leakage(es, [str(SAMPLE / "sample_train.json"), str(SAMPLE / "sample_val.json")], allow=False) is None
    assert check_leakage(es, [str(DATASET)], allow=False) is None  # a Karpathy file: its train split


@pytest.mark.parametrize("args, message", [
    (["--data", "missing.json"], "evaluation data not found: missing.json"),
    (["--data", str(DATASET), "--split", "nosuch"], "no images with references in split 'nosuch' (splits in the file: test, train, val)"),
    (["--data", str(DATASET), "--labels", "one", "two"], "--labels needs 1 name(s)"),
    (["--data", str(DATASET), "--classify_prompt", "哪一类？"], "must contain {classes}"),
    (["--data", str(DATASET), "--limit", "0"], "--limit must be >= 1"),
    (["--data", str(DATASET), "--image_root", "/nonexistent"], "pass --image_root DIR"),
])
def test_bad_input_is_one_line(tiny_checkpoint, args, message, capsys, tmp_path):
    rc = main(["--from_pretrained", str(tiny_checkpoint), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_checkpoint_file_instead_of_directory(tiny_checkpoint, capsys, tmp_path):
    pt = next(tiny_checkpoint.glob("*/mp_rank_00_model_states.pt"))
    rc = main(["--from_pretrained", str(pt), "--data", str(DATASET), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and f"pass the checkpoint directory instead: {tiny_checkpoint}" in err


def test_finetune_json_gives_the_same_images_as_the_dataset():
    ds = load_eval_set(DATASET, "test")
    ft = load_eval_set(SAMPLE / "sample_test.json")
    assert [im.path.resolve() for im in ft.images] == [im.path.resolve() for im in ds.images]
    for a, b in zip(ft.images, ds.images):
        assert a.references == b.references  # the joined "详细描述" paragraph is not a sixth reference
        assert a.class_zh == b.class_zh and a.classify_prompt == b.classify_prompt
    assert ft.classes == ds.classes
    assert len(load_eval_set(DATASET, "train", limit=3).images) == 3


def test_rerun_reuses_the_answer_log(evaluated, base_model, overfit, capsys):
    _, out, before = evaluated
    run_dir, train = overfit
    logs = {f.name: f.read_text(encoding="utf-8") for f in (out / "answers").glob("*.jsonl")}
    assert set(logs) == {"base.jsonl", "tuned.jsonl"} and all(len(t.splitlines()) == 4 for t in logs.values())
    rc = main(["--compare", str(base_model), str(run_dir), "--labels", "base", "tuned", "--data", str(DATASET),
               "--train_data", str(train), "--allow-leak", "--out", str(out), "--max_new_tokens", "32", "--batch_size", "2"])
    assert rc == 0
    assert {f.name: f.read_text(encoding="utf-8") for f in (out / "answers").glob("*.jsonl")} == logs  # nothing regenerated
    after = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert [r["caption"] for r in after["models"]] == [r["caption"] for r in before["models"]]
    assert after["images"] == before["images"]
    err = capsys.readouterr().err.splitlines()  # each checkpoint through the front ends' one start-up
    device = default_device()
    for path in (base_model, run_dir):
        start = err.index(f"loading {path} on {device} ...")
        assert err[start + 1].startswith("ChatGLM weights: ") and f"on {device}" in err[start + 1]


def test_guard_reads_the_training_files_a_run_folder_recorded(tiny_checkpoint, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run)
    (run / "train_summary.json").write_text(json.dumps({"train_data": [str(SAMPLE / "sample_test.json")]}))
    rc = main(["--from_pretrained", str(run), "--data", str(DATASET), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "2 of 2 evaluation images are in the training data" in err and "sample_test.json" in err


def test_predictions_rescore_equals_the_run(evaluated, tmp_path, capsys):
    """The answer logs the run wrote, re-scored with --predictions and no checkpoint, give its numbers."""
    _, out, before = evaluated
    logs = [str(out / "answers" / "base.jsonl"), str(out / "answers" / "tuned.jsonl")]
    rc = main(["--predictions", *logs, "--data", str(DATASET), "--split", "test", "--out", str(tmp_path / "rescored")])
    assert rc == 0
    assert "loading" not in capsys.readouterr().err  # no model
    after = json.loads((tmp_path / "rescored" / "metrics.json").read_text(encoding="utf-8"))
    assert [r["label"] for r in after["models"]] == ["base", "tuned"]  # the files' names
    for a, b in zip(after["models"], before["models"]):
        assert (a["caption"], a["classification"]) == (b["caption"], b["classification"])
    assert after["images"] == before["images"] and after["tasks"] == before["tasks"]
