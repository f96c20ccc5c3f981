"""Run folders that survive a kill at any moment, and resume that says what is wrong.

A run folder (``checkpoints/finetune-visualglm-MM-DD-HH-MM``) holds the official sat layout plus
what an exact resume needs::

    latest                              the newest COMPLETE step (written last, atomically)
    model_config.json, ice_text.model   official VisualGLM fields (+ LoRA); the folder loads alone
    {step}/mp_rank_00_model_states.pt   {"module": weights, "iteration", sat's RNG keys}
    {step}/optim_rank_{r:02d}.pt        rank r's optimizer state and RNG states
    {step}/train_state.json             losses so far, world size, batch settings, timings

A step counts only when all of these exist; ``latest`` moves only after every rank's files are
on disk, so a kill at any point resumes from the previous complete step with its Adam moments.
Every file holds plain types only (tensors, numbers, strings, lists): torch's ``weights_only``
loader - and so sat's own loader - reads them without unpickling code.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json, torch_save_atomic, write_json_atomic, write_text_atomic

LATEST = "latest"
WEIGHTS = "mp_rank_00_model_states.pt"
TRAIN_STATE = "train_state.json"


def optim_file(step_dir: Path, rank: int) -> Path:
    return step_dir / f"optim_rank_{rank:02d}.pt"


def dist_info() -> tuple[int, int]:
    """(rank, world size) of this process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


# ---- RNG states as plain data ------------------------------------------------------------------
def rng_state() -> dict:
    import numpy as np

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"random_rng_state": random.getstate(),
             "np_rng_state": (name, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)),
             "torch_rng_state": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng_state"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np

    if "random_rng_state" in state:
        v = state["random_rng_state"]
        random.setstate((v[0], tuple(v[1]), v[2]))
    if "np_rng_state" in state:
        name, keys, pos, has_gauss, gauss = state["np_rng_state"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "torch_rng_state" in state:
        torch.set_rng_state(state["torch_rng_state"])
    if "cuda_rng_state" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng_state"])


# ---- reading a run folder -----------------------------------------------------------------------
def step_missing(step_dir: Path, world: int | None = None) -> list[str]:
    """What a step folder lacks to count as complete (empty list: complete)."""
    missing = [n for n in (WEIGHTS, TRAIN_STATE) if not (step_dir / n).is_file()]
    if (step_dir / TRAIN_STATE).is_file() and world is None:
        try:
            world = int(read_json(step_dir / TRAIN_STATE, require_object=True)["world_size"])
        except (RemoteGLMError, ValueError, KeyError, TypeError):
            missing.append(f"{TRAIN_STATE} (unreadable)")
    for r in range(world or 1):
        if not optim_file(step_dir, r).is_file():
            missing.append(optim_file(step_dir, r).name)
    return missing


def complete_steps(run_dir: Path) -> list[int]:
    steps = [int(c.name) for c in run_dir.iterdir() if c.is_dir() and c.name.isdigit()] if run_dir.is_dir() else []
    return sorted(s for s in steps if not step_missing(run_dir / str(s)))


def read_latest(run_dir: Path) -> int:
    """The step ``--resume run_dir`` continues from, or one RemoteGLMError line saying what is
    wrong and what to do."""
    latest = run_dir / LATEST
    good = complete_steps(run_dir)
    hint = (f"complete steps there: {', '.join(map(str, good))}; to resume from the newest: echo {good[-1]} > {latest}"
            if good else "no complete step folder there either: start a new run without --resume")
    if not latest.is_file():
        raise RemoteGLMError(f"--resume {run_dir}: no '{LATEST}' file; pass a run folder written by finetune_visualglm.py ({hint})")
    text = latest.read_text(encoding="utf-8", errors="replace").strip()
    if not text.isdigit() or int(text) < 1:
        shown = text[:40] if text else "empty"
        raise RemoteGLMError(f"--resume {run_dir}: '{LATEST}' should hold a step number but is {shown!r} ({hint})")
    step = int(text)
    step_dir = run_dir / text
    if not step_dir.is_dir():
        raise RemoteGLMError(f"--resume {run_dir}: '{LATEST}' names step {step} but {step_dir} does not exist ({hint})")
    missing = step_missing(step_dir)
    if missing:
        raise RemoteGLMError(f"--resume {run_dir}: step {step} is incomplete (missing {', '.join(missing)}) ({hint})")
    return step


def read_train_state(run_dir: Path, step: int) -> dict:
    return read_json(run_dir / str(step) / TRAIN_STATE, require_object=True)


def load_step_weights(run_dir: Path, step: int, model, frozen_prefix: str | None = None) -> None:
    """Weights and rank 0's RNG states of a complete step (sat's RNG keys) into ``model``.
    Tensors under ``frozen_prefix`` (the parked image encoder: frozen, loaded with the base) are
    not expected in the module tree."""
    from remoteglm.model.unpickle import torch_load

    sd = torch_load(run_dir / str(step) / WEIGHTS)
    module = model.module if hasattr(model, "module") else model
    weights = {k: v for k, v in sd["module"].items() if not (frozen_prefix and k.startswith(frozen_prefix))}
    missing, unexpected = module.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith("rotary_emb.inv_freq")]
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise RemoteGLMError(f"--resume {run_dir}: step {step}'s weights do not fit this model ({what}); "
                             "resume with the same --from_pretrained, LoRA and layer settings as the run")
    set_rng_state(sd)


