"""VRSBench's referring (visual grounding) files -> Chinese refer records
(``python -m remoteglm.data.importers vrsbench``).

VRSBench: Li, Ding, Elhoseiny, NeurIPS 2024 Datasets and Benchmarks (arXiv:2406.12384); code
github.com/lx709/VRSBench, files huggingface.co/datasets/xiang709/VRSBench. Supported: the files of
that release as renamed there from ``RSBench_*`` (v1.0 / v1.1), unpacked into one folder:

* ``VRSBench_EVAL_referring.json`` -> split ``test``: a JSON list, one entry per expression, with
  the fields the authors' ``prepare_eval_all.ipynb`` ("Prepare Referring") writes: ``image_id``
  (the PNG's name in ``Images_val/``), ``question`` (the English expression), ``ground_truth``
  ``"{<x1><y1><x2><y2>}"``, ``unique``, ``obj_cls``, ``obj_corner``, ``size_group``, ``question_id``
  ... It is the set the benchmark scores (its files say "val": ``Images_val``, ``Annotations_val``;
  there is no other held-out set), so its records are test records (``vrsbench_refer_test.json``,
  the name :mod:`remoteglm.eval.anchors` knows).
* ``VRSBench_train.json`` -> split ``train``: LLaVA-style ``[{"id", "image", "conversations":
  [{"from": "human", "value": "<image>\\n[refer] could you tell me the location for <p>EXPR</p>?"},
  {"from": "gpt", "value": "{<x1><y1><x2><y2>}"}]}]`` (images in ``Images_train/``); only the
  ``[refer]`` turns are read, ``[caption]`` / ``[vqa]`` ones are skipped.

The numbers are hundredths of the image's width (x) and height (y), as the authors' code shows:
``extract_patch_json.py`` divides each object's corners by the image's width and height, the
notebook writes ``int(v * 100)`` of the corners' horizontal box, and
``eval_fianl/compute_metrics.ipynb`` takes IoU on those integers as they are. So pixel x = n * W / 100
(W, H from each image's header): ``{<25><40><33><60>}`` on 512 x 512 is 128, 204.8, 168.96, 307.2.
Truncation gives a few boxes of no width or height (a public adapter counts 13 of the 16,159 eval
entries, e.g. ``{<92><0><96><0>}``): like a box outside its image, one line, or with
``--skip_bad_boxes`` left out and counted.

Each entry is one ``refer`` record ``{img, prompt, label: "<box>", kind, prompt_boxes: [],
label_boxes: [[x1, y1, x2, y2]], expression_en}`` (test ones add ``category`` and ``unique``). With
an endpoint the expression is translated by the caption pipeline's cached, checked translator
(an eval expression must also name its ``obj_cls``'s Chinese name: ``translate.check_expression``;
the train file names no category, so its expressions get the plain checks); without one, or where
a translation still fails, the prompt quotes the English expression.
"""

from __future__ import annotations

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
from .glossary import object_name_zh
from .grounding_import import header_size
from .grounding_translate import ExpressionConfig, expression_zh, failures, translated
from .import_summary import IMPORT_VERSION, ImportSummary, print_import_summary, write_if_changed
from .jobs import build_stamp, failure_advice, say, write_failures
from .referring import refer_tasks
from .splits import Registry, Source, SplitCheck, default_registry
from .translate import TranslateResult, normalise, translate_cached

EVAL_FILE, TRAIN_FILE = "VRSBench_EVAL_referring.json", "VRSBench_train.json"
PARTS = {"eval": ("test", EVAL_FILE, "Images_val"), "train": ("train", TRAIN_FILE, "Images_train")}
NAME = "vrsbench"
SCALE = 100.0  # ground_truth numbers are hundredths of the image's width / height
_NUM = r"\s*<\s*(-?\d+(?:\.\d+)?)\s*>\s*"
_BOX = re.compile(r"\{" + _NUM * 4 + r"\}")
_EXPR = re.compile(r"<p>(.*?)</p>", re.DOTALL)


