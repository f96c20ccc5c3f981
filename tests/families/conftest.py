"""Fixtures of the family contract suite: a tiny folder of every registered transformers family
(``remoteglm.families.hf.HFFamily``: built from its config classes, briefly pre-trained on the
sample captions) and a LoRA run on the sample per family, each built once per session through the
commands a user runs. A family registered in ``remoteglm.registry`` is picked up here with no
edit; VisualGLM's tiny folder is the session's ``tiny_checkpoint``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from remoteglm.families.hf import HFFamily
from remoteglm.registry import families

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
TRAIN = SAMPLE / "sample_train.json"
VALID = SAMPLE / "sample_val.json"
# every registered transformers family, in detection order (the registry's, not a list kept here)
HF_FAMILIES = tuple(f.name for f in families() if isinstance(f, HFFamily))
ALL_FAMILIES = tuple(f.name for f in families())


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    e.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return e


def run(args, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def train_images() -> list[Path]:
    return sorted({SAMPLE / r["img"] for r in json.loads(TRAIN.read_text(encoding="utf-8"))})


@pytest.fixture(scope="session")
def hf_bases(tmp_path_factory) -> dict[str, Path]:
    """``python -m remoteglm tiny FAMILY DIR`` for every transformers family at once (150 pre-training steps)."""
    root = tmp_path_factory.mktemp("hf_bases")
    procs = {f: subprocess.Popen([sys.executable, "-m", "remoteglm", "tiny", f, str(root / f"{f}-tiny"),
                                  "--pretrain_steps", "150"], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for f in HF_FAMILIES}
    for f, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip().splitlines()[-1] == str(root / f"{f}-tiny"), err[-2000:]
    return {f: root / f"{f}-tiny" for f in HF_FAMILIES}


@pytest.fixture(scope="session")
def family_bases(hf_bases, tiny_checkpoint) -> dict[str, Path]:
    """A tiny base folder of every registered family (VisualGLM's: the shared ``tiny_checkpoint``)."""
    return {**hf_bases, "visualglm": tiny_checkpoint}


def start_finetune(base: Path, save: Path, *extra) -> tuple[subprocess.Popen, Path]:
    """``finetune_visualglm.py`` (the one fine-tune command) on a family's folder, started in the
    background: these runs use one core each, so two at a time halve the wait on 2 cores."""
    cmd = [sys.executable, "finetune_visualglm.py", "--from_pretrained", str(base), "--train_data", str(TRAIN),
           "--save", str(save), "--lr", "1e-2", "--batch_size", "4", "--log_interval", "1", *map(str, extra)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), save


def wait_finetune(started: tuple[subprocess.Popen, Path]) -> Path:
    p, save = started
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, out[-2000:] + err[-3000:]
    return Path((save / "LAST_RUN").read_text().strip())


def finetune(base: Path, save: Path, *extra) -> Path:
    return wait_finetune(start_finetune(base, save, *extra))


@pytest.fixture(scope="session")
def hf_runs(hf_bases, tmp_path_factory) -> dict[str, Path]:
    """A LoRA run per transformers family (all at once): 150 steps on the sample, eval loss on its val split."""
    root = tmp_path_factory.mktemp("hf_runs")
    started = {f: start_finetune(b, root / f, "--train_iters", "150", "--valid_data", VALID, "--eval_iters", "2",
                                 "--save_interval", "75") for f, b in hf_bases.items()}
    return {f: wait_finetune(s) for f, s in started.items()}
