#!/usr/bin/env python3
"""The GPU check of issue 12, prepared to run in ONE call of the device tool (under 8 minutes on an
H200): full-size VisualGLM-6B with random weights — fine-tune memory, speed and MFU, fp16/int8/int4
inference, and the CUDA correctness checks. It writes one JSON file with every figure (or an
explicit skip and why) plus its log, both rewritten after each part, and prints a table at the end.

On the device — first, here: `bash benchmarks/gpu_wheels.sh` (the wheels it lacks, into .whl/) — then
one `run` call with carry [".whl"] and timeout_s 540:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --size full --budget-s 420 --out $OUT/gpu_check.json

($OUT/gpu_check.json, $OUT/gpu_check.log and every worker's and run's log in
$OUT/gpu_check_logs.tar.gz come back; a rerun of only some parts: add
``--parts infer`` or ``--units lora-b4-cache-bf16,...``.) Here, on a CPU at tiny size, every part
runs scaled down (what tests/benchmarks/test_gpu_check.py runs, ~1 min on 2 cores):

    python benchmarks/gpu_check.py --size tiny --out /tmp/gpu_check/gpu_check.json

Parts, in this order (elapsed time printed for each; a part or training run whose estimate would
pass --budget-s is skipped with a note, and the results so far stand):

0. Three untimed parts side by side, all over before the first timed one starts:
   base: the random-init model built once — at full size on the GPU (sat's N(0, 0.02) init, bf16,
   the tiny tokenizer: only ids matter) and saved as a sat checkpoint in the work folder; the
   training and inference parts load it through the project's own loaders. Also: GPU name,
   versions, a bf16 8192^3 matmul rate, the FLOP formula checked against torch's FlopCounterMode
   on the tiny model, and the token count of the training sample.
   correct: logits of one real prompt (32 image tokens) in bf16 and fp16 against fp32 on the same
   random weights (built in fp32 on the device, then cast): max abs / relative difference, top-1
   agreement; NF4 on CUDA against NF4 on the CPU for one ChatGLM layer (same weight, same input).
   resume: the tiny model fine-tuned on the device (bf16 on CUDA), killed with SIGKILL once
   ``latest`` reaches a step, resumed with ``--resume RUN``; its per-step losses
   (train_summary.json) against an uninterrupted run.
1. train (core): finetune_visualglm.py runs — LoRA and QLoRA at batch 1 and 4, bf16, gradient
   checkpointing, feature cache on — 20 steps each on one repeated batch (the real training
   layout: <img> + 32 image slots + prompt + [gMASK]<sop> + label). Peak allocated / reserved
   CUDA memory (from train_summary.json: the training steps, weights included), steady step time
   (mean step after the first two), samples/s, tokens/s, MFU, first/last loss.
2. infer: fp16 / int8 / int4 loaded the way ``--quant`` serves (remoteglm.model.quant), the real
   prompt layout with 32 image tokens, greedy, <eop> banned so every run decodes --new-tokens:
   peak memory, first-token latency (request -> first token: image preprocessing and encoding,
   prefill, first step) and decode tokens/s at 1 request and at 4 concurrent requests = one
   batch of 4 prompts (4 images, 4 questions, left-padded) through
   remoteglm.serve.generation.generate_tokens, the project's batched generation. (The API server
   runs one generation at a time, so 4 concurrent API users share the 1-request rate.)
3. train (rest): the same with the feature cache off (the image encoder runs every step), and
   LoRA batch 1 in fp16 once.

Training runs are pipelined: run k+1 starts once run k's timed steps are over (its final
checkpoint write, 15 GB for LoRA, overlaps k+1's loading); ``prev_still_running_at_start`` in the
JSON says whether that write was still going when k+1's first step began.

FLOPs per training step (MFU = these / step time / the GPU's dense bf16 peak; the peak comes from
a table by GPU name — H100/H200 SXM 989.4 TFLOP/s, H100/H200 NVL 835, H100 PCIe 756, A100 312 —
or --peak-tflops):

    4·P·T + 6·N·T + 12·L·d·Σn²   (+ the image encoder's forward per sample when the cache is off)

P = ChatGLM's matmul weights every token passes through (per layer qkv 4096x12288, dense, h->4h,
4h->h, times 28 layers, plus the 130528x4096 LM head; the embedding lookup is no matmul) = 6.17e9;
T = computed tokens = batch x padded length n; N = LoRA parameters (8·r·d per layer). Forward
2PT + 2NT + 4Ld·Σn² (attention scores and values, full n² as sat computes them); backward through
the frozen weights gives input gradients only: 2PT; LoRA input and weight gradients 4NT;
attention backward 8Ld·Σn². NOT counted: the recomputation that gradient checkpointing adds (a
second forward of every layer; reported separately as HFU), the NF4 dequantisation of QLoRA, and
nothing is subtracted for layer 0's qkv input gradient, which autograd skips (< 1 %).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GiB = 2**30
SAMPLE = ROOT / "data" / "sample"
IMAGES = [SAMPLE / "images" / n for n in ("s2_farmland.png", "OSBS_029.tif", "s2_town.png", "SOAP_031.png")]
QUESTIONS = ["描述这张图片。", "这张遥感图像中有什么？", "请详细描述这幅遥感图像的内容。", "图中有哪些地物？"]
LORA_RANK = 10
# Dense bf16 peaks (vendor datasheets, no sparsity), matched in order against the GPU's name.
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200 NVL", 835.0), ("GH200", 989.4),
               ("H100", 989.4), ("H200", 989.4), ("A100", 312.0)]
# Training targets in GB (1e9, as benchmarks/train_bench.py), inference targets in GiB (as infer_bench.py).
TRAIN_TARGET_GB = {("qlora", 1): 6.0, ("lora", 1): 14.0}
INFER_TARGET_GIB = {"int4": 5.5, "float": 15.0}
MFU_GOAL = 0.40

SIZES = {
    # steps per training run, decode tokens and timed runs per inference setting, default budget,
    # estimates (s) used to decide whether the next part still fits, LR/alpha of the repeated-batch runs
    "full": dict(steps=20, new_tokens=64, runs=3, budget=420.0, lr=2e-3, alpha=10.0, workers=2, threads=None,
                 est={"correct": 75, "unit": 45, "infer": 150}, unit_timeout=150, units=None, disk_gb=40,
                 # a worker past its limit is killed (a hang must not eat the budget)
                 timeouts={"base": 240, "correct": 180, "resume": 180}),
    # tiny: four of the nine runs, still each method, batch size, cache setting and precision once
    # (a run there is mostly process start-up); --all-units runs the nine
    "tiny": dict(steps=4, new_tokens=8, runs=2, budget=600.0, lr=1e-2, alpha=10.0, workers=0, threads=1,
                 est={"correct": 15, "unit": 12, "infer": 20}, unit_timeout=240, disk_gb=0.2,
                 timeouts={"base": 300, "correct": 300, "resume": 300},
                 units=["lora-b1-cache-bf16", "qlora-b4-cache-bf16", "qlora-b1-nocache-bf16", "lora-b1-cache-fp16"]),
}
CORE_UNITS = [("lora", 1, True, "bf16"), ("qlora", 1, True, "bf16"), ("lora", 4, True, "bf16"), ("qlora", 4, True, "bf16")]
REST_UNITS = [("lora", 1, False, "bf16"), ("qlora", 1, False, "bf16"), ("lora", 4, False, "bf16"),
              ("qlora", 4, False, "bf16"), ("lora", 1, True, "fp16")]
PARTS = ("correct", "train", "infer", "resume")


def unit_name(method: str, batch: int, cache: bool, prec: str) -> str:
    return f"{method}-b{batch}-{'cache' if cache else 'nocache'}-{prec}"


UNIT_ORDER = [unit_name(*u) for u in CORE_UNITS + REST_UNITS]


# ---- FLOPs ----------------------------------------------------------------------------------------
def chatglm_matmul_params(cfg) -> int:
    """P: ChatGLM weights each token is multiplied with (layers' qkv, dense, h->4h, 4h->h + LM head)."""
    d, f = cfg.hidden_size, cfg.inner_hidden_size or 4 * cfg.hidden_size
    return cfg.num_layers * (3 * d * d + d * d + 2 * d * f) + cfg.vocab_size * d


def lora_params(cfg, rank: int) -> int:
    """N: LoRA on every layer's qkv (3 A/B pairs, r x d and d x r) and dense (one pair)."""
    return cfg.num_layers * 8 * rank * cfg.hidden_size


def encoder_forward_flops(cfg, attention_only: bool = False) -> int:
    """One image through the frozen ViT, Q-Former and glm_proj (forward only); ``attention_only``:
    just the attention products (scores and values), which sat computes with SDPA there."""
    v, q = cfg.vit, cfg.qformer
    t = v.num_patches + 1
    dv, fv = v.hidden_size, v.inner_hidden_size
    nq, dq, dc = q.num_query_tokens, q.hidden_size, q.cross_attn_hidden_size
    fq = q.inner_hidden_size or 4 * dq
    attn = v.num_layers * 4 * t * t * dv + len(q.is_decoder) * 4 * nq * nq * dq + sum(q.is_decoder) * 4 * nq * t * dq
    if attention_only:
        return attn
    vit = v.num_layers * 2 * t * (4 * dv * dv + 2 * dv * fv)
    vit += 2 * v.num_patches * (v.in_channels * v.patch_size ** 2) * dv  # patch embedding
    qf = len(q.is_decoder) * 2 * nq * (4 * dq * dq + 2 * dq * fq)
    # cross-attention layers: query and dense on the queries, key_value on the ViT tokens
    qf += sum(q.is_decoder) * (2 * nq * 2 * dq * dq + 2 * t * dc * 2 * dq)
    return vit + qf + 2 * nq * dq * cfg.hidden_size + attn


def train_step_flops(cfg, rank: int, batch: int, seq: int, cache: bool) -> dict:
    """The FLOP count of one LoRA/QLoRA step (see the module doc) and its parts."""
    P, N, L, d = chatglm_matmul_params(cfg), lora_params(cfg, rank), cfg.num_layers, cfg.hidden_size
    T = batch * seq
    attn = 4 * L * d * batch * seq * seq
    fwd = 2 * P * T + 2 * N * T + attn
    bwd = 2 * P * T + 4 * N * T + 2 * attn
    enc = 0 if cache else batch * encoder_forward_flops(cfg)
    head = 2 * cfg.vocab_size * d * T  # not recomputed: checkpointing is per transformer layer
    recompute = 2 * (P - cfg.vocab_size * d) * T + 2 * N * T + attn
    return {"P": P, "N": N, "T": T, "forward": fwd, "backward": bwd, "encoder": enc, "total": fwd + bwd + enc,
            "recompute": recompute, "lm_head": head}


FLOP_FORMULA = ("per step 4·P·T + 6·N·T + 12·L·d·Σn² (+ image-encoder forward per sample with the cache off); "
                "P = ChatGLM matmul weights a token passes (28 layers' qkv, dense, h->4h, 4h->h + LM head), "
                "T = batch x padded length n, N = LoRA parameters; forward 2PT+2NT+4Ld·Σn², backward through the "
                "frozen weights input gradients only 2PT, LoRA gradients 4NT, attention backward 8Ld·Σn²; gradient-"
                "checkpointing recomputation NOT counted in MFU (HFU adds it), NF4 dequantisation not counted")


def flop_check() -> dict:
    """The formula against torch's FlopCounterMode on the tiny model (CPU, fp32, no checkpointing)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from remoteglm.model.config import get_config
    from remoteglm.model.lora import add_lora
    from remoteglm.model.visualglm import build_model
    from remoteglm.serve.generation import GLMInputs

    cfg = get_config("visualglm-tiny")
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = build_model(cfg, device="cpu", dtype=torch.float32)
        b, n, rank, pre = 2, 48, 4, 2
        ids = torch.randint(10, cfg.vocab_size - 10, (b, n))
        mask, pos = GLMInputs(n, [0] * b, "cpu").full(n, torch.float32)
        pixels = torch.randn(b, 3, cfg.vit.image_size, cfg.vit.image_size)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            emb = model.encode_image(pixels)
        enc = fc.get_total_flops()
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(ids, pos, mask, image_embeds=emb, pre_image=pre)
        fwd = fc.get_total_flops()
        add_lora(model, rank, lora_alpha=1.0)
        for name, p in model.named_parameters():
            p.requires_grad_(".matrix_A." in name or ".matrix_B." in name)
        with FlopCounterMode(display=False) as fc:
            model(ids, pos, mask, image_embeds=emb, pre_image=pre)[0].float().logsumexp(-1).sum().backward()
        step = fc.get_total_flops()
    finally:
        torch.random.set_rng_state(state)
    f = train_step_flops(cfg, rank, b, n, cache=True)
    d = cfg.hidden_size
    skipped = 2 * f["T"] * d * 3 * d + 3 * 2 * f["T"] * rank * d  # layer 0 qkv: no gradient into the embeddings
    out = {
        "config": "visualglm-tiny", "batch": b, "seq": n, "lora_rank": rank,
        # on the CPU, FlopCounterMode does not count SDPA (the image tower's attention): compared without it
        "encoder_forward": {"counted": enc, "formula": b * (encoder_forward_flops(cfg) - encoder_forward_flops(cfg, True)),
                            "formula_with_attention": b * encoder_forward_flops(cfg),
                            "note": "FlopCounterMode does not count CPU SDPA: the image tower's attention is left out of both"},
        "chatglm_forward": {"counted": fwd, "formula": f["forward"] - 2 * f["N"] * f["T"]},
        "lora_step": {"counted": step, "formula": f["total"] - skipped, "formula_as_counted_in_mfu": f["total"],
                      "note": "formula here minus layer 0's qkv input gradient, which autograd skips (MFU counts it)"},
    }
    for v in out.values():
        if isinstance(v, dict) and "counted" in v:
            v["ratio"] = v["counted"] / v["formula"] if v["formula"] else None
    return out


def peak_flops(gpu_name: str | None, override: float | None) -> tuple[float | None, str]:
    if override:
        return override * 1e12, f"--peak-tflops {override:g}"
    if gpu_name:
        for key, tf in PEAK_TFLOPS:
            if key.lower() in gpu_name.lower():
                return tf * 1e12, f"{key}: {tf:g} TFLOP/s dense bf16 (datasheet)"
        return None, f"no dense bf16 peak known for {gpu_name!r}: pass --peak-tflops"
    return None, "CPU: no MFU (pass --peak-tflops to get one)"


# ---- small helpers ------------------------------------------------------------------------------
def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


EXTRA_PATH: list[str] = []  # folders put before the caller's PYTHONPATH in every child (the datasets stand-in)


def child_env(threads: int | None = None, **extra) -> dict:
    """The environment for a child: this repository first on PYTHONPATH (the device's wheels in
    /tmp/site stay on it), one process group of its own (no inherited rank or port)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *EXTRA_PATH] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update({k: str(v) for k, v in extra.items()})
    return env