@dataclass
class VRSBenchConfig:
    root: Path
    eval_file: Path | None = None  # default ROOT/VRSBench_EVAL_referring.json
    train_file: Path | None = None  # default ROOT/VRSBench_train.json
    images_val: Path | None = None  # default ROOT/Images_val (or the Images_val folder inside it)
    images_train: Path | None = None
    only: str | None = None  # "eval" or "train": that file alone
    out_dir: Path | None = None  # default data/vrsbench
    skip_bad_boxes: bool = False
    splits: Path | None = None
    command: str = ""
    expressions: ExpressionConfig = field(default_factory=ExpressionConfig)


@dataclass
class Entry:
    en: str  # the English expression
    gt: str  # its ground truth as written
    category: str = ""  # obj_cls (eval entries)
    unique: object = None
    box: Box | None = None  # in pixels, once checked


@dataclass
class VImage:
    path: Path
    split: str
    entries: list[Entry] = field(default_factory=list)


def _paths(cfg: VRSBenchConfig, part: str) -> tuple[Path, Path]:
    """(annotation file, image folder) of ``part``; the folder as unpacked, or the same-named one inside it."""
    _, fname, folder = PARTS[part]
    f = (cfg.eval_file if part == "eval" else cfg.train_file) or cfg.root / fname
    images = cfg.images_val if part == "eval" else cfg.images_train
    if images is None:
        images = cfg.root / folder
        images = images / folder if (images / folder).is_dir() else images
    return f, images


def _read(path: Path, part: str, what: str) -> list:
    other = "train" if part == "eval" else "eval"
    option = "--eval_file" if part == "eval" else "--train_file"
    if not path.is_file():
        raise RemoteGLMError(f"{what} not found: {path}; pass {option} the file (or --only {other} to import the "
                             f"other file alone)")
    size = path.stat().st_size
    if size == 0:
        raise RemoteGLMError(f"{path} is empty; download {path.name} again")
    if size > MAX_SET_FILE_BYTES:
        raise RemoteGLMError(f"{path}: {size:,} bytes, far more than a VRSBench file; is it the right file?")
    data = read_json(path, what)
    if not isinstance(data, list):
        raise RemoteGLMError(f"{path}: must be a JSON list of entries (as {PARTS[part][1]}); is it the right file?")
    if not data:
        raise RemoteGLMError(f"{path}: no entries; download {path.name} again")
    return data


