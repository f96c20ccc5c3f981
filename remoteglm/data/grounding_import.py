"""Detection and referring sets with boxes -> Chinese grounding fine-tune files
(``python -m remoteglm.data.importers detection``).

Formats: ``voc`` (DIOR, DIOR-RSVG: one XML per image, :mod:`~remoteglm.data.voc`), ``dota`` (one
labelTxt per image, the size read from the image's header, :mod:`~remoteglm.data.dota`) and
``coco`` (one COCO-style JSON per split, :mod:`~remoteglm.data.coco`). The official splits are kept:
VOC and DOTA ids come from ``train.txt`` / ``val.txt`` / ``test.txt`` (one id, the file stem, a
line), COCO's split is the file's (``..._train.json``, ``instances_val2017.json``). DIOR-RSVG's own
lists hold object indices instead (every line an integer, none an annotation file's stem): that
mode (:mod:`~remoteglm.data.rsvg_splits`) gives each image the strictest split of its objects and
makes only refer/identify records of the objects of that split, from their own descriptions.

Every image gives the rule-built tasks of :func:`~remoteglm.data.referring.grounding_tasks`
(refer, identify, detect, count, grounded) as records ``{img, prompt, label, kind, prompt_boxes,
label_boxes}``; DIOR-RSVG's English ``description`` of an object is kept in ``expression_en``, and
with an endpoint its checked translation (:mod:`~remoteglm.data.grounding_translate`) is the object's
refer/identify expression (the rule-built one where it is still missing).
With ``tile``, an image larger than a tile is cut (:mod:`~remoteglm.data.tiles`) and each tile with
a task is written as an image file under ``OUT/tiles/`` (a record's boxes are on its tile; the
record's ``source`` names the original and the window), so training needs nothing new.
The original images are registered in the split registry (:mod:`~remoteglm.data.splits`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from PIL import Image

from ..errors import RemoteGLMError
from ..io import check_writable, read_json, write_bytes_atomic
from .annotations import MAX_SIDE, AnnotatedImage, read_bounded
from .build import check_no_leak
from .coco import read_coco
from .datasets import SPLITS, split_name
from .dota import read_dota
from .glossary import object_name_zh
from .import_summary import IMPORT_VERSION, ImportSummary, records_text, write_if_changed
from .jobs import STAMP, build_stamp, say
from .grounding_records import RuleBuilt, described_records, unit_records
from .grounding_translate import ExpressionConfig, failures, raise_unfinished, translate_expressions
from .jobs import write_failures
from .rerun import RerunStamp, input_key
from .rsvg_splits import MODE, ObjectSplits, is_object_index, object_splits
from .translate import normalise
from .splits import Registry, Source, SplitCheck, default_registry
from .tiles import tile
from .voc import read_voc

FORMATS = ("voc", "dota", "coco")
DOTA_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")  # DOTA's images are PNG; others are tried after
_TILE = re.compile(r"__\d+_\d+\.[^.]+$")  # tiles.tile_name's "P0001__1024_512.png"
_COCO_SPLIT = re.compile(r"(?:^|[-_.])(?P<split>train|val|valid|validation|test)(?:\d{4})?\.json$", re.IGNORECASE)


@dataclass
class DetectionConfig:
    format: str  # one of FORMATS
    annotations: Path  # folder of per-image files (voc, dota) or of per-split JSON files (coco)
    images: Path
    name: str
    split_files: Path | None = None  # voc/dota: folder with train.txt ...; default: the one holding annotations
    out_dir: Path | None = None  # default data/<name>_grounding
    tile: int | None = None
    overlap: int = 200
    names: Path | None = None  # JSON {category: Chinese name} for categories the glossary lacks
    splits: Path | None = None  # the split registry; default: splits.json beside out_dir
    command: str = ""
    expressions: ExpressionConfig = field(default_factory=ExpressionConfig)  # translating expression_en


@dataclass
class SetImage:
    annotated: AnnotatedImage
    path: Path  # the image file
    split: str


def _open(path: Path) -> Image.Image:
    """The image (lazily: the header only until its pixels are used); DOTA's largest are past PIL's
    decompression-bomb limit, so it is raised to the largest size an annotation may give."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE
    try:
        return Image.open(path)
    except (OSError, SyntaxError, ValueError) as e:
        raise RemoteGLMError(f"{path}: not a readable image ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old


@functools.lru_cache(maxsize=64)
def _real(folder: Path) -> str:
    return os.path.realpath(folder)  # once per folder: a realpath per image took DIOR-RSVG 0.4 s


def header_size(path: Path) -> tuple[int, int]:
    with _open(path) as im:
        return im.size


def _folder(path: Path, option: str, what: str) -> Path:
    if not path.is_dir():
        raise RemoteGLMError(f"{option} {path}: no such folder ({what})")
    return path


def split_ids(folder: Path) -> dict[str, list[str]]:
    """Split -> ids of the official lists ``train.txt``, ``val.txt``, ``test.txt`` in ``folder``
    (blank lines and ``#`` comments skipped); an id in two lists is one line."""
    _folder(folder, "--split_files", "the one holding train.txt, val.txt, test.txt")
    out: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for split in SPLITS:
        f = folder / f"{split}.txt"
        if not f.is_file():
            continue
        ids: dict[str, None] = {}  # an ordered set (a list's "in" made 12,000 train ids take 0.8 s)
        for line in read_bounded(f, "split list").splitlines():
            i = line.split("#")[0].strip()
            if not i or i in ids:
                continue
            if i in seen:
                raise RemoteGLMError(f"{f}: id {i!r} is also in {seen[i]}.txt: the splits would leak; fix the lists")
            seen[i] = split
            ids[i] = None
        out[split] = list(ids)
    if not out:
        raise RemoteGLMError(f"{folder}: no split list (train.txt, val.txt, test.txt, one image id a line); "
                             "pass --split_files the folder that holds them")
    return out


def _image(cfg: DetectionConfig, name: str, annotation: Path, size: tuple[int, int] | None = None) -> Path:
    """The image ``name`` of ``annotation``: it exists and has the annotated size, else one line."""
    p = cfg.images / name
    if not p.is_file():
        raise RemoteGLMError(f"{annotation}: its image {p} not found; pass --images the folder that holds it")
    if size is not None and header_size(p) != size:
        w, h = header_size(p)
        raise RemoteGLMError(f"{annotation}: annotated for a {size[0]} x {size[1]} image, but {p} is {w} x {h}; "
                             "is it the annotation of another image?")
    return p


def _per_image(cfg: DetectionConfig) -> tuple[list[SetImage], ObjectSplits | None]:
    ann = _folder(cfg.annotations, "--annotations", "one annotation file per image")
    lists = split_ids(cfg.split_files or ann.parent)
    if cfg.format == "voc" and is_object_index(lists, ann):
        if cfg.tile is not None:
            raise RemoteGLMError(f"--tile: the split lists are DIOR-RSVG's object indices ({MODE}), whose images "
                                 "are 800 x 800; leave --tile out")
        objs = object_splits(cfg.split_files or ann.parent, lists, ann, read_voc)
        return [SetImage(a, _image(cfg, a.image, f, (a.width, a.height)), split) for f, a, split in objs.images], objs
    out = []
    for split, ids in lists.items():
        for i in ids:
            f = ann / (f"{i}.xml" if cfg.format == "voc" else f"{i}.txt")
            if not f.is_file():
                raise RemoteGLMError(f"{split}.txt: id {i!r} has no annotation file {f}")
            if cfg.format == "voc":
                a = read_voc(f)
                out.append(SetImage(a, _image(cfg, a.image, f, (a.width, a.height)), split))
                continue
            found = [cfg.images / f"{i}{ext}" for ext in DOTA_EXTS if (cfg.images / f"{i}{ext}").is_file()]
            if not found:
                raise RemoteGLMError(f"{split}.txt: id {i!r} has no image {cfg.images / (i + '.png')}; pass --images "
                                     "the folder that holds it")
            out.append(SetImage(read_dota(f, header_size(found[0]), found[0].name), found[0], split))
    return out, None


def _coco(cfg: DetectionConfig) -> list[SetImage]:
    if cfg.split_files:
        raise RemoteGLMError("--split_files is for voc and dota; a COCO-style set has one JSON file per split")
    ann = _folder(cfg.annotations, "--annotations", "one COCO-style JSON file per split, e.g. DIOR_train.json")
    files: dict[str, Path] = {}
    for p in sorted(ann.iterdir()):
        m = _COCO_SPLIT.search(p.name)
        if m and p.is_file():
            split = split_name(m["split"])
            if split in files:
                raise RemoteGLMError(f"{ann}: {files[split].name} and {p.name} are both the {split} split; keep one")
            files[split] = p
    if not files:
        raise RemoteGLMError(f"{ann}: no COCO-style split file (*train.json, *val.json, *test.json)")
    return [SetImage(a, _image(cfg, a.image, f, (a.width, a.height)), split)
            for split, f in sorted(files.items(), key=lambda kv: SPLITS.index(kv[0]))
            for a in read_coco(f)]


def category_names(names_file: Path | None, categories: Iterable[str]):
    """Category -> Chinese name: the ``--names`` JSON file first, then the glossary; one of
    ``categories`` with neither is one line (its objects could never be named, counted or listed)."""
    extra: dict = {}
    if names_file:
        extra = read_json(names_file, "--names file", require_object=True)
        bad = [k for k, v in extra.items() if not (isinstance(v, str) and v.strip())]
        if bad:
            raise RemoteGLMError(f"{names_file}: the name of {bad[0]!r} is not a Chinese name (a non-empty string)")

    @functools.lru_cache(maxsize=None)  # asked for every object, again and again
    def names(cat: str) -> str | None:
        return extra.get(cat) or object_name_zh(cat)

    missing = sorted({c for c in categories if not names(c)})
    if missing:
        raise RemoteGLMError(f"{len(missing)} categor{'y has' if len(missing) == 1 else 'ies have'} no Chinese name "
                             f"({', '.join(missing[:8])}): give them in a --names JSON file, e.g. "
                             f"{{\"{missing[0]}\": \"...\"}}")
    return names


def _write_tiles(tiles: Path, pieces: dict[Path, tuple[Path, tuple]], up_to_date: bool) -> None:
    """Crop each tile from its image (each image opened once) and write it atomically; the tiles
    of an earlier run that this one has not (other --tile settings) are removed."""
    if up_to_date and all(p.exists() for p in pieces):
        return
    if tiles.is_dir():
        for p in tiles.iterdir():
            if p not in pieces and _TILE.search(p.name) and p.is_file():
                p.unlink()
    by_source: dict[Path, list] = {}
    for p, (src, window) in pieces.items():
        by_source.setdefault(src, []).append((p, window))
    for src, wanted in by_source.items():
        with _open(src) as im:
            fmt = im.format
            for p, window in wanted:
                buf = io.BytesIO()
                im.crop(window).save(buf, format=fmt)
                write_bytes_atomic(p, buf.getvalue())


def import_detection(cfg: DetectionConfig) -> ImportSummary:
    """A detection or referring set -> grounding fine-tune files (see the module docstring)."""
    t0 = time.time()
    if cfg.format not in FORMATS:
        raise RemoteGLMError(f"--format {cfg.format!r}: choose one of {', '.join(FORMATS)}")
    if cfg.tile is None and cfg.overlap != 200:
        raise RemoteGLMError("--overlap is the overlap of --tile windows; give --tile SIZE too")
    if cfg.tile is not None:
        tile(AnnotatedImage("", 1, 1), cfg.tile, cfg.overlap)  # the window checks, before any reading
    _folder(cfg.images, "--images", "the image files")
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("data") / f"{cfg.name}_grounding"
    rerun = None if cfg.expressions.dry_run else _rerun_stamp(cfg, out_dir)
    if rerun and rerun.fresh():  # nothing read, nothing written
        s = ImportSummary(cfg.name, "grounding", up_to_date=True)
        s.seconds = time.time() - t0
        s.quick = (f"up to date: {out_dir} (annotations, images, split lists, options and outputs unchanged since "
                   f"its last build; nothing read; {s.seconds:.1f} s)")
        return s
    images, objs = (_coco(cfg), None) if cfg.format == "coco" else _per_image(cfg)
    where: dict[str, str] = {}
    for im in images:
        key = os.path.realpath(im.path) if im.path.is_symlink() else os.path.join(_real(im.path.parent), im.path.name)
        if where.setdefault(key, im.split) != im.split:
            raise RemoteGLMError(f"{im.path} is in both the {where[key]} and the {im.split} split: they would leak")
    names = category_names(cfg.names, (o.category for im in images for o in im.annotated.objects))
    check_writable(out_dir, "--out_dir")
    s = ImportSummary(cfg.name, "grounding")
    if objs:
        s.kept_on_failure = "the English, quoted"  # nothing is built by rule in the object-index mode
    if cfg.expressions.dry_run:
        s.items = len(images)
        s.estimate = {"sentences": 0, "calls": 0, "tokens_in": 0, "tokens_out": 0}
        translate_expressions(cfg.expressions, _described(images, names), s)
        return s
    reg = Registry(cfg.splits or default_registry(out_dir))
    check = SplitCheck(reg, Source(out_dir, f"{cfg.name} grounding", cfg.command or _command(cfg, out_dir)),
                       images, lambda im: im.path, lambda im: True, say)
    records: dict[str, list[dict]] = {}
    counts: dict[str, dict] = {}
    pieces: dict[Path, tuple[Path, tuple]] = {}
    described = kept = idle = 0
    kept_ids = {id(im) for im in check.kept}
    ordered = sorted(images, key=lambda im: SPLITS.index(im.split))
    rule = None if objs else RuleBuilt([im for im in ordered if id(im) in kept_ids], cfg.tile, cfg.overlap, names)
    tr = translate_expressions(cfg.expressions, _described(check.kept, names), s)
    for im in ordered:
        records.setdefault(im.split, [])
        counts.setdefault(im.split, {"images": 0, "records": 0})
        described += sum(1 for o in im.annotated.objects if o.text) if id(im) in kept_ids else 0
    units = rule.result() if rule else [((im, im.annotated, None), None) for im in ordered if id(im) in kept_ids]
    for (im, a, window), tasks in units:
        if rule:
            recs, n = unit_records((im, a, window), tasks, names, out_dir, tr)
        else:  # DIOR-RSVG's object-index splits: each object's own description, nothing built by rule
            recs, n = described_records(im, names, out_dir, tr), len(a.objects)
        kept += n
        if not recs:
            idle += 1
            continue
        if window:
            pieces[out_dir / "tiles" / a.image] = (im.path, window)
        records[im.split].extend(recs)
        counts[im.split]["images"] += 1
        counts[im.split]["records"] += len(recs)
    check_no_leak(records)
    s.items, s.split_counts = len(check.kept), counts
    s.detail = (f"detection: {cfg.name} ({cfg.format}), {len(check.kept)} images"
                + (f", {len(pieces)} tiles of {cfg.tile} px written to {out_dir / 'tiles'}" if cfg.tile else "")
                + (f", {idle} image(s)/tile(s) gave no task (difficult or too many objects)" if idle else "")
                + (f"; {kept} of {described} English descriptions kept in expression_en"
                   + (" (translated: --base_url)" if tr else " (not translated: the English quoted; pass --base_url URL "
                      "--model NAME to translate)" if objs else " (not translated: no --base_url)")
                   if described else "")
                + (f"\n{objs.summary()}" if objs else ""))
    files = {out_dir / f"{cfg.name}_{split}.json": records_text(recs) for split, recs in records.items()}
    sources = sorted({(str(src), src.stat().st_size, src.stat().st_mtime_ns) for src, _ in pieces.values()})
    stamp = build_stamp(IMPORT_VERSION, "detection", {p.name: hashlib.sha256(text.encode()).hexdigest()
                                                      for p, text in files.items()}, sources, str(out_dir.absolute()))
    stamp_file = out_dir / STAMP
    same = stamp_file.is_file() and stamp_file.read_text(encoding="utf-8").strip() == stamp
    if rerun.outputs_edited():  # by hand, since the last build: all written again
        same = False
        stamp_file.unlink(missing_ok=True)
    rerun.clear()  # until this build has finished
    _write_tiles(out_dir / "tiles", pieces, same)
    write_if_changed(s, out_dir, stamp, files)
    check.register()
    where: dict[str, list[str]] = {}
    for im in check.kept:
        for o in im.annotated.objects:
            if o.text:
                where.setdefault(normalise(o.text), []).append(im.split)
    found = failures(tr, where)
    failures_file = write_failures(out_dir, found, s.outputs)
    s.seconds = time.time() - t0
    raise_unfinished(s, tr, found, failures_file)
    rerun.record(files, pieces, [reg.path, failures_file])
    return s


def _rerun_stamp(cfg: DetectionConfig, out_dir: Path) -> RerunStamp:
    """What this import reads, listed (not read): the annotation and image folders, the split lists,
    the --names file, and the options its outputs depend on (:mod:`~remoteglm.data.rerun`)."""
    llm, cache = cfg.expressions.llm, Path(cfg.expressions.cache).absolute()
    registry = Path(cfg.splits or default_registry(out_dir)).absolute()
    options = {"format": cfg.format, "name": cfg.name, "tile": cfg.tile, "overlap": cfg.overlap,
               "out_dir": str(out_dir.absolute()), "splits": str(registry),
               "translate": llm and [llm.base_url, llm.model, llm.temperature, str(cache)]}
    lists = [] if cfg.format == "coco" else [(cfg.split_files or cfg.annotations.parent) / f"{split}.txt"
                                             for split in SPLITS]
    skip = [out_dir, registry, *(Path(f"{cache}{end}") for end in ("", "-wal", "-shm", "-journal"))]
    return RerunStamp(out_dir, input_key(IMPORT_VERSION, options, [cfg.annotations, cfg.images],
                                         lists + ([cfg.names] if cfg.names else []), skip, __name__))


def _described(images: list[SetImage], names) -> list[tuple[str, str, str]]:
    """(English description, category, Chinese name) of each described object of ``images``."""
    return [(o.text, o.category, names(o.category)) for im in images for o in im.annotated.objects if o.text]


def _command(cfg: DetectionConfig, out_dir: Path) -> str:
    """The command line that reruns this import (for a DetectionConfig made in code)."""
    args = ["python", "-m", "remoteglm.data.importers", "detection", "--format", cfg.format, "--name", cfg.name,
            "--annotations", str(cfg.annotations), "--images", str(cfg.images), "--out_dir", str(out_dir)]
    for flag, value in (("--split_files", cfg.split_files), ("--tile", cfg.tile), ("--names", cfg.names),
                        ("--splits", cfg.splits)):
        if value is not None:
            args += [flag, str(value)]
    if cfg.tile is not None:
        args += ["--overlap", str(cfg.overlap)]
    return shlex.join(args)
