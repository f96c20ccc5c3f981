"""RS-GPT4V's instruction files (Xu et al. 2024, "RS-GPT4V: A Unified Multimodal Instruction-Following
Dataset for Remote Sensing Image Understanding", arXiv:2406.12479) -> Chinese fine-tune records.

What is verified and what is not. The authors' repository github.com/GeoX-Lab/RS-GPT4V (newest
commit 826de26, a README and a LICENSE) publishes no data file: the data is offered on OneDrive and
Baidu Pan only, so the names of its files, which file holds which task and the scale of its box
numbers could NOT be read from a released file. What is supported is therefore the layout the
paper's own training reads - it fine-tunes LLaVA-1.5 - as LLaVA documents it
(github.com/haotian-liu/LLaVA, docs/Finetune_Custom_Data.md): a JSON list (or JSON Lines, one object a
line) of ``{"id", "image": <path under --images>, "conversations": [{"from": "human", "value":
"<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}``, which is also how the one public loader of
an RS-GPT4V-derived file found reads it (a LISA-style ``VQADataset`` reading ``RS-GPT4V_EarthGPT.json``
as ``image`` + ``conversations`` with human / gpt turns; its repository could not be identified).
The paper's tasks (captions, local / global descriptions, multi-turn QA, grounding) all fit it.

Records (``rsgpt4v_{train,test}.json``; the files passed as ``--train`` / ``--test`` are the release's
split): the last turn is ``prompt`` / ``label``, the earlier turns are ``history`` ([[question, answer],
...]); ``task`` is ``conversation`` for several turns, else ``--task`` (default ``instruction``).
Boxes written in the text as ``[a, b, c, d]`` (x1, y1, x2, y2) become ``<box>`` markers with
``prompt_boxes`` / ``label_boxes`` in pixels of the original image (its size read from the file's
header) and a grounding ``kind`` (refer: the answer is one box; detect: several boxes, no words;
identify: boxes asked about, words answered; grounded: words and boxes). As the scale of those
numbers is not published, ``--boxes`` names it (normalized: fractions of the width and height, the
form of LLaVA-1.5's REC data; per_mille: 0-1000; pixels), and numbers that contradict it are refused.
A conversation with boxes before its last turn is left out and counted (history holds no boxes).
Test records keep the English in ``prompt_en`` / ``label_en``. All texts go through the cached,
checked translator sentence by sentence (``paragraphs.py``); a rerun with nothing changed writes nothing.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..boxes import Box
from ..errors import RemoteGLMError
from ..io import check_writable, read_json
from .annotations import MAX_SET_FILE_BYTES, on_image
from .build import check_no_leak, image_path
from .datasets import SPLITS
from .grounding_import import header_size
from .import_summary import ImportSummary
from .jobs import say
from .paragraphs import TextConfig, finish_import, pieces, text_zh, translate_texts, untranslated
from .referring import BOX
from .splits import Registry, Source, SplitCheck, default_registry

NAME = "rsgpt4v"
ROLES = ("human", "gpt")  # LLaVA's conversation roles, in turn
SCALES = ("normalized", "per_mille", "pixels")  # fractions of width / height, thousandths of them, pixels
_NUM = r"-?\d+(?:\.\d+)?"
BOX_TEXT = re.compile(rf"\[\s*{_NUM}(?:\s*,\s*{_NUM}){{3}}\s*\]")  # [x1, y1, x2, y2]; no groups (re.split)
IMAGE_TOKEN = "<image>"


@dataclass
class RSGPT4VConfig:
    train: list[Path] = field(default_factory=list)
    test: list[Path] = field(default_factory=list)
    images: Path = Path(".")  # the folder the files' "image" paths are relative to
    boxes: str | None = None  # normalized / per_mille / pixels; needed only when a text holds a box
    task: str = "instruction"  # the task of a single-turn record without boxes
    out_dir: Path | None = None  # default data/rsgpt4v
    splits: Path | None = None
    command: str = ""
    text: TextConfig = field(default_factory=TextConfig)


@dataclass
class Conv:
    path: Path  # the image
    split: str
    turns: list[tuple[str, str]]  # (question, answer), English, <image> taken out
    where: str  # "FILE: entry N", for messages
    source_id: object = None
    boxes: dict[tuple[int, int], list[Box]] = field(default_factory=dict)  # (turn, 0 question / 1 answer) -> pixels


# ---- reading ------------------------------------------------------------------------------------------
def _entries(path: Path) -> list:
    if not path.is_file():
        raise RemoteGLMError(f"RS-GPT4V file not found: {path}; pass --train / --test the JSON files")
    size = path.stat().st_size
    if size == 0 or size > MAX_SET_FILE_BYTES:
        raise RemoteGLMError(f"{path}: {size:,} bytes, not an RS-GPT4V instruction file; download it again")
    if path.suffix.lower() == ".jsonl":
        out = []
        for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise RemoteGLMError(f"{path}: line {n} is not JSON ({e.msg}); fix the line or download the "
                                         "file again") from None
        data = out
    else:
        data = read_json(path, "RS-GPT4V file")
    if not isinstance(data, list) or not data:
        raise RemoteGLMError(f"{path}: expected a non-empty JSON list of {{id, image, conversations}} (LLaVA's "
                             "layout) or JSON Lines of them; is it an RS-GPT4V instruction file?")
    return data


def _turns(where: str, item: dict) -> list[tuple[str, str]]:
    conv = item.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise RemoteGLMError(f"{where} has no 'conversations' list of {{from, value}} turns")
    texts = []
    for k, t in enumerate(conv):
        role = t.get("from") if isinstance(t, dict) else None
        if role not in ROLES:
            raise RemoteGLMError(f"{where}: turn {k} has role {role!r}; LLaVA's roles are human and gpt")
        if role != ROLES[k % 2]:
            raise RemoteGLMError(f"{where}: turn {k} is {role}'s, expected {ROLES[k % 2]}'s (human and gpt take "
                                 "turns, human first)")
        value = t.get("value")
        if not isinstance(value, str):
            raise RemoteGLMError(f"{where}: turn {k} has no 'value' string")
        text = re.sub(r"\s+", " ", value.replace(IMAGE_TOKEN, " ")).strip()
        if not text:
            raise RemoteGLMError(f"{where}: turn {k} is empty")
        texts.append(text)
    if len(texts) % 2:
        raise RemoteGLMError(f"{where}: {len(texts)} turns; a conversation ends with gpt's answer")
    return list(zip(texts[0::2], texts[1::2]))


def read_file(path: Path, split: str, images: Path) -> list[Conv]:
    out = []
    for i, item in enumerate(_entries(path)):
        where = f"{path}: entry {i}"
        if not isinstance(item, dict):
            raise RemoteGLMError(f"{where} is not an object {{id, image, conversations}}")
        image = item.get("image")
        if not isinstance(image, str) or not image.strip():
            raise RemoteGLMError(f"{where} has no 'image' (a path under --images)")
        rel = Path(image.strip())
        if rel.is_absolute() or ".." in rel.parts:
            raise RemoteGLMError(f"{where}: image {image!r} is not a path under --images")
        out.append(Conv(images / rel, split, _turns(where, item), where, item.get("id")))
    return out


def _box_scale(convs: list[Conv], scale: str | None) -> None:
    """The box numbers of every text agree with ``scale``; no scale with boxes present is one line."""
    found = [(c, m.group(0)) for c in convs for q, a in c.turns for t in (q, a) for m in BOX_TEXT.finditer(t)]
    if not found:
        return
    if scale is None:
        raise RemoteGLMError(f"{found[0][0].where}: a box {found[0][1]} ({len(found)} boxes in all); RS-GPT4V does "
                             "not publish their scale: pass --boxes normalized (fractions of width and height), "
                             "per_mille (0-1000) or pixels")
    values = [float(v) for _, b in found for v in re.findall(_NUM, b)]
    if scale == "normalized" and max(values) > 1:
        c, b = next((c, b) for c, b in found if any(float(v) > 1 for v in re.findall(_NUM, b)))
        raise RemoteGLMError(f"{c.where}: box {b} has numbers above 1, so it is not --boxes normalized; pass "
                             "--boxes per_mille or pixels")
    if scale != "normalized" and max(values) <= 1:
        raise RemoteGLMError(f"all {len(found)} boxes have numbers between 0 and 1 (e.g. {found[0][1]} in "
                             f"{found[0][0].where}): fractions, not --boxes {scale}; pass --boxes normalized")


def _pixel_boxes(convs: list[Conv], scale: str | None) -> int:
    """Each box in pixels of its image; returns how many conversations have boxes before their last turn."""
    earlier = 0
    sizes: dict[Path, tuple[int, int]] = {}
    for c in convs:
        for k, (q, a) in enumerate(c.turns):
            for side, text in enumerate((q, a)):
                found = BOX_TEXT.findall(text)
                if not found:
                    continue
                if c.path not in sizes:
                    sizes[c.path] = header_size(c.path)
                w, h = sizes[c.path]
                sx, sy = {"normalized": (w, h), "per_mille": (w / 1000, h / 1000)}.get(scale, (1.0, 1.0))
                c.boxes[(k, side)] = [
                    on_image(c.path, f"{c.where} turn {2 * k + side}: {b}",
                             Box(*(round(float(v) * s, 2) for v, s in zip(re.findall(_NUM, b), (sx, sy, sx, sy)))),
                             w, h) for b in found]
        earlier += any(k < len(c.turns) - 1 for k, _ in c.boxes)
    return earlier


# ---- records ------------------------------------------------------------------------------------------
def _texts(convs: list[Conv]) -> list[str]:
    return [p for c in convs for q, a in c.turns for t in (q, a) for p in pieces(t, BOX_TEXT)]


def _kind(prompt_boxes: list, label: str, label_boxes: list) -> str:
    words = label.replace(BOX, "").strip(" 。.，,、")
    if not words:
        return "refer" if len(label_boxes) == 1 else "detect"
    return "grounded" if label_boxes else "identify"


def _record(c: Conv, out_dir: Path, tr, task: str) -> tuple[dict | None, dict | None]:
    """(record, None) or (None, its failures entry) when a turn is not completely translated."""
    zh = [(text_zh(tr, q, BOX_TEXT), text_zh(tr, a, BOX_TEXT)) for q, a in c.turns]
    if any(x is None for pair in zh for x in pair):
        bad = [{"sentence": s, "problem": p} for q, a in c.turns for t in (q, a)
               for s, p in untranslated(tr, t, BOX_TEXT)]
        return None, {"image": str(c.path), "split": c.split, "entry": c.where, "sentences": bad}
    *history, (prompt, label) = zh
    rec: dict = {"img": image_path(c.path.parent, c.path.name, out_dir), "prompt": prompt, "label": label}
    if history:
        rec["history"] = [list(t) for t in history]
    last = len(c.turns) - 1
    qb, ab = c.boxes.get((last, 0), []), c.boxes.get((last, 1), [])
    if qb or ab:
        rec |= {"kind": _kind(qb, label, ab), "prompt_boxes": [list(b.xyxy) for b in qb],
                "label_boxes": [list(b.xyxy) for b in ab]}
    else:
        rec["task"] = "conversation" if history else task
    if c.source_id is not None:
        rec["source_id"] = c.source_id
    if c.split != "train":
        rec |= {"prompt_en": c.turns[-1][0], "label_en": c.turns[-1][1]}
    return rec, None


def import_rsgpt4v(cfg: RSGPT4VConfig) -> ImportSummary:
    """RS-GPT4V's LLaVA-style files -> ``OUT/rsgpt4v_{train,test}.json`` (module docstring)."""
    t0 = time.time()
    if not (cfg.train or cfg.test):
        raise RemoteGLMError("no file to import: pass --train FILE ... and/or --test FILE ...")
    if cfg.boxes is not None and cfg.boxes not in SCALES:
        raise RemoteGLMError(f"--boxes {cfg.boxes!r}: choose {', '.join(SCALES)}")
    if not cfg.images.is_dir():
        raise RemoteGLMError(f"--images {cfg.images}: no such folder (the one the files' image paths start in)")
    convs = [c for split, files in (("train", cfg.train), ("test", cfg.test)) for f in files
             for c in read_file(Path(f), split, cfg.images)]
    missing = sorted({str(c.path) for c in convs if not c.path.is_file()})
    if missing:
        raise RemoteGLMError(f"image {missing[0]} not found ({len(missing)} of {len({c.path for c in convs})} images "
                             "missing); pass --images the folder the files' image paths start in")
    _box_scale(convs, cfg.boxes)
    earlier = _pixel_boxes(convs, cfg.boxes)
    convs = [c for c in convs if not any(k < len(c.turns) - 1 for k, _ in c.boxes)]
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("data") / NAME
    check_writable(out_dir, "--out_dir")
    s = ImportSummary("RS-GPT4V", "text", items=len({c.path for c in convs}))
    if cfg.text.dry_run:
        translate_texts(cfg.text, _texts(convs), s)
        return s
    reg = Registry(cfg.splits or default_registry(out_dir))
    check = SplitCheck(reg, Source(out_dir, "RS-GPT4V", cfg.command or _command(cfg, out_dir)), convs,
                       lambda c: c.path, lambda c: True, say)
    tr = translate_texts(cfg.text, _texts(check.kept), s)
    records: dict[str, list[dict]] = {}
    failed = []
    images: dict[str, set] = {}
    for c in sorted(check.kept, key=lambda c: SPLITS.index(c.split)):
        rec, bad = _record(c, out_dir, tr, cfg.task)
        if bad:
            failed.append(bad)
            continue
        records.setdefault(c.split, []).append(rec)
        images.setdefault(c.split, set()).add(c.path)
    check_no_leak(records)
    s.split_counts = {k: {"images": len(images[k]), "records": len(v)} for k, v in records.items()}
    kinds = [r.get("kind") or r["task"] for recs in records.values() for r in recs]
    s.detail = (f"rs-gpt4v: {len(cfg.train)} train / {len(cfg.test)} test files; "
                + ", ".join(f"{k} {kinds.count(k)}" for k in dict.fromkeys(kinds))
                + (f"; {earlier} conversations with boxes before their last turn left out" if earlier else ""))
    outputs = {out_dir / f"{NAME}_{split}.json": recs for split, recs in records.items()}
    s.seconds = time.time() - t0
    return finish_import(s, out_dir, NAME, records, outputs, check, failed, tr, "conversations")


def _command(cfg: RSGPT4VConfig, out_dir: Path) -> str:
    """The command line that reruns this import (for an RSGPT4VConfig made in code)."""
    args = ["python", "-m", "remoteglm.data.importers", "rsgpt4v", "--images", str(cfg.images), "--out_dir",
            str(out_dir)]
    for flag, files in (("--train", cfg.train), ("--test", cfg.test)):
        if files:
            args += [flag, *map(str, files)]
    for flag, value in (("--boxes", cfg.boxes), ("--splits", cfg.splits)):
        if value is not None:
            args += [flag, str(value)]
    return shlex.join(args + (["--task", cfg.task] if cfg.task != "instruction" else []))
