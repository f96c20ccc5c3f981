"""Benchmark: the instruction kinds (translation_en2zh.py --tasks all) on UCM.

The whole job - translate, rewrite, questions, conversations, fine-tune files - against the local
fake LLM (tests/data/fake_llm.py) with a fixed latency per request (default 50 ms) and faulty
replies: the realistic mix (refusals, preambles, broken JSON, mood words, HTML pages, 429/500 ...)
plus the content faults (an invented object, a changed number). Rerun until it finishes, as a user
does; then once more.

    python benchmarks/tasks_bench.py                    # all 2100 UCM images, 10% + 10% faults
    python benchmarks/tasks_bench.py --images 300 --faults 0 --content-faults 0

Reports records per kind, LLM calls per 1000 records, replies rejected and items dropped per kind,
wall time, and the rerun's calls. Exit 1 if the rerun calls the LLM, if 是 and 否 differ, or if a
mood word, an invented object, a refusal or a count the English does not state reached the files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "data")]

import openai  # noqa: E402,F401  (imported up front, as in translate_bench)
from fake_llm import INVENTED, MOOD_WORDS, REFUSALS, FakeLLM, mixed_faults  # noqa: E402

from remoteglm.data.datasets import load_captions  # noqa: E402
from remoteglm.data.kinds import KINDS, parse_kinds  # noqa: E402
from remoteglm.data.llm import LLMConfig  # noqa: E402
from remoteglm.data.pipeline import PipelineConfig, run  # noqa: E402
from remoteglm.data.translate import TranslateConfig  # noqa: E402
from remoteglm.errors import RemoteGLMError  # noqa: E402

UCM = ROOT / "tests" / "fixtures" / "captions" / "UCM-en.json"
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
           "eleven": 11, "twelve": 12}


def _slips(out: Path, src: Path) -> list[str]:
    """Text in the written instructions that a fault put there (checked without the project's checks)."""
    zh = json.loads((out / "dataset_UCM_zh.json").read_text(encoding="utf-8"))
    english = {im.filename: " ".join(im.sentences).lower() for im in load_captions(src, "UCM").images}
    bad = []
    for im in zh["images"]:
        for item in im.get("instructions", []):
            texts = [item["question"], item["answer"]] if "answer" in item else [t for turn in item["turns"] for t in turn]
            for t in texts:
                if any(w in t for w in MOOD_WORDS) or any(p.strip("，") in t for p, _ in INVENTED) \
                        or any(r.strip("。！") in t for r in REFUSALS if len(r) > 3):
                    bad.append(f"{im['filename']}: {t}")
            if item["task"] == "count":
                stated = {NUMBERS.get(w, int(w) if w.isdigit() else 0) for w in re.findall(r"\w+", english[im["filename"]])}
                if int(item["answer"]) not in stated:
                    bad.append(f"{im['filename']}: count {item['answer']}")
    return bad


def _until_done(cfg):
    """Run the job until it finishes, as a user reruns it: (summary or None, runs)."""
    for runs in range(1, 6):
        try:
            return run(cfg), runs
        except RemoteGLMError as e:
            print(f"  run {runs} unfinished: {str(e)[:140]}", flush=True)
    return None, 5


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None, help="first N UCM images (default: all 2100)")
    ap.add_argument("--latency", type=float, default=0.05, help="server latency per request, seconds [0.05]")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--faults", type=float, default=0.1, help="share of replies with a realistic fault [0.1]")
    ap.add_argument("--content-faults", type=float, default=0.1,
                    help="share of replies with an invented object or a changed number [0.1]")
    ap.add_argument("--no-phrase-questions", action="store_true", help="keep the template questions")
    a = ap.parse_args()
    rates = {**(mixed_faults(a.faults) if a.faults else {}),
             **({"invent": a.content_faults / 2, "miscount": a.content_faults / 2} if a.content_faults else {})}
    kinds = parse_kinds("all")
    with tempfile.TemporaryDirectory() as tmp, FakeLLM(latency=a.latency, rates=rates, seed=1) as srv:
        work = Path(tmp)
        src = work / "UCM-en.json"
        items = json.loads(UCM.read_text())[: a.images]
        src.write_text(json.dumps(items))
        print(f"UCM: {len(items)} images; latency {a.latency * 1000:.0f} ms/request, concurrency {a.concurrency}; "
              f"faults: {a.faults:.0%} realistic + {a.content_faults:.0%} content", flush=True)
        cfg = PipelineConfig(input=src, name="UCM", out_dir=work / "out", cache=work / "cache.sqlite", progress=False,
                             llm=LLMConfig(base_url=srv.base_url, model="fake", max_retries=6, backoff=0.05),
                             translate=TranslateConfig(concurrency=a.concurrency), tasks=kinds,
                             phrase_questions=not a.no_phrase_questions)
        # the captions first (translate + rewrite), then the instruction step, each rerun until done:
        # the calls of each phase are then known apart
        t0 = time.perf_counter()
        base, runs_a = _until_done(replace(cfg, tasks=None, rewrite=True))
        calls_a = srv.requests
        s, runs = _until_done(cfg)
        wall = time.perf_counter() - t0
        if base is None or s is None:
            print("did not finish in 5 runs")
            return 1
        calls, task_calls = srv.requests, srv.requests - calls_a
        rejected, dropped = s.tasks.rejected, s.tasks.dropped
        # the rerun as a user runs it: the same command, a fresh process
        cli = [sys.executable, str(ROOT / "translation_en2zh.py"), "--no_progress", "--input", str(src), "--name", "UCM",
               "--out_dir", str(work / "out"), "--cache", str(work / "cache.sqlite"), "--base_url", srv.base_url,
               "--model", "fake", "--tasks", "all", *([] if a.no_phrase_questions else ["--phrase_questions"])]
        t1 = time.perf_counter()
        again = subprocess.run(cli, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        rerun_s, rerun_calls = time.perf_counter() - t1, srv.requests - calls
        faults = Counter(srv.fault_log)
        slips = _slips(work / "out", src)
    per_kind = Counter()
    for c in s.split_counts.values():
        per_kind.update(c.get("kinds", {}))
    records = sum(per_kind.values())
    made = s.tasks.made
    print("records per kind (train + val + test): " + ", ".join(f"{k} {per_kind[k]}" for k in KINDS)
          + f"; {records} in all")
    print(f"presence answers: 是 {s.tasks.answers['是']} / 否 {s.tasks.answers['否']}")
    print(f"LLM calls: {calls} in all = {1000 * calls / records:.0f} per 1000 records; translate + rewrite "
          f"{calls - task_calls} ({runs_a} run(s)), the instruction step {task_calls} ({runs} run(s)) = "
          f"{1000 * task_calls / max(1, sum(made.values())):.0f} per 1000 instruction records "
          "(presence/count/attribute answers need none)")
    print("replies rejected by the grounding check: "
          + (", ".join(f"{k} {n}" for k, n in rejected.items() if n) or "none")
          + "; items dropped: " + (", ".join(f"{k} {n}" for k, n in dropped.items() if n) or "none"))
    print(f"wall time: {wall:.1f} s to finish; rerun of the finished job (translation_en2zh.py, a new process): "
          f"exit {again.returncode}, {rerun_calls} calls, {rerun_s:.1f} s"
          + (" (outputs up to date)" if "up to date" in again.stderr else ""))
    print(f"faults served: {dict(faults)}")
    print(f"faults that reached the files: {len(slips)}" + (f" (e.g. {slips[0]})" if slips else ""))
    ok = again.returncode == 0 and rerun_calls == 0 and not slips and s.tasks.answers["是"] == s.tasks.answers["否"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
