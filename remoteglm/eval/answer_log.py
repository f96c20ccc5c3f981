"""A checkpoint's answers, generated greedily in batches and appended to a JSON-lines log as they
come: a rerun with the same checkpoint files, prompts and settings reuses them, so an
interrupted evaluation continues where it stopped.

The log (``OUT/answers/<label>.jsonl``) is also the ``--predictions`` format, re-scored without a
model: one JSON object per line, ``{"key", "img", "prompt", "answer"}``. ``img`` is the image path
as the run had it (a relative one is taken from the current folder), ``prompt`` the exact prompt,
``answer`` the post-processed answer; ``key`` (a digest of the checkpoint and settings) is not
needed there. ``family`` (optional: the model family, e.g. ``qwen2_5_vl``) says whose box text the
grounding prompts and answers are in, ``box_settings`` (optional) the resolution its codec used
(``min_pixels`` / ``max_pixels``); ``--family`` gives the family for a log without one. An answer is found by its image file and prompt.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from remoteglm.errors import RemoteGLMError


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

    def __init__(self, path: Path, fingerprint: str, settings: dict, family: str | None = None,
                 box_settings: dict | None = None):
        self.path = path
        self.family, self.box_settings = family, box_settings
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
                row = {"key": k, "img": str(q.image), "prompt": q.prompt, "answer": a}
                if self.family:
                    row["family"] = self.family
                if self.box_settings:
                    row["box_settings"] = self.box_settings
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
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


def read_answers(path: str | os.PathLike) -> dict[tuple[str, str], str]:
    """A saved answers log (module docstring) as {(resolved image path, prompt): answer}. Every
    problem is one RemoteGLMError line: no such file, an empty one, a line that is not an answer
    object (an interrupted run's cut last line too), or two different answers to the same image and
    prompt (a log that other checkpoints or settings also appended to)."""
    path = Path(path)
    if not path.is_file():
        folder = " (it is a folder; pass a .jsonl file inside it, e.g. answers/<label>.jsonl)" if path.is_dir() else ""
        raise RemoteGLMError(f"answers file not found: {path}{folder}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise RemoteGLMError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise RemoteGLMError(f"cannot read {path}: {e.strerror or e}") from None
    out: dict[tuple[str, str], str] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if not isinstance(rec, dict):
            raise RemoteGLMError(f"{path}, line {n}: not a JSON object; each line is one answer "
                                 '{"img": ..., "prompt": ..., "answer": ...} as the evaluation writes them')
        if not all(isinstance(rec.get(k), str) for k in ("img", "prompt", "answer")):
            raise RemoteGLMError(f'{path}, line {n}: needs "img", "prompt" and "answer" strings')
        k = (str(Path(rec["img"]).resolve()), rec["prompt"])
        if out.get(k, rec["answer"]) != rec["answer"]:
            raise RemoteGLMError(f"{path}, line {n}: a second, different answer for image {rec['img']} and prompt "
                                 f"{rec['prompt']!r}: the log holds answers of several runs (another checkpoint or "
                                 "settings); re-score the log of one run")
        out[k] = rec["answer"]
    if not out:
        raise RemoteGLMError(f"{path}: no answers in it")
    return out


def saved_answers(answers: dict[tuple[str, str], str], queries: Sequence[Query], path) -> list[str]:
    """The answer to each query from ``read_answers``' dict; any query without one is a RemoteGLMError."""
    keys = [(str(q.image.resolve()), q.prompt) for q in queries]
    missing = [q for q, k in zip(queries, keys) if k not in answers]
    if missing:
        q = missing[0]
        raise RemoteGLMError(f"{path} has no answer for {len(missing)} of {len(queries)} prompts (e.g. image {q.image}, "
                             f"prompt {q.prompt!r}): re-score with the --data, --split, --limit, --image_root and prompts "
                             "of the run that wrote it")
    return [answers[k] for k in keys]


def logged_codec(path: str | os.PathLike) -> tuple[str | None, dict]:
    """(the model family a saved answers log records, or None; its ``box_settings``, or {}); a log
    whose lines name two families or resolutions is one RemoteGLMError line."""
    found, box = set(), set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("family"), str):
            found.add(rec["family"])
        if isinstance(rec, dict) and isinstance(rec.get("box_settings"), dict):
            box.add(json.dumps(rec["box_settings"], sort_keys=True))
    if len(found) > 1 or len(box) > 1:
        raise RemoteGLMError(f"{path}: answers of several model families or resolutions "
                             f"({', '.join(sorted(found | box))}); re-score the log of one run")
    return (found.pop() if found else None), (json.loads(box.pop()) if box else {})
