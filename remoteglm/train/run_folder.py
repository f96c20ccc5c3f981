"""What every family's run folder shares, whatever its trainer: the name (``PREFIX-MM-DD-HH-MM-SS``,
chosen by rank 0 for all ranks), ``SAVE/LAST_RUN`` (the newest run, for finetune.sh's closing
demo and for a user's next command) and ``train_summary.json`` (one schema)."""

from __future__ import annotations

import math
import os
import resource
import time
from pathlib import Path

STAMP = "%m-%d-%H-%M-%S"
SUMMARY = "train_summary.json"
LAST_RUN = "LAST_RUN"


def write_last_run(save_parent: Path, run_dir: Path) -> None:
    """``SAVE/LAST_RUN``: the run folder finetune.sh and users pick up next (a resumed run too,
    wherever it lives)."""
    from remoteglm.io import write_text_atomic

    write_text_atomic(Path(save_parent) / LAST_RUN, f"{run_dir}\n")


def run_name(prefix: str, parent: Path) -> str:
    """A new run folder's name under ``parent``, the same on every rank and node (each rank's clock
    would give another name: ranks straddling a second would save into two folders)."""
    name = None
    if int(os.environ.get("RANK", 0)) == 0:
        stamp = time.strftime(STAMP)
        name, k = f"{prefix}-{stamp}", 2
        while (parent / name).exists():
            name, k = f"{prefix}-{stamp}-{k}", k + 1
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [name]
        dist.broadcast_object_list(box, src=0)
        name = box[0]
    return name


def write_summary(run_dir: Path, opts, family, *, losses: list, eval_losses: list, resumed_from: int | None,
                  seconds: float, train_seconds: float, world: int, trainable: int | None, total: int | None = None,
                  tokens: int | None = None, steps: int | None = None, extra: dict | None = None) -> dict:
    """``train_summary.json`` of a run, the whole run (a resumed run includes the steps before the
    kill): ``losses`` [[step, loss, lr]], ``eval_losses`` [[step, loss]]; ``last_loss`` is the mean
    of the last 10 logged losses; ``steps``: the step reached [the last logged one]; ``extra`` holds
    what only one trainer measures."""
    import torch

    from remoteglm.io import write_json_atomic

    cuda = torch.cuda.is_available()
    steps = steps if steps is not None else (losses[-1][0] if losses else 0)
    steps_run = max(0, steps - (resumed_from or 0))
    samples = steps_run * opts.batch_size * opts.gradient_accumulation_steps * max(1, world)
    tail = [x[1] for x in losses[-10:]]
    summary = {
        "family": family.name, "run_dir": str(run_dir), "steps": steps,
        "train_iters": opts.train_iters, "resumed_from": resumed_from or None,
        "first_loss": losses[0][1] if losses else math.nan, "last_loss": sum(tail) / len(tail) if tail else math.nan,
        "eval_loss": eval_losses[-1][1] if eval_losses else None, "eval_losses": [list(x) for x in eval_losses],
        "seconds": round(seconds, 1), "train_seconds": round(train_seconds, 3), "world_size": world,
        "batch_size": opts.batch_size, "gradient_accumulation_steps": opts.gradient_accumulation_steps,
        "samples_per_second": round(samples / train_seconds, 3) if train_seconds > 0 else None,
        "tokens_per_second": round(tokens * world / train_seconds, 1) if tokens and train_seconds > 0 else None,
        "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "trainable_parameters": trainable, "total_parameters": total, "qlora": bool(opts.use_qlora),
        # --vram: the planner's choice and its predicted peak, to compare with peak_gpu_memory_bytes
        "memory_plan": getattr(opts, "memory_plan", None),
        # the evaluation's leakage guard reads these
        "train_data": [str(Path(p).resolve()) for p in opts.train_data],
        "losses": [list(x) for x in losses], **(extra or {}),
    }
    write_json_atomic(run_dir / SUMMARY, summary)
    ev = f", eval loss {summary['eval_loss']:.4f}" if summary["eval_loss"] is not None else ""
    fell = (f"loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f}" if losses else
            f"no loss logged (--log_interval {opts.log_interval} is more than the steps run)")
    print(f"done: {fell}{ev} in {summary['seconds']} s; checkpoint: {run_dir}", flush=True)
    print(f"chat with it: python cli_demo.py --from_pretrained {run_dir}", flush=True)
    return summary