def _text(path: Path, i: int, item: dict, key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RemoteGLMError(f"{path}: entry {i} has no {key!r} (a non-empty string); is it {path.name} of VRSBench?")
    return value.strip()


def _file_name(path: Path, i: int, name: str) -> str:
    if Path(name).name != name or name in (".", ".."):
        raise RemoteGLMError(f"{path}: entry {i}: image {name!r} is not a file name")
    return name


def _eval_entries(path: Path) -> list[tuple[str, Entry]]:
    out = []
    for i, item in enumerate(_read(path, "eval", "VRSBench referring file")):
        if not isinstance(item, dict):
            raise RemoteGLMError(f"{path}: entry {i} is not an object {{image_id, question, ground_truth, ...}}")
        image = _file_name(path, i, _text(path, i, item, "image_id"))
        cat = item.get("obj_cls")
        out.append((image, Entry(_text(path, i, item, "question"), _text(path, i, item, "ground_truth"),
                                 cat if isinstance(cat, str) else "", item.get("unique"))))
    return out


def _train_entries(path: Path) -> list[tuple[str, Entry]]:
    out = []
    for i, item in enumerate(_read(path, "train", "VRSBench train file")):
        turns = item.get("conversations") if isinstance(item, dict) else None
        if not (isinstance(turns, list) and all(isinstance(t, dict) and isinstance(t.get("value"), str)
                                                for t in turns)):
            raise RemoteGLMError(f"{path}: entry {i} is not an {{image, conversations: [{{from, value}}, ...]}} "
                                 "object; is it VRSBench_train.json?")
        for k in range(0, len(turns) - 1, 2):
            ask, answer = turns[k]["value"], turns[k + 1]["value"]
            if "[refer]" not in ask:
                continue
            m = _EXPR.search(ask)
            if not m or not m.group(1).strip():
                raise RemoteGLMError(f"{path}: entry {i}: its [refer] question has no <p>expression</p>: {ask[:80]!r}")
            out.append((_file_name(path, i, _text(path, i, item, "image")), Entry(m.group(1).strip(), answer.strip())))
    if not out:
        raise RemoteGLMError(f"{path}: no [refer] conversation (grounding turn) in it; is it VRSBench_train.json?")
    return out


def _images(cfg: VRSBenchConfig, part: str, entries: list[tuple[str, Entry]], path: Path) -> list[VImage]:
    """The entries grouped by image; an image that is not there is one line (with how many are missing)."""
    _, images = _paths(cfg, part)
    option = "--images_val" if part == "eval" else "--images_train"
    if not images.is_dir():
        raise RemoteGLMError(f"{option} {images}: no such folder (the unpacked {PARTS[part][2]}.zip); pass "
                             f"{option} the folder of the PNG images")
    by_name: dict[str, VImage] = {}
    for name, e in entries:
        if name not in by_name:
            by_name[name] = VImage(images / name, PARTS[part][0])
        by_name[name].entries.append(e)
    missing = [n for n, im in by_name.items() if not im.path.is_file()]
    if missing:
        raise RemoteGLMError(f"{path}: image {missing[0]} not found in {images} ({len(missing)} of {len(by_name)} "
                             f"images missing); pass {option} the folder that holds them")
    return list(by_name.values())


def _boxes(images: list[VImage], path_of: dict[str, Path], skip: bool) -> int:
    """Each entry's box in pixels of its image (size from the header); returns how many entries were
    left out (``skip``), else a bad box is one line saying how many entries have one."""
    bad: list[str] = []
    for im in images:
        w, h = header_size(im.path)
        kept = []
        for e in im.entries:
            where = f"image {im.path.name}, {e.en[:60]!r}"
            found = _BOX.findall(e.gt)
            if len(found) != 1:
                raise RemoteGLMError(f"{path_of[im.split]}: {where}: ground truth {e.gt[:60]!r} is not a box "
                                     "{<x1><y1><x2><y2>} (one, in hundredths of the image's width and height)")
            x1, y1, x2, y2 = (float(v) for v in found[0])
            box = Box(*(round(v * s / SCALE, 2) for v, s in ((x1, w), (y1, h), (x2, w), (y2, h))))
            try:
                e.box = on_image(path_of[im.split], f"{where}: {e.gt}", box, w, h)
                kept.append(e)
            except RemoteGLMError as err:
                bad.append(str(err))
        im.entries = kept
    if bad and not skip:
        raise RemoteGLMError(f"{bad[0]} ({len(bad)} {'entry has' if len(bad) == 1 else 'entries have'} such a "
                             "box; --skip_bad_boxes leaves them out)")
    return len(bad)


def _name(e: Entry) -> str | None:
    return object_name_zh(e.category) if e.category else None


def _translate(cfg: ExpressionConfig, entries: list[Entry], s: ImportSummary) -> TranslateResult | None:
    """The expressions through the cached translator (None without an endpoint; a dry run fills
    ``s.estimate``). As ``grounding_translate.translate_expressions``, except that an expression of
    the train file has no category to be held to: it gets the plain translation checks."""
    if cfg.llm is None:
        return None
    cats = {normalise(e.en): (e.category, _name(e)) for e in entries if _name(e)}
    return translate_cached([e.en for e in entries], cfg.llm, cfg.cache, cfg.translate, s, objects=cats,
                            dry_run=cfg.dry_run, progress=cfg.progress)


def _zh(tr: TranslateResult | None, e: Entry) -> str | None:
    if tr is None:
        return None
    name = _name(e)
    if name:
        return translated(tr, e.en, name)
    zh = tr.translations.get(normalise(e.en))
    return expression_zh(zh) if zh else None


def _record(im: VImage, e: Entry, out_dir: Path, tr: TranslateResult | None) -> tuple[dict, bool]:
    """The refer record of ``e``, and whether its expression is Chinese."""
    zh = _zh(tr, e)
    refer = refer_tasks(zh or f"“{e.en}”", e.box)[0]
    d = refer.to_dict(image_path(im.path.parent, im.path.name, out_dir))
    d["expression_en"] = e.en
    if im.split == "test":
        d["category"], d["unique"] = e.category, e.unique
    return d, zh is not None


def import_vrsbench(cfg: VRSBenchConfig) -> ImportSummary:
    """VRSBench's referring files -> ``OUT/vrsbench_refer_{train,test}.json`` (see the module docstring)."""
    t0 = time.time()
    if not cfg.root.is_dir():
        raise RemoteGLMError(f"--root {cfg.root}: no such folder (the one holding {EVAL_FILE}, {TRAIN_FILE}, "
                             "Images_val/, Images_train/)")
    if cfg.only not in (None, *PARTS):
        raise RemoteGLMError(f"--only {cfg.only!r}: choose eval or train")
    parts = [cfg.only] if cfg.only else list(PARTS)
    files = {PARTS[p][0]: _paths(cfg, p)[0] for p in parts}
    read = {p: (_eval_entries if p == "eval" else _train_entries)(files[PARTS[p][0]]) for p in parts}
    images = [im for p in parts for im in _images(cfg, p, read[p], files[PARTS[p][0]])]
    left_out = _boxes(images, files, cfg.skip_bad_boxes)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("data") / NAME
    check_writable(out_dir, "--out_dir")
    s = ImportSummary(NAME, "grounding")
    entries = [e for im in images for e in im.entries]
    if cfg.expressions.dry_run:
        s.items = len(images)
        s.estimate = {"sentences": 0, "calls": 0, "tokens_in": 0, "tokens_out": 0}
        _translate(cfg.expressions, entries, s)
        return s
    reg = Registry(cfg.splits or default_registry(out_dir))
    check = SplitCheck(reg, Source(out_dir, "VRSBench refer", cfg.command or _command(cfg, out_dir)),
                       images, lambda im: im.path, lambda im: True, say)
    tr = _translate(cfg.expressions, [e for im in check.kept for e in im.entries], s)
    records: dict[str, list[dict]] = {}
    counts: dict[str, dict] = {}
    zh = 0
    for im in sorted(check.kept, key=lambda im: SPLITS.index(im.split)):
        if not im.entries:
            continue
        made = [_record(im, e, out_dir, tr) for e in im.entries]
        recs = [d for d, _ in made]
        zh += sum(chinese for _, chinese in made)
        records.setdefault(im.split, []).extend(recs)
        c = counts.setdefault(im.split, {"images": 0, "records": 0})
        c["images"] += 1
        c["records"] += len(recs)
    check_no_leak(records)
    s.items, s.split_counts = len(check.kept), counts
    n = sum(len(r) for r in records.values())
    s.detail = (f"vrsbench: {', '.join(f'{files[PARTS[p][0]].name} ({PARTS[p][0]})' for p in parts)}, "
                f"{len(check.kept)} images, {n} expressions ({zh} in Chinese, English kept in expression_en)"
                + (f"; {left_out} entries left out (--skip_bad_boxes): box empty or outside its image"
                   if left_out else ""))
    if tr is None:
        say("the records keep the English expressions (quoted in the prompt): pass --base_url URL --model NAME "
            "(an OpenAI-compatible endpoint) to translate them")
    outputs = {out_dir / f"{NAME}_refer_{split}.json": recs for split, recs in records.items()}
    write_if_changed(s, out_dir, build_stamp(IMPORT_VERSION, NAME, records, str(out_dir.absolute())), outputs)
    check.register()
    where: dict[str, list[str]] = {}
    for im in check.kept:
        for e in im.entries:
            where.setdefault(normalise(e.en), []).append(im.split)
    found = failures(tr, where)
    failures_file = write_failures(out_dir, found, s.outputs)
    s.seconds = time.time() - t0
    if found:
        print_import_summary(s)
        raise RemoteGLMError(f"{len(tr.failed) or 'some'} distinct expressions still not translated after every "
                             f"round (their records keep the English; each is listed in {failures_file}): "
                             + failure_advice(tr.aborted_kind if tr.aborted else "", tr.aborted,
                                              [f["problem"] for f in found]))
    return s


def _command(cfg: VRSBenchConfig, out_dir: Path) -> str:
    """The command line that reruns this import (for a VRSBenchConfig made in code)."""
    args = ["python", "-m", "remoteglm.data.importers", "vrsbench", "--root", str(cfg.root), "--out_dir", str(out_dir)]
    for flag, value in (("--eval_file", cfg.eval_file), ("--train_file", cfg.train_file),
                        ("--images_val", cfg.images_val), ("--images_train", cfg.images_train),
                        ("--only", cfg.only), ("--splits", cfg.splits)):
        if value is not None:
            args += [flag, str(value)]
    return shlex.join(args + (["--skip_bad_boxes"] if cfg.skip_bad_boxes else []))
