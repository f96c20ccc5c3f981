"""Inference benchmark: peak memory, first-token latency and tokens/s for float / int8 / int4.

    python benchmarks/infer_bench.py                               # tiny model on the CPU: fp32, int8, int4
    python benchmarks/infer_bench.py --size full                   # full-size visualglm-6b (random weights) on a CUDA GPU: fp16, int8, int4
    python benchmarks/infer_bench.py --size full --weights-only    # no GPU: exact weight bytes of the full model per mode

Each mode runs in a fresh process, so its peak memory is its own. The quantised modes load the way
`--quant` serves: float weights in host RAM, quantised onto the device layer by layer (ChatGLM
linears NF4/int8; on CUDA also the int8 output head and the embedding table in host RAM).
One run = preprocess + encode the image, prefill the prompt, decode --new_tokens tokens (<eop>
banned, so every run decodes the same number). First-token latency = request to first token;
tokens/s = the tokens after the first / their time. Medians over --runs after one warm-up.

Memory: GPU peak = torch.cuda.max_memory_allocated over the runs (weights included; the CUDA
context, ~0.5 GiB, is not); CPU peak = the process's peak RSS (Python and libraries included).
Sizes are GiB (2^30 bytes), the unit torch and nvidia-smi report and the one VisualGLM's published
figures (fp16 ~15, int4 >= 6.3) are in: fp16 weights alone are 15.6e9 bytes = 14.5 GiB.
Targets on the full size (GPU): int4 inference peak <= 5.5, fp16 <= 15 (exit 1 if missed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMAGE = ROOT / "tests" / "fixtures" / "images" / "OSBS_029.tif"
QUESTION = "描述这张图片。"
MODES = ("float", "int8", "int4")
TARGETS_GIB = {"int4": 5.5, "float": 15.0}
GiB = 2**30


def random_fill(model, generator_seed: int = 0) -> None:
    """Random weights for a model built with skip_init: N(0, 0.02), LayerNorms 1/0."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(generator_seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or name.endswith("ln_vision.weight") or ".ln" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif p.device.type == "cpu":
                p.normal_(0, 0.02, generator=g)
            else:
                p.normal_(0, 0.02)


def bits_of(mode: str) -> int | None:
    return {"float": None, "int8": 8, "int4": 4}[mode]


# ---- one mode, in its own process -------------------------------------------------------------------
def build(args, mode: str, device: str):
    """(model, tokenizer, load seconds)."""
    import torch

    from remoteglm.model import quant, quant_layers
    from remoteglm.model.tiny import create_tiny_checkpoint
    from remoteglm.model.tiny_tokenizer import train_tiny_tokenizer
    from remoteglm.model.tokenizer import ChatGLMTokenizer

    work = Path(tempfile.mkdtemp(prefix="infer_bench_"))
    if args.size == "tiny":
        ckpt = create_tiny_checkpoint(work / "tiny")
        t = time.perf_counter()
        model, tok, _ = quant.load_model_quantized(ckpt, bits_of(mode), device=device, progress=False)
        return model, tok, time.perf_counter() - t
    # Full size, random weights; the tiny tokenizer is enough to feed it (ids < its vocabulary).
    from remoteglm.model.config import get_config
    from remoteglm.model.visualglm import build_model

    tok = ChatGLMTokenizer.from_pretrained(train_tiny_tokenizer(work / "ice_text.model"))
    cfg = get_config("visualglm-6b")
    t = time.perf_counter()
    if mode == "float":
        model = build_model(cfg, device=device, dtype=torch.float16, skip_init=True)
        random_fill(model)
    else:  # as --quant loads: fp16 in host RAM, quantised onto the card one layer at a time
        model = build_model(cfg, device="cpu", dtype=torch.float16, skip_init=True)
        random_fill(model)
        on_gpu = device.startswith("cuda")
        quant_layers.quantize_model(model, bits_of(mode), device=device, lm_head=on_gpu, offload_embeddings=on_gpu, progress=True)
    model.eval()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return model, tok, time.perf_counter() - t


