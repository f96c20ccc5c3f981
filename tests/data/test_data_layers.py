"""remoteglm.data is the bottom stage: it imports nothing from the stages above it (model, serve,
train, eval) and its modules import each other without a circle (function-local imports count)."""

from __future__ import annotations

import ast
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "remoteglm" / "data"
ABOVE = ("remoteglm.model", "remoteglm.serve", "remoteglm.train", "remoteglm.eval")


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth of the file."""
    package = "remoteglm.data"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _modules() -> dict[str, set[str]]:
    return {f"remoteglm.data.{p.stem}": _imports(p) for p in sorted(DATA.glob("*.py")) if p.stem != "__init__"}


def test_data_imports_nothing_from_the_stages_above():
    up = {mod: sorted(n for n in names if n.startswith(ABOVE)) for mod, names in _modules().items()}
    assert {mod: names for mod, names in up.items() if names} == {}


def test_data_modules_import_each_other_without_a_circle():
    mods = _modules()
    graph = {m: {n for n in names if n in mods and n != m} for m, names in mods.items()}
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    circles = []

    def walk(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                circles.append(path[path.index(n):] + [n])
            elif n not in state:
                walk(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m, [m])
    assert circles == []
