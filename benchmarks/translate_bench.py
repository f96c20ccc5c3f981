"""Benchmark: this pipeline vs the RemoteGLM way of translating UCM captions.

Both talk to the same local OpenAI-compatible test server (tests/data/fake_llm.py) with a fixed
latency per request (default 50 ms). RemoteGLM sends one request per image, one after another;
this pipeline de-duplicates sentences, batches them and keeps --concurrency requests in flight.

    python benchmarks/translate_bench.py                 # full UCM set, 50 ms, concurrency 16
    python benchmarks/translate_bench.py --images 300    # quicker
Targets: <= 1/5 of the calls, >= 10x faster, 0 calls on a rerun (exit 1 if missed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "data")]

import openai  # noqa: E402,F401  (imported up front so neither side pays its ~1 s import)
from fake_llm import FakeLLM  # noqa: E402

from remoteglm.data.datasets import load_captions  # noqa: E402
from remoteglm.data.llm import LLMClient, LLMConfig  # noqa: E402
from remoteglm.data.pipeline import PipelineConfig, run  # noqa: E402
from remoteglm.data.translate import TranslateConfig, build_messages  # noqa: E402

UCM = ROOT / "tests" / "fixtures" / "captions" / "UCM-en.json"


def remoteglm_way(src: Path, base_url: str) -> tuple[int, float]:
    """One sequential request per image with its five sentences (as RemoteGLM's script does)."""
    client = LLMClient(LLMConfig(base_url=base_url, model="fake", max_retries=0))
    t = time.perf_counter()
    for im in load_captions(src, name="UCM").images:
        client.chat(build_messages(im.sentences))
    return client.usage.calls, time.perf_counter() - t


def pipeline_way(src: Path, base_url: str, work: Path, concurrency: int, batch_size: int) -> tuple[int, float, float]:
    cfg = PipelineConfig(
        input=src, name="UCM", out_dir=work / "out", cache=work / "cache.sqlite",
        llm=LLMConfig(base_url=base_url, model="fake"),
        translate=TranslateConfig(batch_size=batch_size, concurrency=concurrency), progress=False,
    )
    t = time.perf_counter()
    summary = run(cfg)
    assert summary.failed == 0
    return summary.usage.calls, time.perf_counter() - t, summary.llm_seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None, help="first N UCM images (default: all 2100)")
    ap.add_argument("--latency", type=float, default=0.05, help="server latency per request, seconds")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=20)
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, FakeLLM(latency=a.latency) as srv:
        work = Path(tmp)
        src = work / "UCM-en.json"
        items = json.loads(UCM.read_text())[: a.images]
        src.write_text(json.dumps(items))
        sentences = len(load_captions(src, name="UCM").sentences())
        print(f"UCM: {len(items)} images, {sentences} sentences; server latency {a.latency * 1000:.0f} ms/request",
              flush=True)

        ours_calls, ours_s, ours_llm_s = pipeline_way(src, srv.base_url, work, a.concurrency, a.batch_size)
        rerun_calls, rerun_s, _ = pipeline_way(src, srv.base_url, work, a.concurrency, a.batch_size)
        print(f"this pipeline (--concurrency {a.concurrency}, --batch-size {a.batch_size}): {ours_calls} calls, "
              f"{ours_s:.1f} s whole job ({ours_llm_s:.1f} s translating, the rest loading jieba and "
              "building the outputs)", flush=True)
        print(f"rerun of the finished job: {rerun_calls} calls, {rerun_s:.1f} s", flush=True)
        theirs_calls, theirs_s = remoteglm_way(src, srv.base_url)
        print(f"RemoteGLM way (one sequential call per image): {theirs_calls} calls, {theirs_s:.1f} s")

    ratio, speedup = ours_calls / theirs_calls, theirs_s / ours_s
    print(f"=> {ratio:.3f} of the calls (target <= 0.2), {speedup:.1f}x faster for the whole job "
          f"({theirs_s / ours_llm_s:.0f}x for the translate step; target >= 10), "
          f"{rerun_calls} calls on rerun (target 0)")
    return 0 if ratio <= 0.2 and speedup >= 10 and rerun_calls == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