def one_run(model, tok, new_tokens: int, sync) -> tuple[float, float]:
    """(first-token seconds, decode tokens/s) of one request."""
    import torch

    from remoteglm.model.prompt import encode_prompt
    from remoteglm.serve.generation import generate_tokens, image_embeddings
    from remoteglm.serve.sampling import GenerationConfig, banned_ids

    cfg = GenerationConfig.make(None, do_sample=False, max_new_tokens=new_tokens, repetition_penalty=1.0)
    dev = next(model.parameters()).device
    banned = banned_ids(tok, model.config.vocab_size, False, dev).clone()
    banned[tok.eos_token_id] = True  # every run decodes exactly new_tokens
    t0 = time.perf_counter()
    emb = image_embeddings(model, IMAGE.read_bytes())
    p = encode_prompt(tok, QUESTION, image_length=model.image_length)
    ids, pre = p.ids, p.pre_image
    first = None
    n = 0
    for _ in generate_tokens(model, torch.tensor([ids]), [0], cfg, tok.eos_token_id, image_embeds=emb, pre_image=pre, banned=banned):
        sync()
        n += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    return first - t0, (n - 1) / (end - first) if n > 1 else float("nan")


def worker(args) -> dict:
    import torch

    from remoteglm.compat import single_process_env
    from remoteglm.model import quant_layers

    single_process_env()
    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() and args.size == "full" else "cpu")
    if args.size == "full" and not device.startswith("cuda") and not args.weights_only:
        raise SystemExit("the full-size benchmark needs a CUDA GPU (fp16 weights are 14.5 GiB); use --weights-only without one")
    if args.weights_only:
        return weights_only(args.worker)
    gpu = device.startswith("cuda")
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    model, tok, load_s = build(args, args.worker, device)
    load_peak = torch.cuda.max_memory_allocated() if gpu else None
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    one_run(model, tok, min(4, args.new_tokens), sync)  # warm-up (kernels, allocator, caches)
    runs = [one_run(model, tok, args.new_tokens, sync) for _ in range(args.runs)]
    mem = quant_layers.memory_by_device(model)
    return {
        "mode": args.worker, "size": args.size, "device": device,
        "dtype": quant_layers.describe_quant(model), "threads": args.threads,
        "weights_device_bytes": mem.get("cuda" if gpu else "cpu", 0),
        "weights_host_bytes": mem.get("cpu", 0) if gpu else None,
        "peak_bytes": torch.cuda.max_memory_allocated() if gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_reserved_bytes": torch.cuda.max_memory_reserved() if gpu else None,
        "load_peak_bytes": load_peak,
        "load_s": load_s,
        "first_token_s": statistics.median(r[0] for r in runs),
        "tokens_per_s": statistics.median(r[1] for r in runs),
        "new_tokens": args.new_tokens, "runs": args.runs,
        "gpu": torch.cuda.get_device_name() if gpu else None,
    }


def weights_only(mode: str) -> dict:
    """Exact weight bytes of the full model as it would sit on a GPU, computed on the CPU:
    every distinct quantised layer shape is quantised once (bitsandbytes, real bytes) and
    multiplied by its count; the float parts are counted from the model itself."""
    import torch

    from remoteglm.model import quant_layers
    from remoteglm.model.config import get_config
    from remoteglm.model.visualglm import build_model

    model = build_model(get_config("visualglm-6b"), device="cpu", dtype=torch.float16, skip_init=True)  # pages never touched
    total = quant_layers.model_memory_bytes(model)
    host = 0
    if mode != "float":
        groups = defaultdict(list)
        for owner, attr, _ in quant_layers.quant_targets(model):
            lin = getattr(owner, attr)
            groups[(tuple(lin.weight.shape), lin.bias is not None)].append(lin)
        head = model.get_mixin("chatglm-final").lm_head
        plan = [(lins, bits_of(mode)) for lins in groups.values()] + [([head], 8)]
        for lins, bits in plan:
            float_bytes = quant_layers.model_memory_bytes(lins[0])
            q_bytes = quant_layers.model_memory_bytes(quant_layers.quantize_linear(lins[0], bits, "cpu", compute_dtype=torch.float16))
            total += len(lins) * (q_bytes - float_bytes)
        host = quant_layers.model_memory_bytes(model.transformer.word_embeddings)  # the table moves to host RAM
        total -= host
    return {"mode": mode, "size": "full", "device": "cuda (computed on cpu)", "weights_device_bytes": total,
            "weights_host_bytes": host, "weights_only": True}


