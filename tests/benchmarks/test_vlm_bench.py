"""benchmarks/vlm_bench.py at tiny size on the CPU (what train_bench/infer_bench --model run), so
the prepared full-size GPU run is not broken when a device comes."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import vlm_bench  # noqa: E402


def test_tiny_rows_have_numbers(capsys):
    assert vlm_bench.main(["--family", "glm4v", "--steps", "2", "--runs", "1", "--new_tokens", "4"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["lora"], ["qlora"])}
    assert set(rows) == {"lora", "qlora"} and all(float(r[1]) > 0 and float(r[3]) > 0 for r in rows.values())
    modes = [line.split() for line in out.splitlines() if line.strip().split()[:1] in (["fp32"], ["int8"], ["int4"])]
    assert [m[0] for m in modes] == ["fp32", "int8", "int4"] and all(float(m[1]) > 0 for m in modes)
    assert "CPU" in out and "MFU" in out  # no GPU: no MFU figure, the column is still there


def test_full_size_needs_a_gpu(monkeypatch):
    """On a machine without CUDA (made so here if it has one) --size full stops with one line."""
    import pytest
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        vlm_bench.main(["--size", "full"])
