"""The default job exactly as a newcomer runs it: `bash finetune.sh` with no settings (tiny base
created and pre-trained, 300 LoRA steps on the sample, closing demo) in a copy of the repository,
so the real checkpoints/ and cache/ stay untouched. Its closing demo must show that it learned."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What the default job reads: the launcher, the scripts it calls, the package, the sample data.
NEEDED = ["finetune.sh", "finetune_visualglm.py", "cli_demo.py", "remoteglm", "data/sample"]
F1 = re.compile(r">> char F1 vs the training label: before (\d+\.\d+|n/a) -> after (\d+\.\d+)")


@pytest.fixture(scope="module")
def default_job(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    for rel in NEEDED:
        src, dst = ROOT / rel, repo / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    env = dict(os.environ)
    # A newcomer's shell: no process-group settings left by models built in this test process, no
    # PYTHONPATH pointing at the original tree, and the thread settings finetune.sh itself chooses.
    for k in ("MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK", "WORLD_SIZE", "PYTHONPATH", "OMP_NUM_THREADS"):
        env.pop(k, None)
    t0 = time.time()
    r = subprocess.run(["bash", "finetune.sh"], cwd=repo, env=env, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=600)
    return repo, r, time.time() - t0


@pytest.mark.slow
def test_default_job_learns_the_demo_image(default_job):
    repo, r, seconds = default_job
    log = f"after {seconds:.0f} s\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}"
    assert r.returncode == 0, log
    assert (repo / "checkpoints" / "visualglm-tiny" / "latest").is_file(), log
    assert "pre-trained the tiny ChatGLM" in r.stderr, log
    m = F1.search(r.stdout)
    assert m, log
    before, after = m.groups()
    assert before != "n/a", log
    assert float(after) >= 0.5, log
    assert float(after) > float(before), log
    # the answers themselves are printed, not only the numbers
    assert re.search(r"^\s+before \(base model .*\): \S", r.stdout, re.M), log
    assert re.search(r"^\s+after  \(fine-tuned .*\): \S", r.stdout, re.M), log


@pytest.mark.slow
def test_default_job_prints_no_python_warnings(default_job):
    """A newcomer's first run shows our progress and results, not library warnings (torch's
    use_reentrant notice, sat's "None of the inputs have requires_grad=True" from evaluation)."""
    _, r, _ = default_job
    out = r.stdout + r.stderr
    warned = [ln for ln in out.splitlines() if re.search(r"\w*Warning: ", ln)]
    assert not warned, "\n".join(warned)
