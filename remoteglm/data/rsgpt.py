"""RSGPT's public data (Hu et al. 2023, "RSGPT: A Remote Sensing Vision Language Model and
Benchmark", github.com/Lavender105/RSGPT) -> Chinese fine-tune and evaluation records.

Supported version: the repository's ``dataset/`` folder as released in commit
d3fd7fc630c21a3a2fa6d7dd9783507ec9ea1c27 (RSICap released 2024-05, RSIEval 2023-10). Layout read
from those files:

* ``RSICap/captions.json``: ``{"annotations": [{"image_id": "0", "filename": "P0378_0001.png",
  "text_input": "<an English instruction>", "text_output": "<the human-written caption>"}, ...]}``
  (2,585 entries), images ``RSICap/images/<filename>`` (PNG crops of DOTA). RSGPT trains on it: the
  **train** split. -> ``rsicap_train.json``: ``{img, prompt, label, task: "description", caption_en}``
  with the project's detailed-description prompt (``instructions.DESCRIPTION_PROMPTS``, seeded).
* ``RSIEval/annotations.json``: ``{"annotations": [{"filename", "caption", "qa_pairs": [{"question",
  "answer", "type"}, ...]}, ...]}`` (100 images, 936 questions), images ``RSIEval/images/``. The
  benchmark: the **test** split. -> ``rsieval_test.json``, which ``python -m remoteglm.eval`` scores:
  the caption as a ``task: "caption"`` record with ``references``; each question whose answer a rule
  reads (yes/no, a count - "Ten.", "12", "There are seven planes in the image.", "more than 100" -,
  rural/urban) as a ``task: "vqa"`` record (label 是/否, a number, 农村/城市; ``qtype`` count for
  counts, presence, else RSIEval's own type: area_comp, reasoning, image ...), the others (colours,
  positions, scenes: open answers) as ``task: "vqa_open"`` with the translated answer, which the
  evaluation counts but does not score. RSIEval's type is kept in ``rsieval_type``.

Captions, questions and open answers go through the cached, checked translator sentence by sentence
(``paragraphs.py``); closed answers never reach the LLM. Images keep their release's split in the
split registry; a rerun with nothing changed writes nothing.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RemoteGLMError
from ..io import check_writable, read_json
from .annotations import MAX_SET_FILE_BYTES
from .build import check_no_leak, image_path
from .datasets import SPLITS
from .import_summary import ImportSummary
from .instructions import DESCRIPTION_PROMPTS, pick
from .jobs import say
from .numerals import english_numbers
from .paragraphs import TextConfig, finish_import, text_zh, translate_texts, untranslated
from .rsvqa import answer_zh, question_zh
from .splits import Registry, Source, SplitCheck, default_registry

NAME = "rsgpt"
# part -> (split, folder in dataset/, annotation file, output file)
PARTS = {"rsicap": ("train", "RSICap", "captions.json", "rsicap_train.json"),
         "rsieval": ("test", "RSIEval", "annotations.json", "rsieval_test.json")}
_KIND_OF_LABEL = {"是": "yesno", "否": "yesno", "农村": "rural_urban", "城市": "rural_urban"}


@dataclass
class RSGPTConfig:
    root: Path  # the repository's dataset/ folder: RSICap/ and RSIEval/
    only: str | None = None  # "rsicap" or "rsieval": that part alone
    out_dir: Path | None = None  # default data/rsgpt
    seed: int = 42  # of the prompt picked per image
    splits: Path | None = None
    command: str = ""
    text: TextConfig = field(default_factory=TextConfig)


@dataclass
class QA:
    question: str
    answer: str
    type: str
    label: str | None = None  # the Chinese label by rule (closed answers), else None: translated
    kind: str | None = None  # yesno / count / rural_urban / area when by rule


@dataclass
class RImage:
    path: Path
    split: str
    caption: str
    qas: list[QA] = field(default_factory=list)


def count_answer(answer: str) -> str | None:
    """The count an RSIEval quantity answer states ("Ten.", "There are seven planes in the image.",
    "One."), else None ("A lot of.")."""
    a = answer.strip().lower().rstrip(".").strip()
    words = re.findall(r"[a-z]+", a)
    required, _ = english_numbers(a)  # 0 and 1 left out
    digits = re.findall(r"\d+(?:\.\d+)?", a)
    if len(required) == 1 and "one" not in words and len(digits) <= 1:
        return str(next(iter(required)))
    if not required and not digits and words.count("one") == 1 and len(words) <= 8:
        return "1"
    return None


def closed_answer(answer: str) -> tuple[str, str] | None:
    """(Chinese label, how it is scored) of an answer a rule reads (RSVQA's rules: yes/no, numbers,
    ranges, areas, rural/urban; and count sentences), else None."""
    zh = answer_zh(answer)
    if zh is not None:
        return zh, _KIND_OF_LABEL.get(zh) or ("area" if zh.endswith("平方米") or "平方米" in zh else "count")
    n = count_answer(answer)
    return (n, "count") if n is not None else None


def qtype_of(rsieval_type: str, kind: str) -> str:
    """The ``qtype`` of a closed question: count for any count, presence for a yes/no presence
    question, else RSIEval's own type (area_comp, reasoning, image, scene ...: none of them names
    one of the evaluation's types, so it reads the label's own kind); a presence question with
    another kind of answer is ``rsieval_presence``."""
    if kind == "count":
        return "count"
    if rsieval_type == "presence":
        return "presence" if kind == "yesno" else "rsieval_presence"
    return rsieval_type


# ---- reading ------------------------------------------------------------------------------------------
def _read(path: Path, part: str) -> list:
    _, folder, fname, _ = PARTS[part]
    other = "rsieval" if part == "rsicap" else "rsicap"
    if not path.is_file():
        raise RemoteGLMError(f"{folder}/{fname} not found: {path}; pass --root the folder holding RSICap/ and "
                             f"RSIEval/ (the repository's dataset/), or --only {other}")
    size = path.stat().st_size
    if size == 0 or size > MAX_SET_FILE_BYTES:
        raise RemoteGLMError(f"{path}: {size:,} bytes, not an RSGPT annotation file; download {fname} again")
    data = read_json(path, f"RSGPT {fname}")
    entries = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise RemoteGLMError(f'{path}: expected {{"annotations": [...]}} (RSGPT\'s {folder}/{fname}); is it the '
                             "right file?")
    if not entries:
        raise RemoteGLMError(f"{path}: no annotations; download {fname} again")
    return entries


def _text(path: Path, where: str, item: dict, key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RemoteGLMError(f"{path}: {where} has no {key!r} (a non-empty string); is it RSGPT's file?")
    return value.strip()


def _entry(path: Path, i: int, item, images: Path, split: str, caption_key: str) -> RImage:
    if not isinstance(item, dict):
        raise RemoteGLMError(f"{path}: annotation {i} is not an object {{filename, {caption_key}, ...}}")
    name = _text(path, f"annotation {i}", item, "filename")
    if Path(name).name != name or name in (".", ".."):
        raise RemoteGLMError(f"{path}: annotation {i}: filename {name!r} is not a file name")
    return RImage(images / name, split, _text(path, f"annotation {i}", item, caption_key))


def _rsieval_qas(path: Path, i: int, item: dict) -> list[QA]:
    pairs = item.get("qa_pairs", [])
    if not isinstance(pairs, list):
        raise RemoteGLMError(f"{path}: annotation {i}: 'qa_pairs' must be a list of {{question, answer, type}}")
    out = []
    for k, qa in enumerate(pairs):
        where = f"annotation {i} qa_pairs[{k}]"
        if not isinstance(qa, dict):
            raise RemoteGLMError(f"{path}: {where} is not an object {{question, answer, type}}")
        q = QA(_text(path, where, qa, "question"), _text(path, where, qa, "answer"), _text(path, where, qa, "type"))
        closed = closed_answer(q.answer)
        if closed:
            q.label, q.kind = closed
        out.append(q)
    return out


def read_part(root: Path, part: str) -> tuple[Path, list[RImage]]:
    """(annotation file, its images with captions and questions) of ``part``, all checked."""
    split, folder, fname, _ = PARTS[part]
    path, images = root / folder / fname, root / folder / "images"
    entries = _read(path, part)
    key = "text_output" if part == "rsicap" else "caption"
    out = []
    for i, item in enumerate(entries):
        im = _entry(path, i, item, images, split, key)
        if part == "rsieval":
            im.qas = _rsieval_qas(path, i, item)
        out.append(im)
    if not images.is_dir():
        raise RemoteGLMError(f"{images}: no such folder (the images of {folder}/{fname}); unpack {folder}/images/ "
                             "beside the file")
    missing = sorted({im.path.name for im in out if not im.path.is_file()})
    if missing:
        raise RemoteGLMError(f"{path}: image {missing[0]} not found in {images} ({len(missing)} of "
                             f"{len({im.path for im in out})} images missing); download {folder}/images/ again")
    return path, out


# ---- records ------------------------------------------------------------------------------------------
def _texts(images: list[RImage]) -> list[str]:
    """What the translator is asked: captions, questions, open answers."""
    return [t for im in images for t in (im.caption, *(q.question for q in im.qas),
                                        *(q.answer for q in im.qas if q.label is None))]


def _records(im: RImage, out_dir: Path, tr, seed: int) -> tuple[list[dict], list[dict]]:
    """(records, failures) of one image: a text whose translation is not complete is left out."""
    img = image_path(im.path.parent, im.path.name, out_dir)
    recs, failed = [], []

    def zh(text: str, what: str) -> str | None:
        out = text_zh(tr, text)
        if out is None:
            failed.append({"image": im.path.name, "split": im.split, "what": what, "text": text,
                           "sentences": [{"sentence": s, "problem": p} for s, p in untranslated(tr, text)]})
        return out

    caption = zh(im.caption, "caption")
    if caption is not None:
        rec = {"img": img, "prompt": pick(DESCRIPTION_PROMPTS, seed, im.path.name, "desc"), "label": caption}
        if im.split == "train":
            recs.append({**rec, "task": "description", "caption_en": im.caption})
        else:
            recs.append({**rec, "task": "caption", "references": [caption], "caption_en": im.caption})
    for k, q in enumerate(im.qas):
        question = zh(q.question, "question")
        answer = q.label if q.label is not None else zh(q.answer, "answer")
        if question is None or answer is None:
            continue
        rec = {"img": img, "prompt": question_zh(question), "label": answer}
        if q.label is not None:
            rec |= {"task": "vqa", "qtype": qtype_of(q.type, q.kind)}
        else:
            rec |= {"task": "vqa_open", "qtype": q.type}
        recs.append(rec | {"rsieval_type": q.type, "qid": f"{im.path.stem}#{k}", "question_en": q.question,
                           "answer_en": q.answer})
    return recs, failed


def import_rsgpt(cfg: RSGPTConfig) -> ImportSummary:
    """RSICap / RSIEval -> ``OUT/rsicap_train.json``, ``OUT/rsieval_test.json`` (module docstring)."""
    t0 = time.time()
    if not cfg.root.is_dir():
        raise RemoteGLMError(f"--root {cfg.root}: no such folder (RSGPT's dataset/ folder, holding RSICap/ and "
                             "RSIEval/)")
    if cfg.only not in (None, *PARTS):
        raise RemoteGLMError(f"--only {cfg.only!r}: choose rsicap or rsieval")
    parts = [cfg.only] if cfg.only else list(PARTS)
    read = {p: read_part(cfg.root, p) for p in parts}
    images = [im for p in parts for im in read[p][1]]
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("data") / NAME
    check_writable(out_dir, "--out_dir")
    s = ImportSummary("RSGPT", "text", items=len(images))
    if cfg.text.dry_run:
        translate_texts(cfg.text, _texts(images), s)
        return s
    reg = Registry(cfg.splits or default_registry(out_dir))
    check = SplitCheck(reg, Source(out_dir, "RSGPT RSICap/RSIEval", cfg.command or _command(cfg, out_dir)),
                       images, lambda im: im.path, lambda im: True, say)
    tr = translate_texts(cfg.text, _texts(check.kept), s)
    records: dict[str, list[dict]] = {}
    failed: list[dict] = []
    for im in sorted(check.kept, key=lambda im: SPLITS.index(im.split)):
        recs, bad = _records(im, out_dir, tr, cfg.seed)
        failed += bad
        if recs:
            records.setdefault(im.split, []).extend(recs)
            c = s.split_counts.setdefault(im.split, {"images": 0, "records": 0})
            c["images"] += 1
            c["records"] += len(recs)
    check_no_leak(records)
    tasks = [r["task"] for recs in records.values() for r in recs]
    s.detail = (f"rsgpt: {', '.join(f'{PARTS[p][1]}/{PARTS[p][2]} ({PARTS[p][0]})' for p in parts)}; "
                f"{tasks.count('description') + tasks.count('caption')} captions, {tasks.count('vqa')} questions "
                f"scored by rule (yes/no, counts, rural/urban), {tasks.count('vqa_open')} open questions (task "
                "vqa_open: translated answers, not scored)")
    outputs = {out_dir / PARTS[p][3]: records[PARTS[p][0]] for p in parts if records.get(PARTS[p][0])}
    s.seconds = time.time() - t0
    return finish_import(s, out_dir, NAME, records, outputs, check, failed, tr, "texts")


def _command(cfg: RSGPTConfig, out_dir: Path) -> str:
    """The command line that reruns this import (for an RSGPTConfig made in code)."""
    args = ["python", "-m", "remoteglm.data.importers", "rsgpt", "--root", str(cfg.root), "--out_dir", str(out_dir)]
    for flag, value in (("--only", cfg.only), ("--splits", cfg.splits)):
        if value is not None:
            args += [flag, str(value)]
    return shlex.join(args)