PREFLIGHT_MODULES = ("typing_extensions", "pydantic", "hjson", "tensorboardX", "datasets", "deepspeed", "bitsandbytes",
                     "sat", "sat.training.deepspeed_training")
PREFLIGHT = ("import importlib, json\nout = {}\nfor m in %r:\n    try:\n        importlib.import_module(m)\n"
             "        out[m] = 'ok'\n    except BaseException as e:\n        out[m] = f'{type(e).__name__}: {e}'[:300]\n"
             "print('PREFLIGHT ' + json.dumps(out))" % (PREFLIGHT_MODULES,))
DATASETS_STUB = '''"""Stand-in written by benchmarks/gpu_check.py: the real datasets package does not import on this
machine. sat imports it at start (sat.data_utils.hf_dataset) but the fine-tune never calls it."""


def load_dataset(*args, **kwargs):
    raise ImportError("datasets is a stand-in here (benchmarks/gpu_check.py): the real one did not import")


def load_from_disk(*args, **kwargs):
    raise ImportError("datasets is a stand-in here (benchmarks/gpu_check.py): the real one did not import")
'''


def preflight(threads) -> dict:
    """Import in a child what the runs need; {module: 'ok' or the error}."""
    r = subprocess.run([sys.executable, "-c", PREFLIGHT], cwd=ROOT, env=child_env(threads), capture_output=True,
                       text=True, timeout=300)
    line = next((x for x in r.stdout.splitlines() if x.startswith("PREFLIGHT ")), None)
    if line is None:
        return {"error": (r.stdout + r.stderr)[-2000:]}
    return json.loads(line[len("PREFLIGHT "):])


def tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return ""
    return "\n".join(line for line in lines[-n:] if line.strip())


def gib(n) -> str:
    return "-" if n is None else f"{n / GiB:.2f}"


def median(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else None


class Log:
    """Lines to stdout and to the log file beside the JSON, each with the elapsed time."""

    def __init__(self, path: Path, t0: float):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w", encoding="utf-8", buffering=1)
        self.t0 = t0

    def __call__(self, msg: str = "", raw: bool = False) -> None:
        text = msg if raw else "\n".join(f"[{time.time() - self.t0:7.1f} s] {line}" for line in (msg.splitlines() or [""]))
        print(text, flush=True)
        self.f.write(text + "\n")


# ---- workers (each its own process, so each one's GPU memory and peaks are its own) ----------------
def _sync_fn(dev):
    import torch

    return torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)


def env_info() -> dict:
    import importlib.metadata as md
    import platform

    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
            "cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available()}
    for pkg in ("SwissArmyTransformer", "deepspeed", "bitsandbytes", "transformers", "numpy"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_bytes=p.total_memory, capability=f"{p.major}.{p.minor}",
                    multiprocessors=p.multi_processor_count, bf16=torch.cuda.is_bf16_supported())
    return info


def matmul_rate() -> dict:
    """bf16 8192^3 products on random data: the rate this GPU reaches, mean of 10 after 3 warm-ups."""
    import torch

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    s = start.elapsed_time(end) / 1000 / 10
    del a, b
    torch.cuda.empty_cache()
    return {"size": n, "seconds_each": s, "tflops": 2 * n ** 3 / s / 1e12}


def training_record() -> dict:
    """The repeated training sample: the sample caption with the longest label, on its image."""
    recs = json.loads((SAMPLE / "sample_train.json").read_text(encoding="utf-8"))
    r = max(recs, key=lambda x: len(x["label"]))
    return {"img": str((SAMPLE / r["img"]).resolve()), "prompt": r["prompt"], "label": r["label"]}


def random_model_config(size: str, work: Path):
    """(tokenizer, config) of the random-init model: the tiny tokenizer (only ids matter), the
    config of ``size`` with its special ids and a vocabulary at least the tokenizer's."""
    import dataclasses

    from remoteglm.model.config import get_config
    from remoteglm.model.tiny_tokenizer import train_tiny_tokenizer
    from remoteglm.model.tokenizer import ChatGLMTokenizer

    tok = ChatGLMTokenizer.from_pretrained(train_tiny_tokenizer(work / "ice_text.model"))
    cfg = get_config("visualglm-6b" if size == "full" else "visualglm-tiny")
    return tok, dataclasses.replace(cfg.with_tokenizer(tok), vocab_size=max(cfg.vocab_size, tok.vocab_size))


def worker_base(job: dict) -> dict:
    import torch

    from remoteglm.compat import single_process_env

    single_process_env()
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    from remoteglm.model.saving import save_sat_checkpoint
    from remoteglm.model.tiny import create_tiny_checkpoint
    from remoteglm.model.tokenizer import ChatGLMTokenizer
    from remoteglm.model.visualglm import build_model
    from remoteglm.model.sample import SampleEncoder

    out: dict = {"env": env_info()}
    work, base = Path(job["work"]), Path(job["base"])
    t = time.perf_counter()
    if job["size"] == "tiny":
        create_tiny_checkpoint(base)  # random (no pre-training): seed 0
        out["built_on"] = "cpu"
    else:
        tok, cfg = random_model_config("full", work)
        torch.manual_seed(0)
        try:
            model = build_model(cfg, device="cuda", dtype=torch.bfloat16)
            out["built_on"] = "cuda"
        except Exception as e:  # noqa: BLE001 - fall back to the slow CPU init rather than lose the run
            out["gpu_init_error"] = f"{type(e).__name__}: {e}"
            gc.collect()
            torch.cuda.empty_cache()
            model = build_model(cfg, device="cpu", dtype=torch.bfloat16)
            out["built_on"] = "cpu (GPU init failed)"
        torch.cuda.synchronize()
        out["init_seconds"] = time.perf_counter() - t
        model.to("cpu")
        save_sat_checkpoint(model, cfg, base, iteration=1, tokenizer=tok)
        del model
        gc.collect()
        torch.cuda.empty_cache()
    out["seconds"] = time.perf_counter() - t
    weights = next(base.glob("*/mp_rank_00_model_states.pt"))
    out["checkpoint_bytes"] = weights.stat().st_size
    tok = ChatGLMTokenizer.from_pretrained(base / "ice_text.model")
    cfg_json = json.loads((base / "model_config.json").read_text())
    rec = training_record()
    enc = SampleEncoder(tok, 128, 256, int(cfg_json.get("image_length", 32))).encode(rec["prompt"], rec["label"])
    out["sample"] = {**rec, "tokens": len(enc.input_ids), "answer_tokens": sum(1 for x in enc.labels if x != -100)}
    out["flop_check"] = flop_check()
    if torch.cuda.is_available():
        out["matmul_bf16"] = matmul_rate()
    return out


def _logits(model, tok, dev, dtype):
    """Logits [n, V] (fp32, CPU) of the real first-turn prompt with its image, and the image embeddings."""
    import torch

    from remoteglm.model.image import preprocess_image
    from remoteglm.model.prompt import encode_prompt
    from remoteglm.serve.generation import GLMInputs

    p = encode_prompt(tok, QUESTIONS[0], image_length=model.image_length)
    ids, pre = p.ids, p.pre_image
    with torch.no_grad():
        emb = model.encode_image(preprocess_image(IMAGES[0], model.config.vit.image_size).to(dev, dtype))
        mask, pos = GLMInputs(len(ids), [0], dev).full(len(ids), dtype)
        out = model(torch.tensor([ids], device=dev), pos, mask, image_embeds=emb, pre_image=pre)[0]
    return emb.float().cpu()[0], out.float().cpu()[0]


def _diff(a, b) -> dict:
    """a against the reference b."""
    err = (a - b).abs()
    return {"max_abs": float(err.max()), "mean_abs": float(err.mean()),
            "max_rel": float(err.max() / b.abs().max().clamp(min=1e-30)),
            "ref_max_abs": float(b.abs().max())}


def worker_correct(job: dict) -> dict:
    """Its own random model (it starts beside the base build): fp32, then the same weights cast."""
    import torch

    from remoteglm.compat import single_process_env

    single_process_env()
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    from remoteglm.model.checkpoint import load_state_dict_checked
    from remoteglm.model.visualglm import build_model, keep_rotary_fp32

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out: dict = {"device": str(dev), "prompt": QUESTIONS[0], "image": IMAGES[0].name, "reference": "float32",
                 "weights": "random init (sat's), built in fp32 on the device; bf16/fp16 = the same weights cast"}
    t = time.perf_counter()
    tok, cfg = random_model_config(job["size"], Path(job["work"]))
    torch.manual_seed(1)
    model = build_model(cfg, device=dev, dtype=torch.float32).eval()
    ref_emb, ref = _logits(model, tok, dev, torch.float32)
    out["prompt_tokens"], out["vocab"] = ref.shape
    lin = model.transformer.layers[0].mlp.dense_h_to_4h
    layer = {"weight": lin.weight.detach().float().cpu().clone(),
             "bias": None if lin.bias is None else lin.bias.detach().float().cpu().clone()}
    del lin
    for name, dt in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        try:
            m = build_model(cfg, device=dev, dtype=dt, skip_init=True)
            load_state_dict_checked(m, model.state_dict(), "the fp32 model")
            keep_rotary_fp32(m)
            emb, lg = _logits(m.eval(), tok, dev, dt)
            del m
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            r = _diff(lg, ref)
            r["top1_agree"] = float((lg.argmax(-1) == ref.argmax(-1)).float().mean())
            r["finite"] = bool(torch.isfinite(lg).all())
            r["image_embeds"] = _diff(emb, ref_emb)
            out[name] = r
        except Exception as e:  # noqa: BLE001 - one dtype failing must not lose the other
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    del model
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    out["logits_seconds"] = time.perf_counter() - t
    out["nf4"] = nf4_check(layer, dev)
    return out


