"""Grounding end to end on real boxes: the detection importer turns the real NEON tree boxes into
Chinese referring records, a LoRA run of the tiny VisualGLM learns them, and its answers come back
as boxes in original-image pixels through cli_demo, the API and the evaluation (Acc@0.5 on the training
expressions).

Only VisualGLM here: its tiny model learns a box answer in 300 steps (about 10 s); the tiny
transformers models, pre-trained on captions only, do not yet (their loss stays near 5.5 after 600
steps), so their grounding is checked through the codecs and the serving/eval tests instead."""

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from remoteglm.boxes import Box, iou
from remoteglm.compat import free_port
from tests.families.conftest import ROOT, env
from tests.serve.conftest import ServerProcess

FIXTURES = ROOT / "tests" / "fixtures"


def run(args, **kw):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL, **kw)


@pytest.fixture(scope="module")
def refer_run(tiny_checkpoint, tmp_path_factory):
    """(the run folder, the refer records it trained on)."""
    tmp = tmp_path_factory.mktemp("grounding_learned")
    ann, img = tmp / "ann", tmp / "img"
    ann.mkdir()
    img.mkdir()
    (ann / "SOAP_061.xml").write_bytes((FIXTURES / "annotations" / "SOAP_061.xml").read_bytes())
    (img / "SOAP_061.png").write_bytes((FIXTURES / "images" / "SOAP_061.png").read_bytes())
    (ann / "train.txt").write_text("SOAP_061\n")
    names = tmp / "names.json"
    names.write_text(json.dumps({"Alive": "活树", "Dead": "枯树"}, ensure_ascii=False), encoding="utf-8")
    r = run(["-m", "remoteglm.data.importers", "detection", "--format", "voc", "--annotations", ann, "--images", img,
             "--name", "neon", "--split_files", ann, "--out_dir", tmp / "out", "--names", names, "--splits", tmp / "splits.json"])
    assert r.returncode == 0, r.stderr[-2000:]
    records = json.loads((tmp / "out" / "neon_train.json").read_text(encoding="utf-8"))
    refer = [r for r in records if r["kind"] == "refer"][:4]
    assert len(refer) == 4 and all(r["label"] == "<box>" and len(r["label_boxes"]) == 1 for r in refer)
    train = tmp / "out" / "refer_train.json"
    train.write_text(json.dumps(refer, ensure_ascii=False), encoding="utf-8")
    r = run(["finetune_visualglm.py", "--from_pretrained", tiny_checkpoint, "--train_data", train, "--save", tmp / "runs",
             "--train_iters", 300, "--lr", "1e-2", "--batch_size", 4, "--lora_alpha", 10, "--num_workers", 0,
             "--feature_cache", tmp / "cache"])
    assert r.returncode == 0, r.stderr[-3000:]
    return (tmp / "runs" / "LAST_RUN").read_text().strip(), train, refer


def test_the_run_answers_a_training_expression_with_its_box_in_cli_demo(refer_run):
    run_dir, train, refer = refer_run
    rec = refer[0]
    image = train.parent / rec["img"]
    r = run(["cli_demo.py", "--from_pretrained", run_dir, "--image", image, "--prompt", rec["prompt"], "--greedy",
             "--max_new_tokens", 24])
    assert r.returncode == 0, r.stderr[-2000:]
    got = [tuple(map(float, m.groups())) for m in re.finditer(r"box 1: (?:.*? )?(\d+),(\d+),(\d+),(\d+)", r.stdout)]
    assert got, r.stdout  # printed in original-image pixels, after the family's own box text
    assert iou(Box(*got[0]), Box(*rec["label_boxes"][0])) >= 0.5, (got, rec)


def test_the_evaluation_scores_the_learned_boxes(refer_run, tmp_path):
    run_dir, train, refer = refer_run
    r = run(["-m", "remoteglm.eval", "--from_pretrained", run_dir, "--data", train, "--out", tmp_path / "eval",
             "--max_new_tokens", 24, "--allow_leak"])
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))
    g = m["models"][0]["grounding"]
    assert g["n"] == 4 and g["acc@0.5"] >= 0.75 and g["parse_failures"] == 0, g


def test_the_api_returns_the_learned_box_in_original_pixels(refer_run):
    """The real API server and the real openai client: ``message.boxes`` holds the box in pixels of
    the uploaded image, whatever the family's own box text is."""
    run_dir, train, refer = refer_run
    rec = refer[1]
    port = free_port()
    srv = ServerProcess([sys.executable, "-m", "remoteglm.serve.api", "--from_pretrained", run_dir, "--port", str(port),
                         "--max_new_tokens", "24"], env=env(), cwd=ROOT, ready_marker="serving ")
    try:
        srv.wait_ready("API server")
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
        data = "data:image/png;base64," + base64.b64encode((train.parent / rec["img"]).read_bytes()).decode()
        msgs = [{"role": "user", "content": [{"type": "text", "text": rec["prompt"]},
                                             {"type": "image_url", "image_url": {"url": data}}]}]
        r = c.chat.completions.create(model=Path(run_dir).name, messages=msgs, temperature=0)
        (got,) = r.choices[0].message.boxes
        assert iou(Box(*got["bbox"]), Box(*rec["label_boxes"][0])) >= 0.5, (r.choices[0].message, rec)
    finally:
        srv.stop()
