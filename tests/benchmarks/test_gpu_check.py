"""benchmarks/gpu_check.py end to end at tiny size on the CPU (every part, scaled down), so the
prepared GPU run is not broken when a device comes; plus its FLOP formula and peak table."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def _run(out: Path, *extra: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    return subprocess.run([sys.executable, str(SCRIPT), "--size", "tiny", "--out", str(out), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "res" / "gpu_check.json"
    r = _run(out)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return r, json.loads(out.read_text(encoding="utf-8")), out


@pytest.mark.slow
def test_every_section_has_numbers_or_an_explicit_skip(tiny_run):
    _, res, _ = tiny_run
    assert res["parts"] == {"correct": "ok", "train": "all done", "infer": "ok", "resume": "ok: equal"}
    assert res["skipped"] == []
    env = res["meta"]["env"]
    assert env["SwissArmyTransformer"] and env["deepspeed"] and env["bitsandbytes"]
    assert set(res["meta"]["imports"].values()) == {"ok"}  # the preflight, before any run

    fl = res["flops"]
    assert "4·P·T + 6·N·T + 12·L·d·Σn²" in fl["formula"] and "NOT counted" in fl["formula"]
    for part in ("encoder_forward", "chatglm_forward", "lora_step"):  # formula == FlopCounterMode exactly
        assert fl["check_on_tiny"][part]["ratio"] == pytest.approx(1.0, abs=1e-9), part
    assert fl["peak_flops"] is None and "CPU" in fl["peak_source"]
    assert _number(fl["P_chatglm_matmul_params"]) and fl["seq_len"] == res["base"]["sample"]["tokens"] > 32

    units = res["train"]["units"]
    assert [u["name"] for u in units] == ["lora-b1-cache-bf16", "qlora-b4-cache-bf16", "qlora-b1-nocache-bf16",
                                          "lora-b1-cache-fp16"]
    for u in units:
        assert u["status"] == "ok", u
        assert u["steps"] == 4 and len(u["losses"]) == 4 and len(u["step_seconds"]) == 3
        for k in ("steady_step_s", "samples_per_s", "tokens_per_s", "first_loss", "last_loss", "flops_per_step",
                  "achieved_tflops", "peak_rss_bytes", "wall_s", "setup_s"):
            assert _number(u[k]), (u["name"], k)
        assert u["tokens_per_step"] == u["batch"] * u["seq_len"]
        assert u["trainable_parameters"] == u["lora_parameters_formula"]
        assert u["mfu"] is None and u["peak_allocated_bytes"] is None  # no GPU, no peak for MFU
        assert "--use_qlora" in u["command"] if u["method"] == "qlora" else "--use_qlora" not in u["command"]
        assert ("--no_feature_cache" in u["command"]) != u["feature_cache"]
        assert f"--{u['precision']}" in u["command"]
        assert u["loss_fell"], u["losses"]

    modes = res["inference"]["modes"]
    assert [m["mode"] for m in modes] == ["float", "int8", "int4"]
    assert [m["dtype"] for m in modes] == ["float32", "int8 (LLM.int8)", "int4 (NF4)"]
    for m in modes:
        assert m["status"] == "ok"
        for b in ("b1", "b4"):
            r = m[b]
            assert _number(r["first_token_ms"]) and _number(r["tokens_per_s"]) and _number(r["peak_bytes"])
            assert r["decoded_per_prompt"] == 8 and r["prompt_tokens"] > 32
        assert m["b4"]["tokens_per_s_per_request"] == pytest.approx(m["b4"]["tokens_per_s"] / 4)
    assert "generate_tokens" in res["inference"]["concurrency"]

    cor = res["correctness"]
    assert cor["status"] == "ok" and cor["device"] == "cpu"
    for dt in ("bfloat16", "float16"):
        d = cor[dt]
        assert d["finite"] and 0 < d["max_abs"] and d["max_rel"] < 0.05 and d["top1_agree"] > 0.8
        assert _number(d["image_embeds"]["max_rel"])
    assert cor["float16"]["max_abs"] < cor["bfloat16"]["max_abs"]  # fp16 keeps more mantissa bits
    nf4 = cor["nf4"]
    assert nf4["cuda_vs_cpu"] == "skipped: no CUDA"
    assert 0.01 < nf4["cpu_vs_float"]["max_rel"] < 0.3  # 4-bit rounding: visible, bounded

    rs = res["resume"]
    assert rs["status"] == "ok: equal" and rs["device"] == "cpu"
    assert 0 < rs["killed_with_latest_at"] < rs["train_iters"] and rs["resumed_from"] == rs["killed_with_latest_at"]
    assert rs["steps_match"] and rs["max_abs_loss_diff"] <= 1e-6 and rs["steps_compared"] > 0


@pytest.mark.slow
def test_table_is_printed_and_logged(tiny_run):
    r, res, out = tiny_run
    for text in (r.stdout, out.with_suffix(".log").read_text(encoding="utf-8")):
        assert "GPU check: visualglm-tiny" in text
        for head in ("Fine-tune (4 steps", "Inference (8 new tokens", "Correctness on cpu", "resume after SIGKILL"):
            assert head in text
        for u in res["train"]["units"]:
            assert u["name"] in text
        assert "int4 (NF4)" in text and "NF4 CUDA vs CPU: skipped: no CUDA" in text
        assert "base: done in" in text and "infer: done in" in text  # elapsed per part


@pytest.mark.slow
def test_budget_skips_the_rest_and_says_so(tmp_path):
    out = tmp_path / "gpu_check.json"
    r = _run(out, "--budget-s", "0", "--parts", "correct,train,infer")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["base"]["status"] == "ok"  # the base always runs; every later part is over budget
    assert res["parts"]["correct"] == res["parts"]["infer"] == "skipped: budget"
    assert res["parts"]["resume"] == "not requested (--parts)"
    assert [u["status"] for u in res["train"]["units"]] == ["skipped: budget"] * 4
    assert len(res["skipped"]) == 6 and all("--budget-s 0" in s for s in res["skipped"])
    assert "Skipped:" in r.stdout and "train lora-b1-cache-fp16: skipped: budget" in r.stdout


def test_full_size_refuses_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    r = subprocess.run([sys.executable, str(SCRIPT), "--size", "full", "--out", str(tmp_path / "x.json")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "needs a CUDA GPU" in r.stderr
    assert not (tmp_path / "x.json").exists()


def test_flop_formula_at_full_size():
    from remoteglm.model.config import get_config

    cfg = get_config("visualglm-6b")
    d, f, L, V = 4096, 16384, 28, 130528
    P = L * (3 * d * d + d * d + 2 * d * f) + V * d
    assert gpu_check.chatglm_matmul_params(cfg) == P == 6_171_787_264
    assert gpu_check.lora_params(cfg, 10) == 28 * (3 * (10 * d + d * 10) + 2 * 10 * d) == 9_175_040
    n = 126
    fl = gpu_check.train_step_flops(cfg, 10, 4, n, cache=True)
    T = 4 * n
    assert fl["total"] == 4 * P * T + 6 * fl["N"] * T + 12 * L * d * 4 * n * n
    assert fl["encoder"] == 0
    off = gpu_check.train_step_flops(cfg, 10, 4, n, cache=False)
    assert off["total"] - fl["total"] == 4 * gpu_check.encoder_forward_flops(cfg)
    # the image tower is ~1B parameters over 257 tokens: ~0.5 TFLOP an image
    assert 4.5e11 < gpu_check.encoder_forward_flops(cfg) < 6.5e11


def test_peak_table():
    assert gpu_check.peak_flops("NVIDIA H200", None)[0] == 989.4e12
    assert gpu_check.peak_flops("NVIDIA H100 80GB HBM3", None)[0] == 989.4e12
    assert gpu_check.peak_flops("NVIDIA H100 PCIe", None)[0] == 756e12
    assert gpu_check.peak_flops("NVIDIA A100-SXM4-80GB", None)[0] == 312e12
    peak, why = gpu_check.peak_flops("NVIDIA L4", None)
    assert peak is None and "--peak-tflops" in why
    assert gpu_check.peak_flops("NVIDIA L4", 121.0) == (121e12, "--peak-tflops 121")
