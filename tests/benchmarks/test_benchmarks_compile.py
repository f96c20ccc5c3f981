"""Every benchmark script compiles under the interpreter that runs the suite (the project's Python
3.11): a script that only a newer Python can parse fails when someone runs it, not here."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_script_compiles(script):
    compile(script.read_text(encoding="utf-8"), str(script), "exec")
