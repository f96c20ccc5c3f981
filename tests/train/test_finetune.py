"""Fine-tuning on the CPU with the tiny model: real sat training_main + DeepSpeed, real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("MASTER_PORT", None)
    env["OMP_NUM_THREADS"] = "1"  # tiny tensors: extra threads only fight over the 2 cores
    return env


def finetune(ckpt: Path, save: Path, *extra: str, cache: Path | None = None, timeout=300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "finetune_visualglm.py"), "--from_pretrained", str(ckpt), "--save", str(save),
           "--num_workers", "0", *extra]
    if cache is not None:
        cmd += ["--feature_cache", str(cache)]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


def summary(save: Path) -> dict:
    run = Path((save / "LAST_RUN").read_text().strip())
    return json.loads((run / "train_summary.json").read_text())


def ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.fixture(scope="module")
def two_samples(tmp_path_factory) -> Path:
    """Two records on one real image: small enough to overfit in a few dozen steps."""
    recs = json.loads((SAMPLE / "sample_train.json").read_text(encoding="utf-8"))[:2]
    d = tmp_path_factory.mktemp("two")
    for r in recs:
        r["img"] = str(SAMPLE / r["img"])
    p = d / "two.json"
    p.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def overfit_run(tiny_checkpoint, two_samples, tmp_path_factory) -> Path:
    save = tmp_path_factory.mktemp("overfit")
    r = finetune(tiny_checkpoint, save, "--train_data", str(two_samples), "--train_iters", "30", "--batch_size", "2",
                 "--lr", "1e-2", "--lora_alpha", "10", "--warmup", "0", cache=save / "cache")
    ok(r)
    return save


def test_loss_falls_when_overfitting(overfit_run):
    s = summary(overfit_run)
    losses = [l for _, l, _ in s["losses"]]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < losses[0] - 0.15, losses


def test_tensorboard_gets_train_loss(overfit_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = Path(summary(overfit_run)["run_dir"])
    ea = EventAccumulator(str(overfit_run / "runs" / run.name))
    ea.Reload()
    steps = [e.step for e in ea.Scalars("Train/train_loss")]
    assert steps == [10, 20, 30]


def test_checkpoint_has_official_layout_and_loads_in_cli_demo(overfit_run):
    run = Path(summary(overfit_run)["run_dir"])
    assert (run / "latest").read_text().strip() == "30"
    cfg = json.loads((run / "model_config.json").read_text())
    assert cfg["model_class"] == "FineTuneVisualGLMModel"
    assert cfg["use_lora"] is True and cfg["lora_rank"] == 10 and cfg["layer_range"] is None
    assert {"eva_args", "qformer_args", "image_length"} <= cfg.keys()
    sd = torch.load(run / "30" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
    assert "transformer.layers.0.attention.query_key_value.matrix_A.2" in sd
    assert "mixins.eva.model.vit.transformer.layers.0.attention.query_key_value.weight" in sd  # parked encoder saved
    r = subprocess.run([sys.executable, str(ROOT / "cli_demo.py"), "--from_pretrained", str(run),
                        "--image", str(SAMPLE / "images" / "s2_farmland.png"), "--prompt", "描述这张图片。",
                        "--max_length", "80"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=120)
    ok(r)
    assert r.stdout.strip(), r.stderr


def test_run_folder_loads_in_sats_own_loader(overfit_run):
    """What the official VisualGLM code and its forks do with a run folder: sat's tracker parsing,
    AutoModel.from_pretrained and load_checkpoint (torch.load with torch's weights_only default)."""
    from remoteglm.model.checkpoint import load_model
    from tests.satref import sat_from_pretrained, sat_iteration

    run = Path(summary(overfit_run)["run_dir"])
    assert sat_iteration(run) == (30, False, True)
    ours, tok, _ = load_model(run)
    theirs, args = sat_from_pretrained(run)
    assert args.model_parallel_size == 1 and args.use_lora
    ids = torch.tensor([tok.encode("问：描述这张图片。\n答：")])
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids)[0], ours(input_ids=ids)[0], atol=1e-5, rtol=1e-5)


def test_gradient_accumulation_counts_steps_not_micro_batches(tiny_checkpoint, two_samples, tmp_path):
    save = tmp_path / "gas"
    ok(finetune(tiny_checkpoint, save, "--train_data", str(two_samples), "--train_iters", "4", "--batch_size", "2",
                "--gradient_accumulation_steps", "3", "--lr", "1e-3", cache=tmp_path / "cache"))
    s = summary(save)
    assert [x[0] for x in s["losses"]] == [1, 2, 3, 4]  # one entry per optimizer step
    assert s["samples_per_second"] == pytest.approx(4 * 2 * 3 / s["train_seconds"], rel=0.02)