# ---- the driver ----------------------------------------------------------------------------------------
def fmt_bytes(n) -> str:
    if n is None:
        return "-"
    return f"{n / GiB:.2f} GiB" if n >= 0.1 * GiB else f"{n / 2**20:.1f} MiB"


def run_mode(args, mode: str) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    cmd = [sys.executable, __file__, "--worker", mode, "--json", str(out), "--size", args.size,
           "--runs", str(args.runs), "--new_tokens", str(args.new_tokens), "--threads", str(args.threads)]
    if args.device:
        cmd += ["--device", args.device]
    if args.weights_only:
        cmd.append("--weights-only")
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = str(args.threads)
    r = subprocess.run(cmd, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"mode {mode} failed (exit {r.returncode})")
    res = json.loads(out.read_text())
    out.unlink()
    return res


def _vlm(what: str) -> int | None:
    """``--model qwen2_5_vl|glm4v``: the transformers engine's benchmark (benchmarks/vlm_bench.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import vlm_bench

    return vlm_bench.delegate(what)


def main() -> int:
    rc = _vlm("infer")
    if rc is not None:
        return rc
    ap = argparse.ArgumentParser(epilog="--model qwen2_5_vl|glm4v: the transformers engine (benchmarks/vlm_bench.py)",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--device", default=None, help="default: cuda for --size full, cpu for tiny")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--new_tokens", type=int, default=None, help="tokens decoded per run (default 32 tiny, 128 full)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default 1 for tiny: its ops are too small to split)")
    ap.add_argument("--weights-only", dest="weights_only", action="store_true", help="no generation: weight bytes only (no GPU needed)")
    ap.add_argument("--save", metavar="JSON", help="also write the results here")
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.new_tokens = args.new_tokens or (32 if args.size == "tiny" else 128)
    args.threads = args.threads or (1 if args.size == "tiny" else (os.cpu_count() or 1))
    if args.worker:
        Path(args.json).write_text(json.dumps(worker(args)))
        return 0
    results = [run_mode(args, m) for m in args.modes]
    print()
    if args.weights_only:
        print(f"{'mode':6} {'weights on GPU':>15} {'host RAM':>10}")
        for r in results:
            print(f"{r['mode']:6} {fmt_bytes(r['weights_device_bytes']):>15} {fmt_bytes(r['weights_host_bytes']):>10}")
    else:
        r0 = results[0]
        print(f"{r0['size']} model on {r0['gpu'] or 'CPU'} ({r0['device']}, {r0['threads']} threads), {args.new_tokens} new tokens, "
              f"median of {args.runs} runs")
        peak_name = "GPU peak" if r0["gpu"] else "peak RSS"
        print(f"{'mode':16} {'weights':>10} {'host RAM':>9} {peak_name:>10} {'load':>7} {'first token':>12} {'tokens/s':>9}")
        for r in results:
            print(f"{r['dtype']:16} {fmt_bytes(r['weights_device_bytes']):>10} {fmt_bytes(r['weights_host_bytes']):>9} "
                  f"{fmt_bytes(r['peak_bytes']):>10} {r['load_s']:6.1f}s {r['first_token_s'] * 1000:9.1f} ms {r['tokens_per_s']:9.1f}")
    if args.save:
        Path(args.save).write_text(json.dumps(results, indent=2) + "\n")
    failed = []
    for r in results:
        target = TARGETS_GIB.get(r["mode"])
        if r["size"] == "full" and target and not r.get("weights_only") and r["device"].startswith("cuda"):
            ok = r["peak_bytes"] <= target * GiB
            print(f"target {r['mode']} inference peak <= {target} GiB: {r['peak_bytes'] / GiB:.2f} GiB "
                  f"({r['peak_bytes'] / 1e9:.2f} GB) {'ok' if ok else 'MISSED'}")
            failed += [] if ok else [r["mode"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
