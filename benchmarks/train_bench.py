"""Fine-tuning throughput and peak memory: LoRA vs QLoRA, with and without the image-feature cache.

    python benchmarks/train_bench.py                 # tiny model on the CPU (peak = process RSS)
    python benchmarks/train_bench.py --size 6b       # randomly initialised full VisualGLM-6B on a GPU

Each configuration is a real `finetune_visualglm.py` run (sat training_main + DeepSpeed) in its own
process; the numbers come from the run's train_summary.json. On a GPU the peak is
torch.cuda.max_memory_allocated() over the training steps (bf16, gradient checkpointing, batch 1);
targets for the full size: QLoRA <= 6 GB, LoRA <= 14 GB with the feature cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_GB = {("lora", True): 14.0, ("qlora", True): 6.0}


def _pythonpath() -> str:
    """This repository first, the caller's PYTHONPATH kept (on the GPU machine it holds the carried wheels)."""
    return os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))


def run(kind: str, cache: bool, a, work: Path, base: list[str]) -> dict:
    save = work / f"{kind}-{'cache' if cache else 'nocache'}"
    cmd = [sys.executable, str(ROOT / "finetune_visualglm.py"), *base, "--save", str(save),
           "--train_data", str(ROOT / "data" / "sample" / "sample_train.json"),
           "--train_iters", str(a.steps), "--batch_size", str(a.batch_size), "--num_workers", "2",
           "--save_interval", str(10 ** 9), "--feature_cache", str(work / "features")]
    if kind == "qlora":
        cmd.append("--use_qlora")
    if not cache:
        cmd.append("--no_feature_cache")
    env = dict(os.environ, PYTHONPATH=_pythonpath())
    env.pop("MASTER_PORT", None)
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{kind} run failed:\n{r.stderr[-3000:]}")
    run_dir = Path((save / "LAST_RUN").read_text().strip())
    return json.loads((run_dir / "train_summary.json").read_text())


def _vlm(what: str) -> int | None:
    """``--model qwen2_5_vl|glm4v``: the transformers engine's benchmark (benchmarks/vlm_bench.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import vlm_bench

    return vlm_bench.delegate(what)


def main() -> int:
    rc = _vlm("train")
    if rc is not None:
        return rc
    ap = argparse.ArgumentParser(epilog="--model qwen2_5_vl|glm4v: the transformers engine (benchmarks/vlm_bench.py)",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=["tiny", "6b"], default="tiny")
    ap.add_argument("--steps", type=int, default=None, help="training steps per run [tiny 30, 6b 10]")
    ap.add_argument("--batch_size", type=int, default=None, help="[tiny 4, 6b 1]")
    a = ap.parse_args()
    import torch

    gpu = torch.cuda.is_available()
    if a.size == "6b" and not gpu:
        sys.exit("the full-size benchmark needs a CUDA GPU; run --size tiny here")
    a.steps = a.steps or (30 if a.size == "tiny" else 10)
    a.batch_size = a.batch_size or (4 if a.size == "tiny" else 1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny = work / "tiny"
        subprocess.run([sys.executable, "-m", "remoteglm.model.tiny", str(tiny)], cwd=ROOT, check=True,
                       env=dict(os.environ, PYTHONPATH=_pythonpath()), capture_output=True)
        if a.size == "tiny":
            base = ["--from_pretrained", str(tiny), "--lr", "1e-2"]
        else:
            base = ["--from_pretrained", "random:visualglm-6b", "--tokenizer", str(tiny / "ice_text.model"), "--bf16"]
        rows = []
        for kind in ("lora", "qlora"):
            for cache in (False, True):
                s = run(kind, cache, a, work, base)
                peak = s["peak_gpu_memory_bytes"] if gpu else s["peak_rss_bytes"]
                rows.append((kind, cache, s["samples_per_second"], peak / 2 ** 30, s["trainable_parameters"]))
    where = torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores)"
    print(f"visualglm-{a.size} on {where}: {a.steps} steps, batch {a.batch_size}, "
          f"peak = {'GPU max_memory_allocated' if gpu else 'process RSS (whole process, CPU)'}")
    print(f"{'method':<8}{'feature cache':<15}{'samples/s':>10}{'peak GiB':>10}{'trainable':>12}  target")
    for kind, cache, sps, gib, n in rows:
        tgt = TARGET_GB.get((kind, cache)) if a.size == "6b" else None
        mark = "" if tgt is None else (f"<= {tgt} GB: {'ok' if gib * 2 ** 30 <= tgt * 1e9 else 'MISSED'}")
        print(f"{kind:<8}{'on' if cache else 'off':<15}{sps:>10.2f}{gib:>10.2f}{n:>12,}  {mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
