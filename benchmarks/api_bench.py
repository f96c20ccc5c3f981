"""API server benchmark: latency of concurrent requests and the server's memory.

    python benchmarks/api_bench.py                        # tiny model on the CPU, 40 concurrent requests
    python benchmarks/api_bench.py --from_pretrained DIR  # another checkpoint (add --quant 4 etc. via --server-args)

The server (``python -m remoteglm.serve.api``) runs as its own process on 127.0.0.1; 40 clients
(the ``openai`` package, one thread each, no retries) send their requests at the same moment: a
third text only, a third with a base64 image (two fixture tiles), a third streamed, each asking
for --tokens new tokens greedily (<eop> may end one earlier). Latency = send to the last byte of
the answer, per request; p50 / p95 / max over the 40. The server answers one at a time, so the
last in line waits for all the others: p95 is about the whole burst.

Run 1 starts the server with ``--max-queue 40`` (everybody may wait). Run 2 uses the default
``--max-queue`` (16): the requests beyond the queue are refused at once with 429 + Retry-After;
it prints how many and how fast. Server RSS (VmRSS of its process) is read after a warm-up
(twice three requests, one of each kind) and after the burst; peak = VmHWM.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMAGES = [ROOT / "tests" / "fixtures" / "images" / "OSBS_029.tif", ROOT / "tests" / "fixtures" / "images" / "s2_farmland.png"]
QUESTION = "描述这张图片。"
MiB = 2**20


def memory_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def start_server(ckpt: Path, extra: list[str]) -> tuple[subprocess.Popen, str, list[str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.Popen([sys.executable, "-m", "remoteglm.serve.api", "--from_pretrained", str(ckpt), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines: list[str] = []
    url: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"serving .* at (http://\S+/v1)", line)
            if m:
                url.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(300) or not url:
        proc.kill()
        raise SystemExit("the API server did not start:\n" + "".join(lines[-20:]))
    return proc, url[0], lines


def request_kinds(n: int) -> list[dict]:
    urls = [f"data:image/{'tiff' if p.suffix == '.tif' else 'png'};base64," + base64.b64encode(p.read_bytes()).decode() for p in IMAGES]
    kinds = []
    for i in range(n):
        if i % 3 == 0:
            kinds.append({"content": "你好，介绍一下遥感。", "stream": False})
        elif i % 3 == 1:
            kinds.append({"content": [{"type": "text", "text": QUESTION},
                                      {"type": "image_url", "image_url": {"url": urls[i % len(urls)]}}], "stream": False})
        else:
            kinds.append({"content": [{"type": "text", "text": QUESTION},
                                      {"type": "image_url", "image_url": {"url": urls[i % len(urls)]}}], "stream": True})
    return kinds


def burst(url: str, model: str, n: int, tokens: int) -> list[tuple[str, float]]:
    """(outcome, seconds) of ``n`` requests sent at once: outcome "200", "429" or an error name."""
    import openai

    client = openai.OpenAI(base_url=url, api_key=os.environ.get("REMOTEGLM_API_KEY", "none"), max_retries=0, timeout=3600)
    results: list[tuple[str, float] | None] = [None] * n
    go = threading.Barrier(n)

    def one(i: int, kind: dict) -> None:
        go.wait()
        t = time.perf_counter()
        try:
            r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": kind["content"]}],
                                               max_tokens=tokens, temperature=0, stream=kind["stream"])
            if kind["stream"]:
                for _ in r:
                    pass
            results[i] = ("200", time.perf_counter() - t)
        except openai.RateLimitError:
            results[i] = ("429", time.perf_counter() - t)
        except Exception as e:  # noqa: BLE001 - reported, not raised
            results[i] = (type(e).__name__, time.perf_counter() - t)

    threads = [threading.Thread(target=one, args=(i, k)) for i, k in enumerate(request_kinds(n))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return [r for r in results if r is not None]


def pct(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def run(ckpt: Path, model: str, n: int, tokens: int, extra: list[str]) -> dict:
    proc, url, lines = start_server(ckpt, extra)
    try:
        for _ in range(2):
            burst(url, model, 3, tokens)  # warm-up: one of each kind (first forward passes, lazy imports)
        before = memory_kib(proc.pid)
        t = time.perf_counter()
        results = burst(url, model, n, tokens)
        wall = time.perf_counter() - t
        after = memory_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    return {"results": results, "wall": wall, "before": before, "after": after, "exit": proc.returncode}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from_pretrained", type=Path, help="checkpoint (default: a fresh tiny random one)")
    ap.add_argument("--model", default=None, help="model name to ask for (default: the checkpoint folder's name)")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=32, help="max_tokens of each request")
    ap.add_argument("--server-args", default="", help="extra server flags, e.g. '--quant 4 --device cuda'")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.from_pretrained
        if ckpt is None:
            from remoteglm.model.tiny import create_tiny_checkpoint

            ckpt = create_tiny_checkpoint(Path(tmp) / "visualglm-tiny")
        model = args.model or Path(ckpt).resolve().name
        extra = args.server_args.split()
        print(f"API under {args.requests} concurrent requests ({model}, {args.tokens} new tokens each; "
              "1/3 text, 1/3 image, 1/3 image streamed)")
        a = run(ckpt, model, args.requests, args.tokens, ["--max-queue", str(args.requests), *extra])
        ok = [s for outcome, s in a["results"] if outcome == "200"]
        others = sorted({o for o, _ in a["results"]} - {"200"})
        print(f"  --max-queue {args.requests}: {len(ok)}/{args.requests} answered in {a['wall']:.2f} s"
              + (f" (others: {', '.join(others)})" if others else ""))
        if ok:
            print(f"  latency p50 {pct(ok, 50):.2f} s, p95 {pct(ok, 95):.2f} s, max {max(ok):.2f} s")
        print(f"  server RSS {a['before']['VmRSS'] / 1024:.0f} MiB before, {a['after']['VmRSS'] / 1024:.0f} MiB after "
              f"(peak {a['after']['VmHWM'] / 1024:.0f} MiB); exit code after SIGTERM {a['exit']}")
        b = run(ckpt, model, args.requests, args.tokens, extra)
        ok_b = [s for outcome, s in b["results"] if outcome == "200"]
        refused = [s for outcome, s in b["results"] if outcome == "429"]
        print(f"  default --max-queue: {len(ok_b)} answered, {len(refused)} refused with 429 + Retry-After"
              + (f" (p95 of a refusal {pct(refused, 95) * 1000:.0f} ms)" if refused else "")
              + f"; server RSS {b['before']['VmRSS'] / 1024:.0f} -> {b['after']['VmRSS'] / 1024:.0f} MiB")
        bad = [o for o, _ in a["results"] + b["results"] if o not in ("200", "429")]
        return 1 if bad or a["exit"] != 0 or b["exit"] != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
