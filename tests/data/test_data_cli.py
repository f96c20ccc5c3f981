"""translation_en2zh.py as users run it: real subprocesses against a real local server."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datahelp import CLI, FIXTURES, karpathy_from_list, run_cli, ucm_list, write_json
from fake_llm import MOOD_WORDS

from remoteglm.data.build import build_finetune_records, load_zh_dataset
from remoteglm.data.datasets import load_captions
from remoteglm.data.translate import distinct_sentences, normalise


def _llm_args(srv, tmp_path):
    return ["--base_url", srv.base_url, "--model", "fake", "--cache", str(tmp_path / "cache.sqlite")]


def test_full_run_karpathy_outputs(fake_llm, tmp_path):
    items = ucm_list(42, step=50)  # 2 images of each of the 21 classes
    data = tmp_path / "data" / "UCM_captions"
    write_json(data / "dataset.json", karpathy_from_list(items, ["train", "train", "val", "test"]))
    (data / "imgs").mkdir()
    for it in items[:40]:
        (data / "imgs" / it["imged_id"]).write_bytes(b"tif " + it["imged_id"].encode())  # one content per image
    srv = fake_llm()
    out = tmp_path / "data" / "UCM_zh"
    r = run_cli("--input", str(data / "dataset.json"), "--out_dir", str(out), *_llm_args(srv, tmp_path))
    assert r.returncode == 0, r.stderr
    assert "2 of 42 images missing" in r.stderr and "Traceback" not in r.stderr
    assert f"{srv.requests} calls" in r.stderr and "0 failed" in r.stderr

    zh = load_zh_dataset(out / "dataset_UCM_zh.json")
    assert zh["dataset"] == "UCM" and len(zh["classes_zh"]) == 21 and len(zh["images"]) == 42
    for im, it in zip(zh["images"], items):
        assert im["filename"] == it["imged_id"] and len(im["sentences"]) == 5
        assert all(s["raw"].endswith("。") and s["raw_en"] and s["tokens"] for s in im["sentences"])
    assert [im["split"] for im in zh["images"][:4]] == ["train", "train", "val", "test"]  # official split kept
    assert zh["images"][0]["class_zh"] == "农田"

    splits = {s: json.loads((out / f"UCM_{s}.json").read_text()) for s in ("train", "val", "test")}
    imgs = {s: {r["img"] for r in recs} for s, recs in splits.items()}
    assert not imgs["train"] & (imgs["val"] | imgs["test"])  # no leakage
    assert len(imgs["train"]) == 22 and len(imgs["val"]) == 10 and len(imgs["test"]) == 10
    for rec in splits["train"]:
        assert set(rec) >= {"img", "prompt", "label"}
        assert (out / rec["img"]).resolve() == (data / "imgs" / Path(rec["img"]).name).resolve()  # relative to JSON
    cls = [r for r in splits["test"] if r["task"] == "classify"]
    assert len(cls) == 10 and all(r["label"] in zh["classes_zh"] and "储油罐" in r["prompt"] for r in cls)
    assert all(len(r["references"]) == 5 for r in splits["test"] if r["task"] == "caption")
    # prompts are seeded: same seed same records, another seed other prompts
    again = build_finetune_records(zh, data / "imgs", out, seed=42)
    assert again["train"] == splits["train"]
    other = build_finetune_records(zh, data / "imgs", out, seed=7)
    assert [r["prompt"] for r in other["train"]] != [r["prompt"] for r in splits["train"]]


def test_dry_run_and_limit(fake_llm, tmp_path):
    srv = fake_llm()
    src = write_json(tmp_path / "UCM-en.json", ucm_list(300))
    r = run_cli("--input", str(src), "--dry_run", "--rewrite", "--batch_size", "10", *_llm_args(srv, tmp_path))
    n = len(distinct_sentences(load_captions(src).sentences()))
    assert r.returncode == 0 and srv.requests == 0, r.stderr
    assert f"dry run: 300 images, 1500 sentences, {n} distinct, 0 cached" in r.stderr
    assert f"would translate {n} sentences in ~{-(-n // 10)} calls" in r.stderr and "rewrite: at least" in r.stderr
    assert not (tmp_path / "data").exists() and not list(tmp_path.glob("**/*_train.json"))

    out = tmp_path / "out"
    r = run_cli("--input", str(src), "--limit", "7", "--out_dir", str(out), *_llm_args(srv, tmp_path))
    assert r.returncode == 0, r.stderr
    assert len(load_zh_dataset(out / "dataset_UCM_zh.json")["images"]) == 7
    assert srv.sentence_requests.total() <= 35
    r = run_cli("--input", str(src), "--dry_run", "--limit", "7", *_llm_args(srv, tmp_path))
    assert "35 sentences, 5 distinct, 5 cached" in r.stderr and "would translate 0 sentences in ~0 calls" in r.stderr


@pytest.mark.parametrize("content, needle", [
    (None, "caption file not found"),
    ('[{"imged_id": "1.tif", "caption": "a road ."},\n {oops}]', "malformed JSON at line 2, column 3"),
    ('{"annotations": [1, 2]}', "unknown caption format"),
    ('[{"imged_id": "1.tif", "caption": ""}]', "empty captions"),
])
def test_bad_input_is_one_line(tmp_path, content, needle):
    src = tmp_path / "captions.json"
    if content is not None:
        src.write_text(content)
    r = run_cli("--input", str(src), "--base_url", "http://127.0.0.1:9/v1", "--cache", str(tmp_path / "c.sqlite"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0] and str(src) in lines[0]


def test_missing_key_for_remote_endpoint_is_one_line(tmp_path):
    src = write_json(tmp_path / "UCM-en.json", ucm_list(2))
    r = run_cli("--input", str(src), "--base_url", "https://api.openai.com/v1", "--cache", str(tmp_path / "c.sqlite"))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: OPENAI_API_KEY is not set")
    assert "Traceback" not in r.stderr
    # another remote host: OPENAI_API_KEY is not sent there, the flag that names its key is
    r = run_cli("--input", str(src), "--base_url", "https://api.example.invalid/v1", "--cache", str(tmp_path / "c.sqlite"),
                key="sk-openai-only")
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and last.startswith("error: api.example.invalid is not OpenAI's host") and "--api_key_env" in last
    assert "Traceback" not in r.stderr and "sk-openai-only" not in r.stderr


def test_unfinished_run_says_what_remains_and_rerun_finishes(fake_llm, tmp_path):
    srv = fake_llm(counts={"server_error": 1})
    src = write_json(tmp_path / "UCM-en.json", ucm_list(20))
    args = ["--input", str(src), "--out_dir", str(tmp_path / "out"), "--retries", "0", "--concurrency", "1",
            "--api_key_env", "LOCAL_LLM_KEY", *_llm_args(srv, tmp_path)]
    secret = "sk-test-do-not-leak-12345"
    r = run_cli(*args, env={"LOCAL_LLM_KEY": secret})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "distinct sentences still not done" in last and "HTTP 500" in last and "rerun the same command" in last
    assert not (tmp_path / "out" / "UCM_train.json").exists()  # no image was complete: no dataset
    failures = json.loads((tmp_path / "out" / "failures.json").read_text(encoding="utf-8"))
    assert len(failures) == 100 and {"image", "sentence", "problem", "reply_sample"} <= failures[0].keys()
    r2 = run_cli(*args, env={"LOCAL_LLM_KEY": secret})
    assert r2.returncode == 0 and (tmp_path / "out" / "UCM_train.json").exists(), r2.stderr
    assert not (tmp_path / "out" / "failures.json").exists()  # nothing is missing any more
    # the key is sent to the endpoint, but never shown or written anywhere
    assert srv.last_auth == f"Bearer {secret}" and secret not in r.stderr + r2.stderr + r2.stdout
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def _cached_sources(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {s for (s,) in con.execute("SELECT source FROM results WHERE kind='translate'")}


def test_sigkill_midway_then_rerun_loses_nothing_and_asks_nothing_twice(fake_llm, tmp_path):
    items = ucm_list(60, step=35)  # 300 sentences, ~250 distinct: ~50 requests of 5
    src = write_json(tmp_path / "UCM-en.json", items)
    distinct = set(distinct_sentences(load_captions(src).sentences()))
    srv = fake_llm(latency=0.15)
    db = tmp_path / "cache.sqlite"
    args = ["--input", str(src), "--out_dir", str(tmp_path / "out"), "--batch_size", "5", "--concurrency", "2",
            "--base_url", srv.base_url, "--model", "fake", "--cache", str(db), "--no_progress"]
    env = {**os.environ}
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.Popen([sys.executable, str(CLI), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 60
    while srv.requests < 12 and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    first = srv.sentence_requests.copy()
    cached = _cached_sources(db)
    assert 0 < len(cached) < len(distinct)  # killed in the middle, with finished replies kept

    srv.sentence_requests.clear()
    srv.latency = 0
    r = run_cli(*args[:-1])
    assert r.returncode == 0, r.stderr
    second = srv.sentence_requests
    assert not set(second) & cached  # nothing cached was asked again
    assert set(first) | set(second) >= distinct and _cached_sources(db) >= distinct
    twice = [s for s in distinct if first[s] + second[s] > 1]
    assert len(twice) <= 2 * 5  # only the replies in flight at the kill (concurrency x batch)
    zh = load_zh_dataset(tmp_path / "out" / "dataset_UCM_zh.json")
    assert sum(len(im["sentences"]) for im in zh["images"]) == 300
    assert all(s["raw"] and normalise(s["raw_en"]) in distinct for im in zh["images"] for s in im["sentences"])

    before = srv.requests
    r = run_cli(*args[:-1])  # a finished job: zero calls
    assert r.returncode == 0 and srv.requests == before and "LLM: 0 calls" in r.stderr


def test_rewrite_via_cli_reports_rejects(fake_llm, tmp_path):
    srv = fake_llm(counts={"rewrite:mood": 2})
    src = write_json(tmp_path / "Sydney-en.json", json.loads((FIXTURES / "Sydney-en.json").read_text())[:6])
    out = tmp_path / "out"
    r = run_cli("--input", str(src), "--rewrite", "--out_dir", str(out), *_llm_args(srv, tmp_path))
    assert r.returncode == 0, r.stderr
    assert "2 replies rejected" in r.stderr
    zh = load_zh_dataset(out / "dataset_Sydney_zh.json")
    assert all(im["label"] and not [w for w in MOOD_WORDS if w in im["label"]] for im in zh["images"])
    train = json.loads((out / "Sydney_train.json").read_text())
    by_img = [r for r in train if r["task"] == "caption"]
    assert len(by_img) == len({r["img"] for r in by_img})  # one paragraph per train image


@pytest.mark.parametrize("command", ["translation_en2zh.py", "importers rsvqa"])
@pytest.mark.parametrize("flag,value,needle", [
    ("--concurrency", "0", "--concurrency must be at least 1 (got 0)"),
    ("--batch_size", "0", "--batch_size must be at least 1 (got 0)"),
    ("--timeout", "0", "--timeout must be > 0 and --retries >= 0"),
    ("--retries", "-1", "--timeout must be > 0 and --retries >= 0"),
])
def test_bad_llm_endpoint_numbers_are_one_line_before_anything_is_made(command, flag, value, needle, tmp_path,
                                                                        capsys):
    """Both commands that talk to an LLM take the same endpoint options and refuse the same bad
    values in the same words, before any file is read or created."""
    from remoteglm.data.cli import main as caption_main
    from remoteglm.data.importers import main as importers_main

    common = ["--cache", str(tmp_path / "c.sqlite"), "--out_dir", str(tmp_path / "out"), flag, value]
    if command == "translation_en2zh.py":
        rc = caption_main(["--input", str(tmp_path / "missing.json"), *common])
    else:
        rc = importers_main(["rsvqa", "--root", str(tmp_path / "missing"), *common])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"error: {needle}"]
    assert list(tmp_path.iterdir()) == []