def load_rank_state(run_dir: Path, step: int, optimizer, rank: int) -> None:
    """This rank's RNG and every rank's optimizer state (DeepSpeed ZeRO reads all partitions)."""
    from remoteglm.model.unpickle import torch_load

    step_dir = run_dir / str(step)
    world = read_train_state(run_dir, step)["world_size"]
    states = [torch_load(optim_file(step_dir, r)) for r in range(world)]
    if hasattr(optimizer, "_load_legacy_checkpoint"):  # DeepSpeed ZeRO 1/2
        optimizer.load_state_dict([s["optimizer"] for s in states], load_optimizer_states=True, load_from_fp32_weights=False)
    else:
        optimizer.load_state_dict(states[0]["optimizer"])
    set_rng_state(states[rank]["rng"])


# ---- writing a step -------------------------------------------------------------------------------
def save_step(run_dir: Path, step: int, model, optimizer, train_state: dict, write_config, keep: int = 0) -> None:
    """Write step ``step`` of ``run_dir`` from every rank (collective: all ranks call it).

    Order: each rank's optimizer + RNG file; rank 0's weights and train state; barrier; rank 0
    checks the step is complete, writes model_config.json (``write_config(run_dir)``) and only
    then points ``latest`` at it; older complete steps beyond ``keep`` (0: keep all) are removed.
    """
    rank, world = dist_info()
    step_dir = run_dir / str(step)
    inner = model.module if hasattr(model, "module") else model
    torch_save_atomic(optim_file(step_dir, rank), {"optimizer": optimizer.state_dict(), "rng": rng_state(), "rank": rank})
    if rank == 0:
        sd = {k: v for k, v in inner.state_dict().items()}
        torch_save_atomic(step_dir / WEIGHTS, {"module": sd, "iteration": int(step), **rng_state()})
        write_json_atomic(step_dir / TRAIN_STATE, {**train_state, "iteration": int(step), "world_size": world})
    _barrier()
    if rank == 0:
        missing = step_missing(step_dir, world)
        if missing:
            raise RemoteGLMError(f"step {step} of {run_dir} lacks {', '.join(missing)} after every rank saved: with "
                                 "several machines, --save must be a folder all of them share (NFS or similar)")
        write_config(run_dir)
        write_text_atomic(run_dir / LATEST, f"{step}\n")
        if keep > 0:
            for old in complete_steps(run_dir)[:-keep]:
                if old != step:
                    shutil.rmtree(run_dir / str(old), ignore_errors=True)
    _barrier()
