"""Helpers shared by the data-pipeline tests (small caption files, running the CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "captions"
CLI = ROOT / "translation_en2zh.py"


def ucm_list(n: int | None = None, step: int = 1) -> list[dict]:
    items = json.loads((FIXTURES / "UCM-en.json").read_text())
    return items[::step][:n] if n else items[::step]


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False))
    return path


def karpathy_from_list(items: list[dict], splits: list[str]) -> dict:
    """A Karpathy-style dataset.json built from RemoteGLM items, with the given splits (cycled)."""
    from remoteglm.data.datasets import split_caption

    images = []
    for i, it in enumerate(items):
        sents = [{"raw": s + " .", "tokens": s.lower().split()} for s in split_caption(it["caption"])]
        images.append({"filename": it["imged_id"], "imgid": i, "split": splits[i % len(splits)], "sentences": sents})
    return {"dataset": "ucm", "images": images}


def run_cli(*args: str, timeout: float = 120, key: str | None = None, env: dict[str, str] | None = None,
            **kw) -> subprocess.CompletedProcess:
    """translation_en2zh.py in a subprocess; ``key`` is exported as OPENAI_API_KEY, ``env`` added as is."""
    full = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("OPENAI_API_KEY", "REMOTEGLM_DEBUG", "OPENAI_BASE_URL"):
        full.pop(name, None)
    if key:
        full["OPENAI_API_KEY"] = key
    full.update(env or {})
    return subprocess.run([sys.executable, str(CLI), "--no_progress", *args], capture_output=True, text=True,
                          timeout=timeout, env=full, cwd=kw.get("cwd"))


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
