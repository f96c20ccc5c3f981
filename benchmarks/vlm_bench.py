"""GLM-4.1V / Qwen2.5-VL (the transformers engine): fine-tune throughput, peak memory and MFU for
LoRA and QLoRA, and generation speed in bf16 / int8 / int4. ``train_bench.py --model FAMILY`` and
``infer_bench.py --model FAMILY`` run this.

    python benchmarks/vlm_bench.py --family qwen2_5_vl                  # tiny, CPU
    python benchmarks/vlm_bench.py --family qwen2_5_vl --size full      # random-init 7B on a GPU

Training rows are real ``finetune_visualglm.py`` runs (handed to the transformers engine) in their
own process; numbers come from the run's train_summary.json. Full size: bf16, gradient
checkpointing, batch 1, images at --max_pixels (default 448 x 448 = 256 image tokens); goals
(Qwen2.5-VL-7B): QLoRA <= 8 GB, LoRA <= 20 GB peak GPU memory over the training steps.

On a lent GPU machine (after ``bash benchmarks/gpu_wheels.sh`` here; carry [".whl"], timeout_s 540):
``pip install -q --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site python3
benchmarks/vlm_bench.py --family qwen2_5_vl --size full`` (the random 7B folder is built on the GPU
and written to a temporary folder first: ~17 GB of disk).

MFU = (4·P_lm + 6·N_lora)·tokens/s + 2·P_vision·patches/s, over the GPU's dense bf16 peak: a
frozen weight costs a forward and an activation-gradient matmul (4 FLOPs per parameter per token),
a trained one also its weight gradient (6); the vision tower runs forward only. Attention-score
FLOPs, checkpointing recomputation and NF4 dequantisation are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOAL_GB = {("qwen2_5_vl", "qlora"): 8.0, ("qwen2_5_vl", "lora"): 20.0}
PEAK_TFLOPS = [("H200", 989.4), ("H100", 989.4), ("A100", 312.0), ("4090", 165.2), ("3090", 71.0), ("A10", 125.0)]


def _env() -> dict:
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    for k in ("MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        e.pop(k, None)
    return e


def peak_tflops() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS if k in name), None)


def train_row(kind: str, base: Path, a, work: Path) -> dict:
    save = work / kind
    cmd = [sys.executable, str(ROOT / "finetune_visualglm.py"), "--from_pretrained", str(base), "--save", str(save),
           "--train_data", str(ROOT / "data" / "sample" / "sample_train.json"), "--train_iters", str(a.steps),
           "--batch_size", str(a.batch_size), "--save_interval", str(10 ** 9), "--log_interval", "1"]
    if a.max_pixels:
        cmd += ["--max_pixels", str(a.max_pixels)]
    if kind == "qlora":
        cmd.append("--use_qlora")
    if a.size == "tiny":
        cmd += ["--lr", "1e-2"]
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{kind} run failed:\n{r.stderr[-3000:]}")
    s = json.loads((Path((save / "LAST_RUN").read_text().strip()) / "train_summary.json").read_text())
    return s


def mfu(s: dict, vision_params: int, patches_per_sample: int) -> float | None:
    peak = peak_tflops()
    if not peak or not s.get("samples_per_second"):
        return None
    tok_s = s["samples_per_second"] * s["mean_sample_tokens"]
    p_lm = s["total_parameters"] - vision_params - s["trainable_parameters"]
    flops = (4 * p_lm + 6 * s["trainable_parameters"]) * tok_s + 2 * vision_params * patches_per_sample * s["samples_per_second"]
    return flops / (peak * 1e12)


def infer_row(mode: str, base: Path, a) -> dict:
    import torch

    from remoteglm.serve.loading import load_engine

    bits = {"bf16": None, "fp32": None, "int8": 8, "int4": 4}[mode]
    dtype = "bf16" if mode == "bf16" else None
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    engine, memory = load_engine(base, quant=bits, dtype=dtype, max_pixels=a.max_pixels, progress=False)
    img = ROOT / "data" / "sample" / "images" / "s2_farmland.png"
    engine.reply(str(img), "描述这张图片。", do_sample=False, max_new_tokens=4)  # warm-up
    times, toks = [], []
    for _ in range(a.runs):
        t = time.perf_counter()
        r = engine.reply(str(img), "描述这张图片。", do_sample=True, temperature=1.0, repetition_penalty=1.0,
                         max_new_tokens=a.new_tokens)
        times.append(time.perf_counter() - t)
        toks.append(r.completion_tokens)
    out = {"mode": mode, "weights": engine.quant, "memory": memory, "tokens_per_s": sum(toks) / sum(times),
           "peak_gpu_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None}
    del engine
    return out


def _hf_families() -> list[str]:
    """The registered transformers families (``remoteglm.registry``)."""
    from remoteglm.families.hf import HFFamily
    from remoteglm.registry import families

    return [f.name for f in families() if isinstance(f, HFFamily)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=_hf_families(), default="qwen2_5_vl")
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--what", choices=["train", "infer", "both"], default="both")
    ap.add_argument("--steps", type=int, default=None, help="training steps per run [tiny 30, full 10]")
    ap.add_argument("--batch_size", type=int, default=None, help="[tiny 4, full 1]")
    ap.add_argument("--max_pixels", type=int, default=None, help="[tiny: the folder's; full: 448*448]")
    ap.add_argument("--runs", type=int, default=3, help="generations per inference mode [3]")
    ap.add_argument("--new_tokens", type=int, default=32)
    ap.add_argument("--model_dir", help="an existing folder of the family instead of a new random one")
    a = ap.parse_args(argv)
    import torch

    gpu = torch.cuda.is_available()
    if a.size == "full" and not gpu:
        sys.exit("the full-size benchmark needs a CUDA GPU; run --size tiny here")
    a.steps = a.steps or (30 if a.size == "tiny" else 10)
    a.batch_size = a.batch_size or (4 if a.size == "tiny" else 1)
    a.max_pixels = a.max_pixels or (448 * 448 if a.size == "full" else None)
    from remoteglm.model.hf_tiny import create_tiny_hf
    from remoteglm.registry import family_named

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.time()
        base = Path(a.model_dir) if a.model_dir else create_tiny_hf(
            family_named(a.family), work / f"{a.family}-{a.size}", pretrain_steps=0, size=a.size, device="cuda" if gpu else "cpu")
        where = torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores)"
        print(f"{a.family}-{a.size} ({'random weights' if not a.model_dir else base}) on {where}; built in {time.time() - t0:.0f} s")
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(base, local_files_only=True)
        v = cfg.vision_config
        vision_params = 0
        if a.what in ("train", "both"):
            from safetensors import safe_open

            for f in base.glob("*.safetensors"):
                with safe_open(str(f), "pt") as sf:
                    vision_params += sum(_prod(sf.get_slice(k).get_shape()) for k in sf.keys() if ".visual." in k)
            patches = (a.max_pixels or 12544) // (v.patch_size ** 2)
            print(f"train: {a.steps} steps, batch {a.batch_size}, max_pixels {a.max_pixels or 'folder'}; "
                  f"peak = {'GPU max_memory_allocated' if gpu else 'process RSS'}")
            print(f"{'method':<8}{'samples/s':>10}{'tokens/sample':>15}{'peak GiB':>10}{'trainable':>14}{'MFU':>8}  goal")
            for kind in ("lora", "qlora"):
                s = train_row(kind, base, a, work)
                peak = s["peak_gpu_memory_bytes"] if gpu else s["peak_rss_bytes"]
                m = mfu(s, vision_params, patches)
                goal = GOAL_GB.get((a.family, kind)) if a.size == "full" else None
                mark = "" if goal is None else f"<= {goal} GB: {'ok' if peak <= goal * 1e9 else 'MISSED'}"
                print(f"{kind:<8}{s['samples_per_second']:>10.2f}{s['mean_sample_tokens']:>15.0f}{peak / 2 ** 30:>10.2f}"
                      f"{s['trainable_parameters']:>14,}{'' if m is None else f'{m:.1%}':>8}  {mark}", flush=True)
        if a.what in ("infer", "both"):
            print(f"generate: {a.runs} answers of up to {a.new_tokens} tokens per mode (sampling, one image)")
            for mode in (("bf16", "int8", "int4") if gpu else ("fp32", "int8", "int4")):
                r = infer_row(mode, base, a)
                peak = f"{r['peak_gpu_bytes'] / 2 ** 30:.2f} GiB peak" if r["peak_gpu_bytes"] else r["memory"]
                print(f"  {mode:<5} {r['tokens_per_s']:8.1f} tokens/s   {peak}", flush=True)
    return 0


def delegate(what: str) -> int | None:
    """For train_bench.py / infer_bench.py: run this benchmark when ``--model`` names a VLM family
    (None, with ``--model visualglm`` removed from sys.argv, otherwise)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", choices=["visualglm", *_hf_families()], default="visualglm")
    pre.add_argument("--size", default="tiny")
    known, rest = pre.parse_known_args()
    if known.model == "visualglm":
        sys.argv = [a for i, a in enumerate(sys.argv) if a != "--model" and not (i and sys.argv[i - 1] == "--model")]
        return None
    size = "full" if known.size in ("full", "6b") else "tiny"
    return main(["--family", known.model, "--size", size, "--what", what, *rest])


def _prod(shape) -> int:
    n = 1
    for x in shape:
        n *= int(x)
    return n


if __name__ == "__main__":
    sys.exit(main())