def nf4_check(layer: dict, dev) -> dict:
    """One ChatGLM layer (layer 0's dense_h_to_4h) quantised to NF4 on the CPU and on CUDA from
    the same weight, run on the same input (fp32 compute on both)."""
    import bitsandbytes.functional as bnbf
    import torch

    from remoteglm.model.quant_layers import quantize_linear

    w, b = layer["weight"], layer["bias"]
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if b is not None:
            lin.bias.copy_(b)
    x = torch.randn(16, w.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = torch.nn.functional.linear(x, w, b)
    out: dict = {"layer": "transformer.layers.0.mlp.dense_h_to_4h", "shape": list(w.shape), "input_rows": 16}
    t = time.perf_counter()
    q_cpu = quantize_linear(lin, 4, "cpu", compute_dtype=torch.float32).eval()
    out["cpu_quantise_seconds"] = time.perf_counter() - t
    with torch.no_grad():
        y_cpu = q_cpu(x).float()
    dq_cpu = bnbf.dequantize_4bit(q_cpu.weight.data, q_cpu.weight.quant_state).float()
    out["cpu_vs_float"] = _diff(y_cpu, ref)
    if dev.type != "cuda":
        out["cuda_vs_cpu"] = "skipped: no CUDA"
        return out
    t = time.perf_counter()
    q_gpu = quantize_linear(lin, 4, dev, compute_dtype=torch.float32).eval()
    torch.cuda.synchronize()
    out["cuda_quantise_seconds"] = time.perf_counter() - t
    with torch.no_grad():
        y_gpu = q_gpu(x.to(dev)).float().cpu()
    dq_gpu = bnbf.dequantize_4bit(q_gpu.weight.data, q_gpu.weight.quant_state).float().cpu()
    out["cuda_vs_float"] = _diff(y_gpu, ref)
    out["cuda_vs_cpu"] = {
        "packed_bytes_equal": float((q_gpu.weight.data.cpu() == q_cpu.weight.data).float().mean()),
        "dequantised_weight": _diff(dq_gpu, dq_cpu),
        "output": _diff(y_gpu, y_cpu),
    }
    return out


def _generate(model, tok, dev, batch: int, new_tokens: int, sync) -> tuple[float, float, int, int]:
    """One timed request of ``batch`` prompts: (first-token s, decode tokens/s over the batch,
    prompt length, tokens decoded per prompt)."""
    import torch

    from remoteglm.model.prompt import encode_prompt
    from remoteglm.serve.generation import generate_tokens, image_embeddings
    from remoteglm.serve.sampling import GenerationConfig, banned_ids

    cfg = GenerationConfig.make(None, do_sample=False, max_new_tokens=new_tokens, repetition_penalty=1.0)
    banned = banned_ids(tok, model.config.vocab_size, False, dev).clone()
    banned[tok.eos_token_id] = True  # every run decodes exactly new_tokens
    t0 = time.perf_counter()
    embeds = torch.cat([image_embeddings(model, IMAGES[i % len(IMAGES)].read_bytes()) for i in range(batch)])
    enc = [encode_prompt(tok, QUESTIONS[i % len(QUESTIONS)], image_length=model.image_length) for i in range(batch)]
    n = max(len(e.ids) for e in enc)
    pads = [n - len(e.ids) for e in enc]
    ids = torch.tensor([[tok.pad_token_id] * p + e.ids for p, e in zip(pads, enc)])
    pre = torch.tensor([p + e.pre_image for p, e in zip(pads, enc)])
    first, count = None, 0
    for _ in generate_tokens(model, ids, pads, cfg, tok.eos_token_id, image_embeds=embeds, pre_image=pre, banned=banned):
        sync()
        count += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    rate = batch * (count - 1) / (end - first) if count > 1 else float("nan")
    return first - t0, rate, n, count


def worker_infer(job: dict) -> dict:
    import resource

    import torch

    from remoteglm.compat import single_process_env

    single_process_env()
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    from remoteglm.model import quant, quant_layers

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = dev.type == "cuda"
    sync = _sync_fn(dev)
    out: dict = {"device": str(dev), "new_tokens": job["new_tokens"], "runs": job["runs"],
                 "concurrency": "one batch of 4 prompts (4 images, 4 questions, left-padded) through "
                                "remoteglm.serve.generation.generate_tokens",
                 "modes": []}
    for mode, bits in (("float", None), ("int8", 8), ("int4", 4)):
        rec: dict = {"mode": mode}
        out["modes"].append(rec)
        if time.time() > job["deadline"]:
            rec["status"] = "skipped: budget"
            continue
        try:
            if gpu:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            model, tok, _ = quant.load_model_quantized(job["base"], bits, device=dev, progress=False)
            sync()
            rec["load_s"] = time.perf_counter() - t
            rec["dtype"] = quant_layers.describe_quant(model)
            mem = quant_layers.memory_by_device(model)
            rec["weights_device_bytes"] = mem.get(dev.type, 0)
            rec["weights_host_bytes"] = mem.get("cpu", 0) if gpu else None
            rec["load_peak_bytes"] = torch.cuda.max_memory_allocated() if gpu else None
            for batch in (1, 4):
                if time.time() > job["deadline"]:
                    rec[f"b{batch}"] = "skipped: budget"
                    continue
                _generate(model, tok, dev, batch, min(4, job["new_tokens"]), sync)  # warm-up
                if gpu:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                runs = [_generate(model, tok, dev, batch, job["new_tokens"], sync) for _ in range(job["runs"])]
                r = {"first_token_ms": 1000 * median(x[0] for x in runs), "tokens_per_s": median(x[1] for x in runs),
                     "prompt_tokens": runs[0][2], "decoded_per_prompt": runs[0][3],
                     "peak_bytes": torch.cuda.max_memory_allocated() if gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                     "peak_reserved_bytes": torch.cuda.max_memory_reserved() if gpu else None,
                     "peak_is": "torch.cuda.max_memory_allocated (weights included)" if gpu else "process peak RSS"}
                r["tokens_per_s_per_request"] = r["tokens_per_s"] / batch if r["tokens_per_s"] else None
                rec[f"b{batch}"] = r
            rec["status"] = "ok"
            del model
        except Exception as e:  # noqa: BLE001 - the other modes still run
            rec["status"] = f"failed: {type(e).__name__}: {e}"
        gc.collect()
        if gpu:
            torch.cuda.empty_cache()
    return out


def worker_resume(job: dict) -> dict:
    """Kill-and-resume on the device with the tiny model, against an uninterrupted run."""
    import torch

    from remoteglm.model.tiny import create_tiny_checkpoint

    work = Path(job["work"])
    tiny = create_tiny_checkpoint(work / "tiny")
    cuda = torch.cuda.is_available()
    total, interval = 24, 4
    args = ["--from_pretrained", str(tiny), "--train_data", str(SAMPLE / "sample_train.json"), "--train_iters", str(total),
            "--save_interval", str(interval), "--batch_size", "2", "--gradient_accumulation_steps", "2", "--lr", "1e-2",
            "--num_workers", "0", "--feature_cache", str(work / "cache"), "--keep_checkpoints", "2"]
    if cuda:
        args.append("--bf16")
    env = child_env(job.get("threads"), CUBLAS_WORKSPACE_CONFIG=":4096:8")
    script = str(ROOT / "finetune_visualglm.py")

    def launch(save: Path, *extra: str, log: str, own_group: bool = False):
        # only the run to kill gets a process group of its own; the others end with this worker
        return subprocess.Popen([sys.executable, script, *args, "--save", str(save), *extra], cwd=ROOT, env=env,
                                stdout=open(work / log, "w"), stderr=subprocess.STDOUT, start_new_session=own_group)

    out: dict = {"device": "cuda" if cuda else "cpu", "precision": "bf16" if cuda else "fp32", "model": "visualglm-tiny",
                 "train_iters": total, "save_interval": interval, "gradient_accumulation_steps": 2}
    # both fill the one feature cache: its files are written atomically, with the same content
    ref = launch(work / "full", log="full.log")
    part = launch(work / "part", log="part.log", own_group=True)
    run_dir = None
    try:
        try:
            deadline = time.time() + 240
            while time.time() < deadline and run_dir is None:
                for latest in (work / "part").glob("*/latest"):
                    text = latest.read_text().strip()
                    if text.isdigit() and int(text) >= interval:
                        run_dir = latest.parent
                if part.poll() is not None:
                    break
                time.sleep(0.02)
        finally:
            os.killpg(part.pid, signal.SIGKILL)
            part.wait()
        ref.wait(timeout=600)
    finally:
        if ref.poll() is None:
            ref.kill()
            ref.wait()
    if ref.returncode != 0:
        raise RuntimeError(f"uninterrupted run failed:\n{tail(work / 'full.log', 30)}")
    if run_dir is None:
        raise RuntimeError(f"the run to kill never saved step {interval}:\n{tail(work / 'part.log', 30)}")
    start = int((run_dir / "latest").read_text())
    out["killed_with_latest_at"] = start
    if start >= total:
        out["status"] = "inconclusive: the kill came after the last step"
        return out
    r = subprocess.run([sys.executable, script, *args, "--save", str(work / "part"), "--resume", str(run_dir)], cwd=ROOT,
                       env=env, stdout=open(work / "resume.log", "w"), stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise RuntimeError(f"resume failed:\n{tail(work / 'resume.log', 30)}")
    summ = lambda d: json.loads((Path((d / "LAST_RUN").read_text().strip()) / "train_summary.json").read_text())  # noqa: E731
    a, b = summ(work / "full"), summ(work / "part")
    ref_l, res_l = [tuple(x) for x in a["losses"]], [tuple(x) for x in b["losses"]]
    after = [(x, y) for x, y in zip(res_l, ref_l) if x[0] > start]
    out.update({
        "resumed_from": b.get("resumed_from"), "steps_compared": len(after),
        "steps_match": [x[0] for x in res_l] == [x[0] for x in ref_l] == list(range(1, total + 1)),
        "max_abs_loss_diff": max(abs(x[1] - y[1]) for x, y in after) if after else None,
        "max_rel_lr_diff": max(abs(x[2] - y[2]) / max(abs(y[2]), 1e-30) for x, y in after) if after else None,
        "bit_identical_steps": sum(1 for x, y in after if x[1] == y[1]),
        "losses_uninterrupted": [x[1] for x in ref_l], "losses_resumed": [x[1] for x in res_l],
    })
    ok = out["steps_match"] and after and out["max_abs_loss_diff"] <= (1e-6 if not cuda else 1e-3) and out["max_rel_lr_diff"] <= 1e-9
    out["status"] = "ok: equal" if ok else "DIFFERENT"
    out["tolerance"] = "abs 1e-6 (CPU fp32)" if not cuda else "abs 1e-3 (CUDA bf16; bit_identical_steps counts exact ones)"
    return out


WORKERS = {"base": worker_base, "correct": worker_correct, "infer": worker_infer, "resume": worker_resume}


# ---- training runs --------------------------------------------------------------------------------
class Unit:
    def __init__(self, spec, check: "Check"):
        self.method, self.batch, self.cache, self.prec = spec
        self.name = unit_name(*spec)
        self.check = check
        self.save = check.work / "runs" / self.name
        self.log = check.work / "logs" / f"{self.name}.log"
        self.proc = None
        self.t_start = self.t_end = self.t_gate = None
        self.result: dict = {"name": self.name, "method": self.method, "batch": self.batch,
                             "feature_cache": self.cache, "precision": self.prec}

    def command(self) -> list[str]:
        c, s = self.check, self.check.preset
        cmd = [sys.executable, str(ROOT / "finetune_visualglm.py"), "--from_pretrained", str(c.base),
               "--train_data", str(c.data), "--train_iters", str(c.steps), "--batch_size", str(self.batch),
               "--lr", str(s["lr"]), "--warmup", "0", "--lr_decay_style", "constant", "--lora_rank", str(LORA_RANK),
               "--lora_alpha", str(s["alpha"]), "--save", str(self.save), "--save_interval", str(10 ** 9),
               "--keep_checkpoints", "1", "--num_workers", str(s["workers"]), "--feature_cache", str(c.work / "features"),
               f"--{self.prec}"]
        if self.method == "qlora":
            cmd.append("--use_qlora")
        if not self.cache:
            cmd.append("--no_feature_cache")
        return cmd

    def start(self) -> None:
        self.save.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.result["command"] = " ".join(self.command()[1:])
        self.t_start = time.time()
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=child_env(self.check.preset["threads"]),
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT, start_new_session=True)

    def gate(self) -> bool:
        """Its timed steps are over: the final step folder exists (the checkpoint write began) or it ended."""
        if self.t_gate is None and (self.proc.poll() is not None or any(self.save.glob(f"*/{self.check.steps}"))):
            self.t_gate = time.time()
        return self.t_gate is not None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def unit_metrics(u: Unit, s: dict, check: "Check") -> dict:
    """Figures of one finished run from its train_summary.json."""
    r = u.result
    losses = [x[1] for x in s.get("losses", [])]
    steps = s.get("step_seconds") or []
    steady = steps[2:] if len(steps) > 3 else (steps[1:] if len(steps) > 1 else steps)
    step_s = statistics.fmean(steady) if steady else None
    seq = check.sample_tokens
    f = train_step_flops(check.model_cfg, LORA_RANK, u.batch, seq, u.cache)
    peak, source = check.peak
    r.update({
        "status": "ok", "steps": s.get("steps"), "device": "cuda" if s.get("peak_gpu_memory_bytes") is not None else "cpu",
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "last3_mean_loss": statistics.fmean(losses[-3:]) if losses else None,
        "loss_fell": bool(losses) and statistics.fmean(losses[-3:]) < losses[0],
        "losses": losses,
        "peak_allocated_bytes": s.get("peak_gpu_memory_bytes"), "peak_reserved_bytes": s.get("peak_gpu_reserved_bytes"),
        "peak_rss_bytes": s.get("peak_rss_bytes"),
        "step_seconds": steps, "steady_step_s": step_s,
        "samples_per_s": u.batch / step_s if step_s else None,
        "tokens_per_step": f["T"], "seq_len": seq, "tokens_per_s": f["T"] / step_s if step_s else None,
        "trainable_parameters": s.get("trainable_parameters"), "lora_parameters_formula": f["N"],
        "flops_per_step": f["total"], "flops_parts": f,
        "achieved_tflops": f["total"] / step_s / 1e12 if step_s else None,
        "mfu": f["total"] / step_s / peak if step_s and peak else None,
        "hfu_with_recompute": (f["total"] + f["recompute"]) / step_s / peak if step_s and peak else None,
        "peak_flops_source": source,
        "wall_s": u.t_end - u.t_start,
        "setup_s": s["train_started_unix"] - u.t_start if s.get("train_started_unix") else None,
        "summary_samples_per_second_incl_final_save": s.get("samples_per_second"),
    })
    target = TRAIN_TARGET_GB.get((u.method, u.batch)) if check.size == "full" and u.cache and u.prec == "bf16" else None
    if target is not None and r["peak_allocated_bytes"] is not None:
        r["target"] = f"peak allocated <= {target} GB"
        r["target_met"] = r["peak_allocated_bytes"] <= target * 1e9
    gpu = (check.results["meta"].get("env") or {}).get("gpu") or ""
    if u.method == "lora" and r["mfu"] is not None and ("H100" in gpu or "H200" in gpu):
        r["mfu_goal"] = f"MFU >= {MFU_GOAL:.0%} (H100/H200 class)"
        r["mfu_goal_met"] = r["mfu"] >= MFU_GOAL
    return r


class Check:
    def __init__(self, a):
        self.a = a
        self.size = a.size
        self.preset = SIZES[a.size]
        self.steps = a.steps or self.preset["steps"]
        self.budget = a.budget_s if a.budget_s is not None else self.preset["budget"]
        self.t0 = time.time()
        out = a.out or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else ROOT / "gpu_check_out" / "gpu_check.json")
        self.out = Path(out).resolve()
        self.log = Log(self.out.with_suffix(".log"), self.t0)
        self.work = Path(a.work).resolve() if a.work else Path(tempfile.mkdtemp(prefix="gpu_check_", dir=roomiest_dir()))
        self.work.mkdir(parents=True, exist_ok=True)
        self.base = self.work / "base"
        self.data = self.work / "repeated_batch.json"
        self.est = dict(self.preset["est"])
        self.unit_costs: list[float] = []
        self.sample_tokens = None
        self.model_cfg = None
        self.peak = (None, "")
        self.results: dict = {
            "meta": {"size": a.size, "model": "visualglm-6b, random init" if a.size == "full" else "visualglm-tiny, random init",
                     "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "budget_s": self.budget,
                     "steps_per_run": self.steps, "lora_rank": LORA_RANK, "lr": self.preset["lr"],
                     "lora_alpha": self.preset["alpha"], "gradient_checkpointing": True, "work": str(self.work),
                     "git_commit": _git_commit()},
            "flops": {"formula": FLOP_FORMULA},
            "parts": {}, "skipped": [], "notes": [
                "training runs are pipelined: run k+1 starts when run k's timed steps are over (its final checkpoint "
                "write overlaps k+1's loading); prev_still_running_at_start says whether it overlapped k+1's steps",
                "the API server runs one generation at a time: 4 concurrent API users share the 1-request rate; "
                "the 4-request figures are one batch through generate_tokens (evaluation's batched path)",
                "memory: GiB = 2^30 bytes; training targets in GB (1e9) as benchmarks/train_bench.py, inference "
                "targets in GiB as benchmarks/infer_bench.py",
            ],
        }
        for p in PARTS:
            self.results["parts"][p] = "pending" if p in a.parts else "not requested (--parts)"
        self.save()

    # bookkeeping
    def elapsed(self) -> float:
        return time.time() - self.t0

    def save(self) -> None:
        self.results["meta"]["elapsed_s"] = round(self.elapsed(), 1)
        write_json(self.out, self.results)

    def preflight(self) -> None:
        """The imports first (seconds): a missing or broken wheel shows here, not as nine failed runs.
        Should only ``datasets`` fail (it needs a pyarrow the machine may lack), a stand-in takes its
        place: sat imports it at start and never uses it in a fine-tune."""
        res = preflight(self.preset["threads"])
        self.results["meta"]["imports"] = res
        if res.get("datasets", "ok") != "ok" and all(v == "ok" for k, v in res.items() if not k.startswith(("datasets", "sat"))):
            stub = self.work / "stub"
            (stub / "datasets").mkdir(parents=True, exist_ok=True)
            (stub / "datasets" / "__init__.py").write_text(DATASETS_STUB, encoding="utf-8")
            EXTRA_PATH.append(str(stub))
            res2 = preflight(self.preset["threads"])
            self.results["meta"]["imports_with_datasets_stub"] = res2
            note = (f"datasets did not import ({res['datasets']}); a stand-in (it only raises) took its place, since "
                    "sat imports it at start but the fine-tune never calls it")
            self.results["notes"].append(note)
            self.log(note)
            res = res2
        bad = {k: v for k, v in res.items() if v != "ok"}
        self.log("imports: " + ("all ok" if not bad else "FAILED " + json.dumps(bad, ensure_ascii=False)))
        self.save()

    def check_disk(self) -> None:
        free = shutil.disk_usage(self.work).free
        self.results["meta"]["work_free_bytes"] = free
        if free < self.preset["disk_gb"] * 1e9:
            note = (f"only {free / 1e9:.1f} GB free in {self.work} (the base and the LoRA runs' final checkpoints need "
                    f"~{self.preset['disk_gb']:g} GB): runs may fail with 'No space left'; pass --work on a larger disk")
            self.results["notes"].append(note)
            self.log(note)

    def fits(self, what: str, est: float) -> bool:
        if self.elapsed() + est <= self.budget:
            return True
        note = f"{what}: skipped: budget (elapsed {self.elapsed():.0f} s + estimate {est:.0f} s > --budget-s {self.budget:g})"
        self.results["skipped"].append(note)
        self.log(note)
        return False

    def run_worker(self, name: str, job: dict, timeout: float, background: bool = False):
        job = {**job, "size": self.size, "work": str(self.work / name), "base": str(self.base),
               "threads": self.preset["threads"], "deadline": self.t0 + self.budget}
        Path(job["work"]).mkdir(parents=True, exist_ok=True)
        jf, rf = self.work / f"{name}.job.json", self.work / f"{name}.result.json"
        write_json(jf, job)
        rf.unlink(missing_ok=True)
        log = self.work / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--job", str(jf), "--result", str(rf)]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(self.preset["threads"]), stdout=open(log, "w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        handle = {"name": name, "proc": proc, "result": rf, "log": log, "t": time.time(), "timeout": timeout}
        return handle if background else self.finish_worker(handle)

    def finish_worker(self, h) -> dict:
        try:
            h["proc"].wait(timeout=max(1.0, h["timeout"] - (time.time() - h["t"])))
        except subprocess.TimeoutExpired:
            os.killpg(h["proc"].pid, signal.SIGKILL)
            h["proc"].wait()
            self.log(f"{h['name']}: killed after {h['timeout']:.0f} s\n{tail(h['log'], 20)}")
            return {"status": f"failed: timeout after {h['timeout']:.0f} s", "log_tail": tail(h["log"], 40)}
        secs = time.time() - h["t"]
        if h["proc"].returncode != 0 or not h["result"].exists():
            self.log(f"{h['name']}: FAILED (exit {h['proc'].returncode}) after {secs:.1f} s\n{tail(h['log'], 25)}")
            return {"status": f"failed: exit {h['proc'].returncode}", "seconds": secs, "log_tail": tail(h["log"], 60)}
        res = json.loads(h["result"].read_text())
        res.setdefault("status", "ok")
        res["seconds"] = secs
        self.log(f"{h['name']}: done in {secs:.1f} s")
        return res

    # the parts
    def part_base(self) -> bool:
        self.log(f"base: building the random-init {'visualglm-6b on the GPU' if self.size == 'full' else 'visualglm-tiny'}"
                 f" -> {self.base}")
        res = self.run_worker("base", {}, timeout=self.preset["timeouts"]["base"])
        self.results["base"] = res
        self.save()
        if not res.get("status", "").startswith("ok"):
            return False
        env = res["env"]
        self.results["meta"]["env"] = env
        if not env.get("cuda"):
            self.results["notes"].append("no CUDA here: peaks are the process's RSS, no MFU, NF4 CUDA-vs-CPU skipped, and "
                                         "the fine-tune ignores --bf16/--fp16 (fp32 on a CPU)")
        self.results["flops"]["check_on_tiny"] = res.get("flop_check")
        self.peak = peak_flops(env.get("gpu"), self.a.peak_tflops)
        self.results["flops"]["peak_flops"], self.results["flops"]["peak_source"] = self.peak
        if res.get("matmul_bf16") and self.peak[0]:
            self.results["flops"]["matmul_bf16_fraction_of_peak"] = res["matmul_bf16"]["tflops"] * 1e12 / self.peak[0]
        self.sample_tokens = res["sample"]["tokens"]
        from remoteglm.model.config import VisualGLMConfig

        self.model_cfg = VisualGLMConfig.from_sat_dict(json.loads((self.base / "model_config.json").read_text()))
        f = train_step_flops(self.model_cfg, LORA_RANK, 1, self.sample_tokens, True)
        self.results["flops"].update({"P_chatglm_matmul_params": f["P"], "N_lora_params": f["N"],
                                      "seq_len": self.sample_tokens, "encoder_forward_flops_per_image": encoder_forward_flops(self.model_cfg)})
        copies = max(64, 4 * self.steps * 2)
        write_json(self.data, [{k: res["sample"][k] for k in ("img", "prompt", "label")}] * copies)
        self.log(f"base: {res['checkpoint_bytes'] / GiB:.2f} GiB checkpoint, built on {res.get('built_on')} in {res['seconds']:.1f} s; "
                 f"training sample {self.sample_tokens} tokens; GPU: {env.get('gpu') or 'none'}; MFU peak: {self.peak[1]}")
        return True

    def part_correct(self, background: bool = False):
        """Blocking, or (background) the worker's handle for ``finish_part``."""
        if not self.fits("correctness", self.est["correct"]):
            self.results["parts"]["correct"] = "skipped: budget"
            return None
        self.log("correctness: bf16/fp16 logits vs fp32, NF4 CUDA vs CPU" + (" (in the background)" if background else ""))
        h = self.run_worker("correct", {}, timeout=self.preset["timeouts"]["correct"], background=True)
        return h if background else self.finish_part(h)

    def finish_part(self, h) -> None:
        key = {"correct": "correctness", "resume": "resume"}[h["name"]]
        self.results[key] = self.finish_worker(h)
        self.results["parts"][h["name"]] = self.results[key].get("status")
        self.save()

    def run_units(self, specs, group: str) -> None:
        units = [Unit(s, self) for s in specs]
        wanted = self.a.units or (None if self.a.all_units else self.preset["units"])
        if wanted:
            units = [u for u in units if u.name in wanted]
        train = self.results.setdefault("train", {"units": [], "note": (
            "peaks: torch.cuda.max_memory_allocated / max_memory_reserved over the training steps "
            "(weights included; reset at the first step); steady_step_s: mean step time after the first two; "
            "runs pipelined (see prev_still_running_at_start)")})
        pending, running, done = list(units), [], []
        prev = None
        pipelined = self.size == "full"
        max_par = 2
        failures = 0
        while pending or running:
            now = time.time()
            for u in list(running):
                if u.proc.poll() is not None:
                    running.remove(u)
                    u.t_end = time.time()
                    u.gate()
                    self.finish_unit(u, done)
                    if u.result["status"] != "ok":
                        failures += 1
                elif now - u.t_start > self.preset["unit_timeout"]:
                    u.kill()
                    running.remove(u)
                    u.t_end = time.time()
                    u.result.update(status=f"failed: timeout after {self.preset['unit_timeout']} s", log_tail=tail(u.log, 40))
                    self.log(f"train {u.name}: killed (timeout)\n{tail(u.log, 15)}")
                    self.add_unit(u.result)
                    failures += 1
            can_start = pending and len(running) < max_par and (prev is None or not pipelined or prev.gate())
            if can_start:
                u = pending.pop(0)
                ok_so_far = [x for x in train["units"] if x.get("status") == "ok"]
                if failures >= 2 and not ok_so_far:
                    u.result["status"] = "skipped: the first training runs failed (see their log_tail)"
                    self.add_unit(u.result)
                    self.results["skipped"].append(f"train {u.name}: {u.result['status']}")
                    continue
                est = statistics.fmean(self.unit_costs) if self.unit_costs else self.est["unit"]
                if not self.fits(f"train {u.name}", est + (0 if running else 5)):
                    u.result["status"] = "skipped: budget"
                    self.add_unit(u.result)
                    continue
                self.log(f"train {u.name}: start")
                u.start()
                running.append(u)
                prev = u
            time.sleep(0.2)
        self.results["parts"]["train"] = f"{group} done"
        self.save()

    def finish_unit(self, u: Unit, done: list) -> None:
        rc = u.proc.returncode
        try:
            if rc != 0:
                u.result.update(status=f"failed: exit {rc}", log_tail=tail(u.log, 60))
                self.log(f"train {u.name}: FAILED (exit {rc}) after {u.t_end - u.t_start:.1f} s\n{tail(u.log, 20)}")
            else:
                run_dir = Path((u.save / "LAST_RUN").read_text().strip())
                s = json.loads((run_dir / "train_summary.json").read_text())
                unit_metrics(u, s, self)
                started = s.get("train_started_unix")
                u.result["prev_still_running_at_start"] = any(
                    d.t_end is not None and started is not None and d.t_end > started for d in done)
                if u.t_gate:
                    self.unit_costs.append(u.t_gate - u.t_start)
                r = u.result
                self.log(f"train {u.name}: {r['steps']} steps, steady step {r['steady_step_s'] or 0:.3f} s, "
                         f"peak {gib(r['peak_allocated_bytes'])} GiB alloc / {gib(r['peak_reserved_bytes'])} GiB reserved, "
                         f"loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}, wall {r['wall_s']:.1f} s")
        except Exception as e:  # noqa: BLE001 - a bad summary must not stop the other runs
            u.result.update(status=f"failed: reading its summary: {type(e).__name__}: {e}", log_tail=tail(u.log, 30))
        shutil.rmtree(u.save, ignore_errors=True)  # a LoRA run's final checkpoint is 15 GB
        done.append(u)
        self.add_unit(u.result)

    def add_unit(self, result: dict) -> None:
        """Results in the order of the grid, whatever order the runs end in."""
        units = self.results["train"]["units"]
        units.append(result)
        units.sort(key=lambda r: UNIT_ORDER.index(r["name"]))
        self.save()

    def part_infer(self) -> None:
        if not self.fits("inference", self.est["infer"]):
            self.results["parts"]["infer"] = "skipped: budget"
            return
        self.log("inference: fp16 / int8 / int4 at 1 and 4 concurrent requests")
        job = {"new_tokens": self.a.new_tokens or self.preset["new_tokens"], "runs": self.preset["runs"]}
        res = self.run_worker("infer", job, timeout=max(60.0, self.budget - self.elapsed() + 90))
        for m in res.get("modes", []):
            tgt = INFER_TARGET_GIB.get(m["mode"])
            b1 = m.get("b1")
            if self.size == "full" and tgt and isinstance(b1, dict) and res.get("device", "").startswith("cuda"):
                m["target"] = f"peak allocated at 1 request <= {tgt} GiB"
                m["target_met"] = b1["peak_bytes"] <= tgt * GiB
        self.results["inference"] = res
        self.results["parts"]["infer"] = res.get("status")
        self.save()


