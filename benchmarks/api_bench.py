"""API server benchmark: throughput of concurrent clients against one by one, latency of a burst
of requests and the server's memory.

    python benchmarks/api_bench.py                        # tiny VisualGLM on the CPU
    python benchmarks/api_bench.py --from_pretrained DIR  # another checkpoint or model folder (e.g. a tiny
                                                          # Qwen2.5-VL from remoteglm.model.hf_tiny; --quant 4
                                                          # etc. via --server-args)
    python benchmarks/api_bench.py --part throughput      # only the first part

Throughput: one server (``--max_queue`` = --clients); first one client sends --one-by-one requests,
each once the previous is answered; then --clients clients (threads) send --throughput-requests
requests the same way, all at once; three times in turn, the fastest run of each counts (other
work on a shared machine only slows a run down). Every request carries an image (the two fixture
tiles in turn, as a client resends its image each turn: their encodings come from the server's
cache; ``--distinct``: a different image each, decoded and encoded every time) and asks for
--tokens new tokens greedily, not streamed. Requests/s = answered /
wall time; the ratio of the two is what answering waiting requests together (``--max_batch``)
buys (goal >= 3x for the tiny VisualGLM on the CPU at 16 clients).

Engine: in this process, ``Engine.batch`` (evaluation's path, in the caller's thread) of 4 and of
16 image questions against the same questions one by one (``Engine.reply``), best of 3.

The server (``python -m remoteglm.serve.api``) runs as its own process on 127.0.0.1; 40 clients
(the ``openai`` package, one thread each, no retries) send their requests at the same moment: a
third text only, a third with a base64 image (two fixture tiles), a third streamed, each asking
for --tokens new tokens greedily (<eop> may end one earlier). Latency = send to the last byte of
the answer, per request; p50 / p95 / max over the 40. The server answers the waiting requests in
batches (text and image requests in separate ones, VisualGLM's rule), so the last in line waits
for the batches before its own.

Run 1 starts the server with ``--max_queue 40`` (everybody may wait). Run 2 uses the default
``--max_queue`` (16): the requests beyond the queue are refused at once with 429 + Retry-After;
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


def distinct_images(n: int, seed: int) -> list[str]:
    """``n`` data URLs of different PNG images (the farmland tile with its own stamp each): no two
    requests share an image, so the server decodes and encodes every one."""
    import io

    from PIL import Image

    base = Image.open(IMAGES[1]).convert("RGB")
    urls = []
    for i in range(n):
        img = base.copy()
        x, y = i % 200, (i * 7) % 200
        img.paste(((i * 37 + seed) % 256, (i * 91) % 256, (seed * 13 + i) % 256), (x, y, x + 24, y + 24))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return urls


def closed_loop(url: str, model: str, clients: int, total: int, tokens: int, distinct: bool = False,
                seed: int = 0) -> tuple[float, int, list[str]]:
    """``total`` image requests from ``clients`` threads, each sending its next request once the
    previous is answered: (wall seconds, answered, failures). The two fixture tiles in turn, or
    (``distinct``) a different image each."""
    import openai

    client = openai.OpenAI(base_url=url, api_key=os.environ.get("REMOTEGLM_API_KEY", "none"), max_retries=0, timeout=3600)
    urls = distinct_images(total, seed) if distinct else [
        f"data:image/{'tiff' if p.suffix == '.tif' else 'png'};base64," + base64.b64encode(p.read_bytes()).decode() for p in IMAGES]
    todo = iter(range(total))
    take = threading.Lock()
    answered, failures = [0], []

    def worker() -> None:
        while True:
            with take:
                i = next(todo, None)
            if i is None:
                return
            content = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": urls[i % len(urls)]}}]
            try:
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                               max_tokens=tokens, temperature=0)
                answered[0] += 1
            except Exception as e:  # noqa: BLE001 - reported, not raised
                failures.append(type(e).__name__)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t, answered[0], failures


def throughput(ckpt: Path, model: str, clients: int, single: int, total: int, tokens: int, extra: list[str],
               distinct: bool = False, rounds: int = 3) -> dict:
    """The two ways in turn, ``rounds`` times; the fastest run of each (the machine may be shared)."""
    proc, url, _ = start_server(ckpt, ["--max_queue", str(clients), *extra])
    try:
        closed_loop(url, model, 2, 4, tokens)  # warm-up
        ones, manys = [], []
        for r in range(rounds):
            ones.append(closed_loop(url, model, 1, single, tokens, distinct, seed=2 * r + 1))
            manys.append(closed_loop(url, model, clients, total, tokens, distinct, seed=2 * r + 2))
    finally:
        proc.terminate()
        proc.wait(30)
    return {"one": min(ones), "many": min(manys), "exit": proc.returncode,
            "failures": [f for r in ones + manys for f in r[2]]}


def engine_batches(ckpt: Path, tokens: int, sizes=(4, 16), rounds: int = 3) -> list[tuple[int, float, float]]:
    """In this process, in the caller's thread (as evaluation calls it): ``Engine.batch`` of n image
    questions against the same n one by one (``Engine.reply``), greedy, --tokens new tokens each;
    the best of ``rounds``: [(n, one-by-one seconds, batch seconds)]."""
    from remoteglm.serve.sampling import CHAT_DEFAULTS
    from remoteglm.serve.loading import load_engine

    engine, _ = load_engine(str(ckpt), defaults=CHAT_DEFAULTS)
    images = sorted((ROOT / "data" / "sample" / "images").iterdir())
    questions = [QUESTION, "有几条道路？", "图中有什么？"]
    out = []
    for n in sizes:
        ims = [str(images[i % len(images)]) for i in range(n)]
        qs = [questions[i % len(questions)] for i in range(n)]
        engine.batch(ims[:2], qs[:2], max_new_tokens=tokens)  # warm-up
        one, both = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            for im, q in zip(ims, qs):
                engine.reply(im, q, do_sample=False, max_new_tokens=tokens)
            one.append(time.perf_counter() - t)
            t = time.perf_counter()
            engine.batch(ims, qs, batch_size=n, max_new_tokens=tokens)
            both.append(time.perf_counter() - t)
        out.append((n, min(one), min(both)))
    return out


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
    ap.add_argument("--part", choices=("all", "throughput", "engine", "latency"), default="all")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients of the throughput part")
    ap.add_argument("--one-by-one", dest="one_by_one", type=int, default=16, help="requests sent one by one")
    ap.add_argument("--throughput-requests", dest="throughput_requests", type=int, default=64,
                    help="requests the concurrent clients send in all")
    ap.add_argument("--distinct", action="store_true",
                    help="throughput with a different image in every request (nothing from the image cache)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.from_pretrained
        if ckpt is None:
            from remoteglm.model.tiny import create_tiny_checkpoint

            ckpt = create_tiny_checkpoint(Path(tmp) / "visualglm-tiny")
        model = args.model or Path(ckpt).resolve().name
        extra = args.server_args.split()
        failed = False
        if args.part in ("all", "throughput"):
            t = throughput(ckpt, model, args.clients, args.one_by_one, args.throughput_requests, args.tokens, extra,
                           args.distinct)
            (s1, n1, _), (s2, n2, _) = t["one"], t["many"]
            r1, r2 = n1 / s1, n2 / s2
            kind = "a different image each" if args.distinct else "the two fixture tiles in turn"
            print(f"API throughput ({model}, image requests: {kind}; {args.tokens} new tokens each, greedy; the best of 3 runs)")
            print(f"  one by one: {n1} answered in {s1:.2f} s = {r1:.2f} requests/s")
            print(f"  {args.clients} clients at once: {n2} answered in {s2:.2f} s = {r2:.2f} requests/s: "
                  f"{r2 / r1:.2f}x one by one (goal >= 3x for the tiny VisualGLM on the CPU)")
            if t["failures"]:
                print(f"  failed: {', '.join(sorted(set(t['failures'])))}")
            failed |= bool(t["failures"]) or t["exit"] != 0
        if args.part in ("all", "engine"):
            print(f"engine batches in the caller's thread ({model}, image questions, {args.tokens} new tokens each, greedy)")
            for n, one, both in engine_batches(ckpt, args.tokens):
                print(f"  {n} questions: one by one {one:.2f} s, one batch {both:.2f} s: {one / both:.2f}x")
        if args.part in ("all", "latency"):
            failed |= latency(ckpt, model, args.requests, args.tokens, extra)
        return 1 if failed else 0


def latency(ckpt: Path, model: str, requests: int, tokens: int, extra: list[str]) -> bool:
    """The burst part; True if anything failed."""
    print(f"API under {requests} concurrent requests ({model}, {tokens} new tokens each; "
          "1/3 text, 1/3 image, 1/3 image streamed)")
    a = run(ckpt, model, requests, tokens, ["--max_queue", str(requests), *extra])
    ok = [s for outcome, s in a["results"] if outcome == "200"]
    others = sorted({o for o, _ in a["results"]} - {"200"})
    print(f"  --max_queue {requests}: {len(ok)}/{requests} answered in {a['wall']:.2f} s"
          + (f" (others: {', '.join(others)})" if others else ""))
    if ok:
        print(f"  latency p50 {pct(ok, 50):.2f} s, p95 {pct(ok, 95):.2f} s, max {max(ok):.2f} s")
    print(f"  server RSS {a['before']['VmRSS'] / 1024:.0f} MiB before, {a['after']['VmRSS'] / 1024:.0f} MiB after "
          f"(peak {a['after']['VmHWM'] / 1024:.0f} MiB); exit code after SIGTERM {a['exit']}")
    b = run(ckpt, model, requests, tokens, extra)
    ok_b = [s for outcome, s in b["results"] if outcome == "200"]
    refused = [s for outcome, s in b["results"] if outcome == "429"]
    print(f"  default --max_queue: {len(ok_b)} answered, {len(refused)} refused with 429 + Retry-After"
          + (f" (p95 of a refusal {pct(refused, 95) * 1000:.0f} ms)" if refused else "")
          + f"; server RSS {b['before']['VmRSS'] / 1024:.0f} -> {b['after']['VmRSS'] / 1024:.0f} MiB")
    bad = [o for o, _ in a["results"] + b["results"] if o not in ("200", "429")]
    return bool(bad) or a["exit"] != 0 or b["exit"] != 0


if __name__ == "__main__":
    sys.exit(main())
