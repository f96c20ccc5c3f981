"""A checkpoint's answers, generated greedily in batches and appended to a JSON-lines log as they
come: a rerun with the same checkpoint files, prompts and settings reuses them, so an
interrupted evaluation continues where it stopped."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass
class Query:
    """One prompt about one image, answered in at most ``max_new_tokens`` tokens."""

    image: Path
    prompt: str
    max_new_tokens: int


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """Changes whenever the checkpoint's files change (names, sizes, modification times)."""
    root = Path(path).resolve()
    items = []
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            st = (Path(dirpath) / f).stat()
            items.append(f"{os.path.relpath(os.path.join(dirpath, f), root)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("\n".join([str(root), *sorted(items)]).encode()).hexdigest()


class AnswerLog:
    """Answers appended as JSON lines; a rerun with the same checkpoint, prompts and settings
    reuses them (an unfinished last line from a crash is ignored)."""

    def __init__(self, path: Path, fingerprint: str, settings: dict):
        self.path = path
        self.base = {"ckpt": fingerprint, **settings}
        self.done: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.done[rec["key"]] = rec["answer"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def key(self, q: Query) -> str:
        blob = json.dumps({**self.base, "img": str(q.image.resolve()), "prompt": q.prompt, "max": q.max_new_tokens},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha1(blob.encode()).hexdigest()

    def add(self, pairs: list[tuple[Query, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for q, a in pairs:
                k = self.key(q)
                self.done[k] = a
                f.write(json.dumps({"key": k, "img": str(q.image), "prompt": q.prompt, "answer": a}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def generate_answers(engine, queries: Sequence[Query], log: AnswerLog, batch_size: int,
                     repetition_penalty: float, label: str) -> list[str]:
    """Greedy answers for ``queries`` from ``engine`` (a ``remoteglm.serve.engine.Engine``: the
    prompt and answer post-processing of the chat front ends); those already in ``log`` are
    reused; tqdm with ETA."""
    from tqdm import tqdm

    todo = [i for i, q in enumerate(queries) if log.key(q) not in log.done]
    bar = tqdm(total=len(queries), initial=len(queries) - len(todo), desc=f"generate [{label}]", unit="prompt",
               dynamic_ncols=True, file=sys.stderr)
    try:
        # Same-length answers batch together: captions first, then the short class answers.
        for limit in sorted({queries[i].max_new_tokens for i in todo}, reverse=True):
            group = [i for i in todo if queries[i].max_new_tokens == limit]
            for s in range(0, len(group), batch_size):
                chunk = [queries[i] for i in group[s:s + batch_size]]
                out = engine.batch([q.image for q in chunk], [q.prompt for q in chunk], batch_size=len(chunk),
                                   do_sample=False, max_new_tokens=limit, repetition_penalty=repetition_penalty)
                log.add(list(zip(chunk, out)))
                bar.update(len(chunk))
    finally:
        bar.close()
    return [log.done[log.key(q)] for q in queries]