def roomiest_dir() -> str:
    """Of the temporary folder, /dev/shm and the repository's filesystem, the one with the most free
    space: the full-size base is 15.6 GB and each LoRA run writes a 15.6 GB final checkpoint."""
    best, free = tempfile.gettempdir(), -1
    for d in (tempfile.gettempdir(), "/dev/shm", str(ROOT.parent)):
        try:
            f = shutil.disk_usage(d).free
        except OSError:
            continue
        if f > free and os.access(d, os.W_OK):
            best, free = d, f
    return best


def pack_logs(work: Path, dest: Path, limit: int = 12 * 2**20) -> Path | None:
    """Every log of the workers and runs in one .tar.gz beside the JSON (within the device's
    per-file limit), so a failure can be read without a rerun."""
    import tarfile

    logs = sorted(p for p in work.rglob("*.log") if p.is_file())
    if not logs:
        return None
    tmp = dest.with_name(f".{dest.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for p in logs:
            if p.stat().st_size < limit:
                tar.add(p, arcname=str(p.relative_to(work)))
    if tmp.stat().st_size > limit:
        tmp.unlink()
        return None
    os.replace(tmp, dest)
    return dest


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


# ---- the table ------------------------------------------------------------------------------------
def _f(x, fmt: str, none: str = "-") -> str:
    return none if x is None else format(x, fmt)


def table(res: dict) -> str:
    m = res["meta"]
    env = m.get("env", {})
    lines = [f"GPU check: {m['model']} on {env.get('gpu') or 'CPU'} (torch {env.get('torch')}, sat {env.get('SwissArmyTransformer')}, "
             f"deepspeed {env.get('deepspeed')}, bitsandbytes {env.get('bitsandbytes')}), {m['started']}, "
             f"{m.get('elapsed_s')} s of --budget-s {m['budget_s']:g}"]
    fl = res.get("flops", {})
    if "peak_source" in fl:
        mm = res.get("base", {}).get("matmul_bf16")
        lines.append(f"MFU against {fl['peak_source']}" + (f"; bf16 8192^3 matmul here {mm['tflops']:.0f} TFLOP/s" if mm else ""))
        lines.append(f"FLOPs: {fl['formula']}")
        chk = fl.get("check_on_tiny") or {}
        if chk:
            lines.append("formula / FlopCounterMode on the tiny model: " + ", ".join(
                f"{k} {v['ratio']:.3f}" for k, v in chk.items() if isinstance(v, dict) and v.get("ratio")))
    units = res.get("train", {}).get("units", [])
    if units:
        lines += ["", f"Fine-tune ({m['steps_per_run']} steps on a repeated batch of {fl.get('seq_len')} tokens a sample, "
                      "gradient checkpointing; GiB = 2^30 bytes)",
                  f"{'run':<24}{'alloc GiB':>10}{'resv GiB':>9}{'step s':>8}{'samp/s':>8}{'tok/s':>9}{'MFU':>7}"
                  f"{'HFU':>7}  {'loss first -> last':<20}target"]
        for u in units:
            if u.get("status") != "ok":
                lines.append(f"{u['name']:<24}{u.get('status')}")
                continue
            tgt = "; ".join(f"{u[k]}: {'ok' if u[k + '_met'] else 'MISSED'}" for k in ("target", "mfu_goal") if k in u)
            loss = f"{u['first_loss']:.3f} -> {u['last_loss']:.3f}{'' if u['loss_fell'] else ' (no fall)'}"
            lines.append(f"{u['name']:<24}{gib(u['peak_allocated_bytes']):>10}{gib(u['peak_reserved_bytes']):>9}"
                         f"{_f(u['steady_step_s'], '.3f'):>8}{_f(u['samples_per_s'], '.2f'):>8}{_f(u['tokens_per_s'], '.0f'):>9}"
                         f"{_f(u['mfu'] and 100 * u['mfu'], '.1f'):>7}{_f(u['hfu_with_recompute'] and 100 * u['hfu_with_recompute'], '.1f'):>7}"
                         f"  {loss:<20}{tgt}")
    inf = res.get("inference")
    if inf and inf.get("modes"):
        lines += ["", f"Inference ({inf.get('new_tokens')} new tokens, median of {inf.get('runs')}; 4 = {inf.get('concurrency')})",
                  f"{'mode':<17}{'weights':>9}{'host':>7}{'load s':>7}{'peak@1':>8}{'1st ms@1':>9}{'tok/s@1':>9}"
                  f"{'peak@4':>8}{'1st ms@4':>9}{'tok/s@4':>9}  target"]
        for r in inf["modes"]:
            if r.get("status") != "ok":
                lines.append(f"{r['mode']:<17}{r.get('status')}")
                continue
            b1, b4 = r.get("b1"), r.get("b4")
            b1 = b1 if isinstance(b1, dict) else {}
            b4 = b4 if isinstance(b4, dict) else {}
            tgt = "" if "target" not in r else f"{r['target']}: {'ok' if r['target_met'] else 'MISSED'}"
            lines.append(f"{r.get('dtype', r['mode']):<17}{gib(r.get('weights_device_bytes')):>9}{gib(r.get('weights_host_bytes')):>7}"
                         f"{_f(r.get('load_s'), '.1f'):>7}{gib(b1.get('peak_bytes')):>8}{_f(b1.get('first_token_ms'), '.1f'):>9}"
                         f"{_f(b1.get('tokens_per_s'), '.1f'):>9}{gib(b4.get('peak_bytes')):>8}{_f(b4.get('first_token_ms'), '.1f'):>9}"
                         f"{_f(b4.get('tokens_per_s'), '.1f'):>9}  {tgt}")
    cor = res.get("correctness")
    if cor:
        lines += ["", f"Correctness on {cor.get('device')} ({cor.get('prompt_tokens')} prompt tokens, logits vs fp32)"]
        if not str(cor.get("status", "")).startswith("ok"):
            lines.append(f"  {cor.get('status')}")
        for dt in ("bfloat16", "float16"):
            r = cor.get(dt)
            if isinstance(r, dict) and "max_abs" in r:
                lines.append(f"  {dt:<9} max abs {r['max_abs']:.3g} (max |fp32 logit| {r['ref_max_abs']:.3g}, max rel {r['max_rel']:.2e}), "
                             f"mean abs {r['mean_abs']:.3g}, top-1 agree {100 * r['top1_agree']:.1f} %, image embeds max rel "
                             f"{r['image_embeds']['max_rel']:.2e}")
            elif isinstance(r, dict):
                lines.append(f"  {dt:<9} {r.get('error')}")
        nf4 = cor.get("nf4")
        if isinstance(nf4, dict):
            cvc = nf4.get("cuda_vs_cpu")
            if isinstance(cvc, dict):
                lines.append(f"  NF4 {nf4['layer']} CUDA vs CPU: packed bytes equal {100 * cvc['packed_bytes_equal']:.2f} %, "
                             f"dequantised max abs {cvc['dequantised_weight']['max_abs']:.3g}, outputs max abs "
                             f"{cvc['output']['max_abs']:.3g} (max rel {cvc['output']['max_rel']:.2e}); NF4 vs float max rel "
                             f"{nf4['cuda_vs_float']['max_rel']:.2e}")
            else:
                lines.append(f"  NF4 CUDA vs CPU: {cvc}; CPU NF4 vs float max rel {nf4['cpu_vs_float']['max_rel']:.2e}")
    rs = res.get("resume")
    if rs:
        if "max_abs_loss_diff" in rs:
            lines.append(f"  resume after SIGKILL ({rs['device']}, {rs['precision']}, tiny): killed at latest={rs['killed_with_latest_at']}, "
                         f"{rs['steps_compared']} steps compared, max |Δloss| {rs['max_abs_loss_diff']:.3g}, "
                         f"{rs['bit_identical_steps']} bit-identical: {rs['status']}")
        else:
            lines.append(f"  resume after SIGKILL: {rs.get('status')}")
    if res.get("skipped"):
        lines += ["", "Skipped:"] + [f"  {s}" for s in res["skipped"]]
    return "\n".join(lines)


# ---- main -------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring for the device command.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="full", help="full: visualglm-6b on a CUDA GPU; tiny: the toy model (CPU test)")
    ap.add_argument("--out", help="results JSON (the log goes beside it) [$OUT/gpu_check.json, else gpu_check_out/gpu_check.json]")
    ap.add_argument("--budget-s", dest="budget_s", type=float, default=None, help="stop starting parts past this many seconds [full 420, tiny 600]")
    ap.add_argument("--peak-tflops", dest="peak_tflops", type=float, default=None, help="dense bf16 peak for MFU (default: by GPU name)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per run [full 20, tiny 4]")
    ap.add_argument("--new-tokens", dest="new_tokens", type=int, default=None, help="tokens decoded per inference run [full 64, tiny 8]")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)} [all]")
    ap.add_argument("--units", default=None, help="comma list of training runs to do (e.g. lora-b1-cache-bf16) [full: all nine; tiny: four]")
    ap.add_argument("--all-units", dest="all_units", action="store_true", help="all nine training runs at tiny size too")
    ap.add_argument("--work", help="work folder (base checkpoint, runs, logs) [a new temporary folder, removed at the end]")
    ap.add_argument("--keep-work", dest="keep_work", action="store_true", help="keep the work folder")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--job", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    if a.worker:
        job = json.loads(Path(a.job).read_text())
        write_json(Path(a.result), WORKERS[a.worker](job))
        return 0
    a.parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    bad = [p for p in a.parts if p not in PARTS]
    if bad:
        sys.exit(f"--parts: unknown {bad}; choose from {', '.join(PARTS)}")
    a.units = [x.strip() for x in a.units.split(",")] if a.units else None
    if a.size == "full":
        import torch

        if not torch.cuda.is_available():
            sys.exit("--size full needs a CUDA GPU (the device machine); run --size tiny here")
    c = Check(a)
    log = c.log
    log(f"gpu_check --size {a.size}: results -> {c.out} (log beside it), work {c.work}, budget {c.budget:g} s")
    c.check_disk()
    c.preflight()
    # Untimed workers run beside others; at full size they end before the first timed part, at
    # tiny size (nothing there is a timing to keep clean) they run on beside the training runs.
    background = []
    try:
        if "resume" in a.parts:
            log("resume: kill-and-resume runs (tiny model) start in the background")
            background.append(c.run_worker("resume", {}, timeout=c.preset["timeouts"]["resume"], background=True))
        if "correct" in a.parts:
            h = c.part_correct(background=True)
            if h is not None:
                background.append(h)
        if c.part_base():
            if a.size == "full":
                while background:  # their runs must not overlap the timed parts
                    c.finish_part(background.pop(0))
            if "train" in a.parts:
                c.run_units(CORE_UNITS, "core")
            if "infer" in a.parts:
                c.part_infer()
            if "train" in a.parts:
                c.run_units(REST_UNITS, "all")
        else:
            c.results["skipped"].append("every part but resume: the base model could not be built (see base.log_tail)")
        while background:
            c.finish_part(background.pop(0))
    finally:
        for h in background:  # an exception above: do not leave them running
            os.killpg(h["proc"].pid, signal.SIGKILL)
        c.save()
        text = table(c.results)
        log("", raw=True)
        log(text, raw=True)
        packed = pack_logs(c.work, c.out.with_name(c.out.stem + "_logs.tar.gz"))
        if packed:
            c.results["meta"]["logs"] = str(packed)
        c.save()
        if not a.keep_work and not a.work:
            shutil.rmtree(c.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
