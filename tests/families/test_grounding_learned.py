"""Grounding end to end on real boxes, for every registered family: the detection importer turns
the real NEON tree boxes into Chinese referring records, a short LoRA run of each family's tiny
model learns them in the family's own box text (its codec), and the answers come back as boxes in
original-image pixels through cli_demo, the API and the evaluation (Acc@0.5 on the training
expressions). The runs start at once, one process per family, as ``hf_bases`` does."""

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
from tests.families.conftest import ALL_FAMILIES, ROOT, env
from tests.serve.conftest import ServerProcess

FIXTURES = ROOT / "tests" / "fixtures"


def run(args, **kw):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL, **kw)


@pytest.fixture(scope="module")
def refer_records(tmp_path_factory):
    """(the refer records file, its records): four expressions on SOAP_061, built by the importer."""
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
    return train, refer


@pytest.fixture(scope="module")
def refer_runs(refer_records, family_bases, tmp_path_factory) -> dict[str, str]:
    """A LoRA run per family on the refer records (VisualGLM: 300 steps; the others: 150)."""
    train, _ = refer_records
    tmp = tmp_path_factory.mktemp("grounding_runs")
    procs = {}
    for fam, base in family_bases.items():
        steps, extra = (300, ["--lora_alpha", 10, "--feature_cache", tmp / "cache"]) if fam == "visualglm" else (150, [])
        args = ["finetune_visualglm.py", "--from_pretrained", base, "--train_data", train, "--save", tmp / fam,
                "--train_iters", steps, "--lr", "1e-2", "--batch_size", 4, "--num_workers", 0, *extra]
        procs[fam] = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    for fam, p in procs.items():
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    return {fam: (tmp / fam / "LAST_RUN").read_text().strip() for fam in procs}


def _popen(args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def _ask_api(port: int, run_dir: str, image: Path, rec: dict):
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
    data = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
    msgs = [{"role": "user", "content": [{"type": "text", "text": rec["prompt"]},
                                         {"type": "image_url", "image_url": {"url": data}}]}]
    return c.chat.completions.create(model=Path(run_dir).name, messages=msgs, temperature=0).choices[0].message


@pytest.fixture(scope="module")
def answers(refer_runs, refer_records, tmp_path_factory) -> dict[str, dict]:
    """Every family's run asked through the three front ends at once (cli_demo and the evaluation as
    processes, the real API server with the real openai client): family -> {"cli": (rc, stdout,
    stderr), "eval": (rc, stderr, eval folder), "api": the reply message}."""
    train, refer = refer_records
    tmp = tmp_path_factory.mktemp("grounding_answers")
    servers, procs = {}, {}
    try:
        for fam, run_dir in refer_runs.items():
            port = free_port()
            servers[fam] = (port, ServerProcess([sys.executable, "-m", "remoteglm.serve.api", "--from_pretrained", run_dir,
                                                 "--port", str(port), "--max_new_tokens", "64"], env=env(), cwd=ROOT,
                                                ready_marker="serving "))
            procs[fam, "cli"] = _popen(["cli_demo.py", "--from_pretrained", run_dir, "--image", train.parent / refer[0]["img"],
                                        "--prompt", refer[0]["prompt"], "--greedy", "--max_new_tokens", 64])
            procs[fam, "eval"] = _popen(["-m", "remoteglm.eval", "--from_pretrained", run_dir, "--data", train, "--out",
                                         tmp / fam, "--max_new_tokens", 64, "--allow_leak"])
        out: dict[str, dict] = {fam: {} for fam in refer_runs}
        for (fam, what), p in procs.items():
            stdout, stderr = p.communicate(timeout=600)
            out[fam][what] = (p.returncode, stdout, stderr) if what == "cli" else (p.returncode, stderr, tmp / fam)
        for fam, (port, srv) in servers.items():
            srv.wait_ready("API server")
            out[fam]["api"] = _ask_api(port, refer_runs[fam], train.parent / refer[1]["img"], refer[1])
        return out
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        for _, srv in servers.values():
            srv.stop()


@pytest.fixture(params=ALL_FAMILIES)
def answered(request, answers, refer_records):
    """(what the family's run answered through each front end, the refer records)."""
    return answers[request.param], refer_records[1]


def test_the_run_answers_a_training_expression_with_its_box_in_cli_demo(answered):
    got, refer = answered
    rc, stdout, stderr = got["cli"]
    assert rc == 0, stderr[-2000:]
    boxes = [tuple(map(float, m.groups())) for m in re.finditer(r"box 1: (?:.*? )?(\d+),(\d+),(\d+),(\d+)", stdout)]
    assert boxes, stdout  # printed in original-image pixels, after the family's own box text
    assert iou(Box(*boxes[0]), Box(*refer[0]["label_boxes"][0])) >= 0.5, (boxes, refer[0])


def test_the_evaluation_scores_the_learned_boxes(answered):
    got, _ = answered
    rc, stderr, folder = got["eval"]
    assert rc == 0, stderr[-3000:]
    m = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    g = m["models"][0]["grounding"]
    assert g["n"] == 4 and g["acc@0.5"] >= 0.75 and g["parse_failures"] == 0, g


def test_the_api_returns_the_learned_box_in_original_pixels(answered):
    """The real API server and the real openai client: ``message.boxes`` holds the box in pixels of
    the uploaded image, whatever the family's own box text is."""
    got, refer = answered
    message = got["api"]
    (box,) = message.boxes
    assert iou(Box(*box["bbox"]), Box(*refer[1]["label_boxes"][0])) >= 0.5, (message, refer[1])
