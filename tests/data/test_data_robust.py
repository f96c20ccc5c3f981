"""Inputs that used to stop a whole dataset, partial failures, and the small things a user sees.

The LLM here is its own tiny HTTP server on 127.0.0.1 that knows nothing of the project: it
answers each numbered item with a fixed Chinese sentence, except items that contain "zebra",
which it leaves in English however often it is asked (an LLM that will not translate one thing).
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from datahelp import karpathy_from_list, run_cli, ucm_list, write_json
from scripted_server import ScriptedServer


NUMBERS = {"two": "两", "three": "三", "four": "四", "five": "五", "six": "六", "seven": "七", "eight": "八",
           "nine": "九", "ten": "十"}


class StubbornLLM(ScriptedServer):
    def __init__(self):
        self.asked: list[str] = []
        super().__init__(self._answer)

    def _answer(self, body: dict, items: dict) -> str:
        self.asked.extend(items.values())
        if "sentences" in items:  # a rewrite request
            return "".join(items["sentences"])
        # follows the term list the system prompt gives, as a decent LLM would
        system = body["messages"][0]["content"]
        line = next((ln for ln in system.splitlines() if "exactly:" in ln), "")
        terms = [t.split(" = ", 1) for t in line.split("exactly:", 1)[-1].split("; ") if " = " in t]
        return json.dumps({k: (v if "zebra" in v else "图中有" + "".join(  # numbers kept too
            NUMBERS[w] + "个" for w in re.findall(r"[a-z]+", v.lower()) if w in NUMBERS) + "、".join(
            zh.strip() for en, zh in terms if en.strip().lower() in v.lower()) + "一些东西。")
            for k, v in items.items()}, ensure_ascii=False)


@pytest.fixture
def llm():
    srv = StubbornLLM()
    yield srv
    srv.close()


def _args(srv, tmp_path, src):
    return ["--input", str(src), "--out_dir", str(tmp_path / "out"), "--base_url", srv.base_url, "--model", "m",
            "--cache", str(tmp_path / "cache.sqlite"), "--retries", "0"]


def _dataset(tmp_path, extra_sentences: dict[int, list[str]]):
    data = karpathy_from_list(ucm_list(6, step=100), ["train", "val", "test"])
    for i, sents in extra_sentences.items():
        data["images"][i]["sentences"] += [{"raw": s} for s in sents]
    return write_json(tmp_path / "UCM_captions" / "dataset.json", data)


def test_captions_with_nothing_to_translate_are_dropped_not_fatal(llm, tmp_path):
    """RSICD holds the caption "1" (twice); "." normalises to nothing. Neither may stop the set."""
    src = _dataset(tmp_path, {0: ["1", "1"], 1: ["."], 2: [" ,; "]})
    r = run_cli(*_args(llm, tmp_path, src))
    assert r.returncode == 0, r.stderr
    assert "4 caption(s) with nothing to translate dropped" in r.stderr
    assert not [x for x in llm.asked if not re.search(r"[A-Za-z]{2}", x)]  # never sent to the LLM
    zh = json.loads((tmp_path / "out" / "dataset_UCM_zh.json").read_text(encoding="utf-8"))
    assert len(zh["images"]) == 6 and all(len(im["sentences"]) == 5 for im in zh["images"])


@pytest.mark.parametrize("bad, expected", [
    ({"images": [{"filename": "1.tif", "split": "train", "sentences": "There is a plane ."}]}, "'sentences' is a JSON str"),
    ({"images": [{"filename": "1.tif", "split": "train", "sentences": [{"raw": ["a", "b"]}]}]}, "is a JSON list, not a sentence"),
    ({"images": [{"filename": 7, "split": "train", "sentences": [{"raw": "a plane"}]}]}, "'filename' should be"),
    ([{"imged_id": "1.tif", "caption": ["a plane .", "two cars ."]}], "'caption' is a JSON list"),
])
def test_wrong_shapes_are_one_clear_error(llm, tmp_path, bad, expected):
    src = write_json(tmp_path / "UCM_captions" / "dataset.json", bad)
    r = run_cli(*_args(llm, tmp_path, src))
    assert r.returncode == 2 and expected in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert llm.asked == []


def test_a_few_failures_write_the_rest_and_a_failures_file(llm, tmp_path):
    src = _dataset(tmp_path, {})
    data = json.loads(src.read_text())
    data["images"][1]["sentences"][0]["raw"] = "a zebra crossing next to the road ."
    write_json(src, data)
    r = run_cli(*_args(llm, tmp_path, src))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "1 distinct sentences still not done" in last and "5 of 6 images written" in last
    assert "kept failing the checks (" in last and "English left untranslated x1" in last and "try a stronger --model" in last
    failures = json.loads((tmp_path / "out" / "failures.json").read_text(encoding="utf-8"))
    assert failures == [{"image": data["images"][1]["filename"], "split": data["images"][1]["split"],
                         "sentence": "a zebra crossing next to the road .", "problem": failures[0]["problem"],
                         "reply_sample": "a zebra crossing next to the road"}]
    zh = json.loads((tmp_path / "out" / "dataset_UCM_zh.json").read_text(encoding="utf-8"))
    assert len(zh["images"]) == 5 and zh["incomplete"]["images_missing"] == 1
    asked = len(llm.asked)
    r = run_cli(*_args(llm, tmp_path, src))  # the rerun asks only for what is missing
    assert r.returncode == 2 and set(llm.asked[asked:]) == {"a zebra crossing next to the road"}


def test_dry_run_writes_nothing(llm, tmp_path):
    src = _dataset(tmp_path, {})
    r = run_cli(*_args(llm, tmp_path, src), "--dry_run")
    assert r.returncode == 0 and "would translate" in r.stderr
    assert not (tmp_path / "cache.sqlite").exists() and not (tmp_path / "out").exists() and llm.asked == []


def test_summary_timing_splits_and_an_up_to_date_rerun(llm, tmp_path):
    src = _dataset(tmp_path, {})
    r = run_cli(*_args(llm, tmp_path, src), "--rewrite")
    assert r.returncode == 0, r.stderr
    assert re.search(r"took \d+\.\d s", r.stderr) and "train: 2 images" in r.stderr and "test: 2 images" in r.stderr
    out = tmp_path / "out" / "UCM_train.json"
    mtime, asked = out.stat().st_mtime_ns, len(llm.asked)
    time.sleep(0.01)
    r = run_cli(*_args(llm, tmp_path, src), "--rewrite")
    assert r.returncode == 0 and len(llm.asked) == asked  # nothing asked again
    assert "rewrite: " in r.stderr and "from cache" in r.stderr  # the cached rewrite step still reports
    assert f"up to date {out}" in r.stderr and out.stat().st_mtime_ns == mtime  # not rebuilt
    assert "train: 2 images" in r.stderr


def test_a_damaged_split_count_file_rebuilds_instead_of_failing(llm, tmp_path):
    """.split_counts.json is the build's own record: a damaged one (a disk fault, a hand edit)
    means the outputs are rebuilt from the cache, not a traceback on every later rerun."""
    src = _dataset(tmp_path, {})
    assert run_cli(*_args(llm, tmp_path, src)).returncode == 0
    counts = tmp_path / "out" / ".split_counts.json"
    good, asked = json.loads(counts.read_text(encoding="utf-8")), len(llm.asked)
    counts.write_text("{damaged", encoding="utf-8")
    r = run_cli(*_args(llm, tmp_path, src))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert json.loads(counts.read_text(encoding="utf-8")) == good and len(llm.asked) == asked  # from the cache
    assert "train: 2 images" in r.stderr


def test_temp_files_of_a_killed_writer_are_cleaned_up(tmp_path):
    from remoteglm.io import write_text_atomic

    stale = tmp_path / ".x.json.abc123.tmp"
    fresh = tmp_path / ".x.json.def456.tmp"
    stale.write_text("")
    fresh.write_text("")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    write_text_atomic(tmp_path / "x.json", "{}")
    assert not stale.exists() and fresh.exists()  # a writer still at work keeps its file


@pytest.mark.parametrize("case", ["out-dir below a file", "out-dir is a file", "cache below a file",
                                  "cache is not SQLite", "cache is not SQLite (dry run)"])
def test_file_system_faults_are_one_line_before_any_work(llm, tmp_path, case):
    """Checked before anything is asked or created; a file that is not a cache is never turned into one."""
    src = _dataset(tmp_path, {})
    blocker = tmp_path / "a_file"
    blocker.write_bytes(b"x")
    args = _args(llm, tmp_path, src)
    flag, where, needle = {
        "out-dir below a file": ("--out_dir", blocker / "out", "is a file, not a folder"),
        "out-dir is a file": ("--out_dir", blocker, "is a file, not a folder"),
        "cache below a file": ("--cache", blocker / "c.sqlite", "is a file, not a folder"),
        "cache is not SQLite": ("--cache", blocker, "not an SQLite cache"),
        "cache is not SQLite (dry run)": ("--cache", blocker, "not an SQLite cache"),
    }[case]
    args[args.index(flag) + 1] = str(where)
    r = run_cli(*args, *(["--dry_run"] if "dry run" in case else []))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr and lines[-1].startswith("error: "), r.stderr
    assert needle in lines[-1] and flag in lines[-1], lines[-1]
    assert llm.asked == [] and blocker.read_bytes() == b"x"
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache.sqlite").exists()


def test_a_rerun_removes_what_a_killed_write_left(llm, tmp_path):
    """A SIGKILL during an atomic write leaves its hidden temp file: the next run removes it even
    when it writes nothing (its outputs are up to date); a writer still at work keeps its own."""
    import signal
    import subprocess
    import sys

    from datahelp import ROOT

    src = _dataset(tmp_path, {})
    assert run_cli(*_args(llm, tmp_path, src)).returncode == 0
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = ("import os, signal, sys\nfrom remoteglm.io import write_atomic\n"
              "def half(tmp):\n    open(tmp, 'w').write('{\"half\": ')\n    sys.stdout.write('ready\\n')\n"
              "    sys.stdout.flush()\n    THEN\n"
              "write_atomic(sys.argv[1], half)\n")
    killed = subprocess.run([sys.executable, "-c", writer.replace("THEN", "os.kill(os.getpid(), signal.SIGKILL)"),
                             str(out / "dataset_UCM_zh.json")], env=env, capture_output=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    left = [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].name.startswith(".dataset_UCM_zh.json.")
    older = out / ".UCM_train.json.k3j4h5g6.tmp"  # what an earlier version's writer left an hour ago
    older.write_text("[")
    os.utime(older, (time.time() - 3600,) * 2)
    live = subprocess.Popen([sys.executable, "-c", writer.replace("THEN", "sys.stdin.readline()"), str(out / "notes.json")],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline() == "ready\n"
        r = run_cli(*_args(llm, tmp_path, src))
        assert r.returncode == 0 and "up to date" in r.stderr, r.stderr
        assert not left[0].exists() and not older.exists()
        assert [p.name for p in out.iterdir() if p.name.startswith(".notes.json.")]  # still being written
    finally:
        live.communicate("go\n", timeout=60)
    assert live.returncode == 0 and (out / "notes.json").read_text() == '{"half": '
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_unfinished_work_says_which_case_it_is(tmp_path):
    """A closed port and an endpoint that never returns OpenAI JSON are not "rerun the same
    command" cases; an LLM whose answers keep failing the checks is (for those items only)."""
    from fake_llm import FakeLLM

    from remoteglm.compat import free_port

    src = _dataset(tmp_path, {})
    base = ["--input", str(src), "--model", "m", "--retries", "1"]
    closed = f"http://127.0.0.1:{free_port()}/v1"
    r = run_cli(*base, "--out_dir", str(tmp_path / "a"), "--cache", str(tmp_path / "a.sqlite"), "--base_url", closed)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "cannot be reached" in last and "rerunning before that cannot help" in last, last
    with FakeLLM(rates={"html": 1.0}) as srv:
        r = run_cli(*base, "--out_dir", str(tmp_path / "b"), "--cache", str(tmp_path / "b.sqlite"), "--base_url", srv.base_url)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "not with OpenAI JSON" in last and "rerun the same command" not in last, last
    assert (tmp_path / "b" / "failures.json").exists()