def test_merged_logits_equal_unmerged(overfit_run, tmp_path):
    from remoteglm.model.checkpoint import load_model
    from remoteglm.model.image import preprocess_image
    from remoteglm.train.merge import merge_checkpoint

    run = Path(summary(overfit_run)["run_dir"])
    out = merge_checkpoint(run, tmp_path / "merged")
    lora, tok, cfg = load_model(run)
    merged, _, mcfg = load_model(out)
    assert cfg.has_lora and not mcfg.has_lora
    assert not any(".matrix_A." in n for n, _ in merged.named_parameters())
    pre = tok.encode("<img>", add_special_tokens=False)
    ids = torch.tensor([pre + [tok.pad_token_id] * 32 + tok.encode("</img>问：描述这张图片。\n答：")])
    img = preprocess_image(SAMPLE / "images" / "s2_farmland.png")[None]
    with torch.no_grad():
        a = lora(input_ids=ids, image=img, pre_image=len(pre))[0]
        b = merged(input_ids=ids, image=img, pre_image=len(pre))[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_lora_changed_the_model(overfit_run, tiny_checkpoint):
    from remoteglm.model.checkpoint import load_model

    run = Path(summary(overfit_run)["run_dir"])
    tuned, tok, _ = load_model(run)
    base, _, _ = load_model(tiny_checkpoint)
    ids = torch.tensor([tok.encode("问：描述这张图片。\n答：")])
    with torch.no_grad():
        assert (tuned(input_ids=ids)[0] - base(input_ids=ids)[0]).abs().max() > 1e-3


def _losses(save: Path) -> list[tuple[int, float, float]]:
    return [tuple(x) for x in summary(save)["losses"]]


def _kill_when_saved(cmd: list[str], save: Path, step: int, timeout: float = 240) -> Path:
    """Start ``cmd`` (one process or a launcher and its ranks), SIGKILL the whole process group
    once some run folder's ``latest`` reaches ``step``; return that run folder."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for latest in save.glob("*/latest"):
                text = latest.read_text().strip()
                if text.isdigit() and int(text) >= step:
                    return latest.parent
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        raise AssertionError(f"step {step} was never saved")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _assert_resumed_equals(resumed: list, reference: list, start: int, total: int) -> None:
    assert [i for i, _, _ in resumed] == list(range(1, total + 1))  # the summary covers the whole run
    for (i, loss, lr), (j, ref_loss, ref_lr) in zip(resumed[start:], reference[start:]):
        assert i == j
        assert lr == pytest.approx(ref_lr, rel=1e-9)
        # Same data, weights, Adam moments and LR: the same numbers (restarting the data order
        # or the optimizer state moves these losses by 1e-3 or more).
        assert loss == pytest.approx(ref_loss, abs=1e-6), (i, loss, ref_loss)


def test_resume_after_kill_continues_at_step_and_lr(tiny_checkpoint, tmp_path):
    """Killed with SIGKILL mid-run, resumed exactly as the README says (same command + --resume)."""
    sample = str(SAMPLE / "sample_train.json")
    args = ["--train_data", sample, "--train_iters", "40", "--save_interval", "3", "--batch_size", "2", "--lr", "1e-2",
            "--gradient_accumulation_steps", "2"]
    cache = tmp_path / "cache"
    full = tmp_path / "full"
    ok(finetune(tiny_checkpoint, full, *args, cache=cache))
    reference = _losses(full)

    part = tmp_path / "part"
    cmd = [sys.executable, str(ROOT / "finetune_visualglm.py"), "--from_pretrained", str(tiny_checkpoint),
           "--save", str(part), "--num_workers", "0", "--feature_cache", str(cache), *args]
    run = _kill_when_saved(cmd, part, 3)
    start = int((run / "latest").read_text())
    assert start < 40, "the kill came too late to test a resume"
    r = finetune(tiny_checkpoint, part, *args, "--resume", str(run), cache=cache)
    ok(r)
    assert f"at step {start}" in r.stdout + r.stderr
    _assert_resumed_equals(_losses(part), reference, start, 40)
    s = summary(part)
    assert s["resumed_from"] == start and s["steps"] == 40
    assert (run / "40" / "mp_rank_00_model_states.pt").exists()
    assert (run / "latest").read_text().strip() == "40"
    # resuming a finished run changes nothing
    before = (run / "train_summary.json").read_text()
    r = finetune(tiny_checkpoint, part, *args, "--resume", str(run), cache=cache)
    ok(r)
    assert "nothing to train" in r.stdout and (run / "train_summary.json").read_text() == before


def test_feature_cache_run_equals_uncached(tiny_checkpoint, tmp_path):
    sample = str(SAMPLE / "sample_train.json")
    args = ["--train_data", sample, "--train_iters", "3", "--batch_size", "2", "--lr", "1e-2"]
    cached, plain = tmp_path / "cached", tmp_path / "plain"
    ok(finetune(tiny_checkpoint, cached, *args, cache=tmp_path / "cache"))
    ok(finetune(tiny_checkpoint, plain, *args, "--no_feature_cache"))
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 6  # six distinct training images
    a, b = _losses(cached), _losses(plain)
    assert [x[0] for x in a] == [x[0] for x in b] == [1, 2, 3]
    for (_, la, _), (_, lb, _) in zip(a, b):
        assert la == pytest.approx(lb, abs=1e-5)


def test_qlora_trains_and_merges(tiny_checkpoint, two_samples, tmp_path):
    from remoteglm.model.checkpoint import load_model
    from remoteglm.train.merge import merge_checkpoint

    save = tmp_path / "q"
    ok(finetune(tiny_checkpoint, save, "--train_data", str(two_samples), "--train_iters", "8", "--batch_size", "2",
                "--lr", "1e-2", "--lora_alpha", "10", "--use_qlora", "--valid_data", str(SAMPLE / "sample_val.json"),
                "--eval_interval", "3", "--eval_iters", "1", cache=tmp_path / "cache"))
    s = summary(save)
    assert s["last_loss"] < s["first_loss"]
    # trained on through two evaluations (bitsandbytes' eval-mode CPU layout once broke this)
    assert [e[0] for e in s["eval_losses"]] == [3, 6] and [x[0] for x in s["losses"]] == list(range(1, 9))
    run = Path(s["run_dir"])
    assert json.loads((run / "model_config.json").read_text())["use_qlora"] is True
    sd = torch.load(run / "8" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
    assert sd["transformer.layers.0.mlp.dense_h_to_4h.weight"].dtype == torch.uint8  # saved as NF4
    model, tok, cfg = load_model(run)
    assert cfg.has_lora  # NF4 base is dequantised on load (an ordinary LoRA model)
    merged_dir = merge_checkpoint(run, tmp_path / "merged")
    merged, _, _ = load_model(merged_dir)
    from tests.satref import sat_from_pretrained

    theirs, _ = sat_from_pretrained(merged_dir)  # the merged QLoRA run is a plain folder sat loads
    ids = torch.tensor([tok.encode("问：描述这张图片。\n答：")])
    with torch.no_grad():
        a, b = model(input_ids=ids)[0], merged(input_ids=ids)[0]
        c = theirs(input_ids=ids)[0]
    # NF4 matmuls dequantise per block in their own order; equal up to float rounding.
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(c, b, atol=1e-5, rtol=1e-5)


def _two_rank_cmd(ckpt: Path, save: Path, cache: Path, *extra: str) -> list[str]:
    from remoteglm.compat import free_port

    # the launcher as a module of this interpreter: no dependence on the venv's bin/ being on PATH
    return [sys.executable, "-m", "deepspeed.launcher.runner", "--master_addr", "127.0.0.1", "--master_port",
            str(free_port()), "--num_gpus", "2", "--no_local_rank", str(ROOT / "finetune_visualglm.py"),
            "--from_pretrained", str(ckpt), "--train_data", str(SAMPLE / "sample_train.json"), "--batch_size", "2",
            "--save", str(save), "--num_workers", "0", "--feature_cache", str(cache), "--lr", "1e-2", *extra]


def test_two_rank_resume_after_kill_equals_uninterrupted(tiny_checkpoint, tmp_path):
    """2 CPU ranks (real DeepSpeed launcher, gloo): killed mid-run, resumed; every step after the
    resume has the loss and LR of the uninterrupted run (no batch skipped or replayed twice)."""
    args = ("--train_iters", "16", "--save_interval", "4", "--keep_checkpoints", "0")
    full = tmp_path / "full"
    r = subprocess.run(_two_rank_cmd(tiny_checkpoint, full, tmp_path / "cache", *args), cwd=ROOT,
                       env={**_env(), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=300)
    ok(r)
    reference = _losses(full)
    run_full = Path((full / "LAST_RUN").read_text().strip())
    assert (run_full / "16" / "optim_rank_00.pt").exists() and (run_full / "16" / "optim_rank_01.pt").exists()
    assert len(list(full.glob("finetune-*"))) == 1  # both ranks saved into one run folder

    part = tmp_path / "part"
    run = _kill_when_saved(_two_rank_cmd(tiny_checkpoint, part, tmp_path / "cache", *args), part, 4)
    start = int((run / "latest").read_text())
    assert start < 16
    r = subprocess.run(_two_rank_cmd(tiny_checkpoint, part, tmp_path / "cache", *args, "--resume", str(run)), cwd=ROOT,
                       env=_env(), capture_output=True, text=True, timeout=300)
    ok(r)
    _assert_resumed_equals(_losses(part), reference, start, 16)


def test_bad_inputs_give_one_line(tiny_checkpoint, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"img": "x.png", "prompt": "p"', encoding="utf-8")
    r = finetune(tiny_checkpoint, tmp_path / "o", "--train_data", str(bad))
    assert r.returncode == 2 and "malformed JSON" in r.stderr and "Traceback" not in r.stderr
    pt = next(tiny_checkpoint.glob("*/mp_rank_00_model_states.pt"))
    r = finetune(pt, tmp_path / "o", "--train_data", str(SAMPLE / "sample_train.json"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and str(tiny_checkpoint) in r.stderr
    r = finetune(tiny_checkpoint, tmp_path / "o", "--train_data", str(SAMPLE / "sample_train.json"),
                 "--resume", str(tmp_path))
    assert r.returncode == 2 and "latest" in r.stderr and "Traceback" not in r.stderr
