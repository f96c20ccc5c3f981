"""Folder-per-class scene sets (AID, NWPU-RESISC45, UC Merced Land Use, WHU-RS19) -> scene-
classification fine-tune files, no LLM involved.

One folder per class, its name resolved through the glossary
(:func:`~remoteglm.data.glossary.folder_class`); the official split lists where the set has them
(``resisc45-train.txt`` ...), else the seeded per-class split of the caption sets
(:func:`~remoteglm.data.datasets.assign_splits`). Records: ``{"img", "prompt": CLASSIFY_PROMPT with
the set's Chinese classes, "label", "task": "classify", "class"}``, written atomically and not
rewritten when nothing changed; each image keeps the split its content has in the other builders'
outputs (:mod:`~remoteglm.data.splits`).
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import RemoteGLMError
from ..io import check_writable
from .build import check_no_leak, image_path
from .datasets import SPLITS, assign_splits, split_name, split_order
from .glossary import CLASS_NAMES_ZH, CLASSES, SCENE_SETS, class_names_zh, folder_class, folder_key
from .import_summary import IMPORT_VERSION, ImportSummary, write_if_changed
from .instructions import classify_prompt
from .jobs import build_stamp, say
from .splits import Registry, Source, SplitCheck, default_registry

IMAGE_EXTS = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".bmp")
# Path words that name a set (whole tokens of a folder name, lower case).
_SCENE_TOKENS = {"aid": "AID", "nwpu": "NWPU-RESISC45", "resisc45": "NWPU-RESISC45", "nwpuresisc45": "NWPU-RESISC45",
                 "ucm": "UCM", "ucmerced": "UCM", "merced": "UCM", "ucmercedlanduse": "UCM", "whurs19": "WHU-RS19",
                 "rs19": "WHU-RS19"}
_SPLIT_LIST = re.compile(r"^(?P<prefix>.*?)[-_.]?(?P<split>train|val|valid|validation|test)\.txt$", re.IGNORECASE)


def canonical_scene_name(name: str) -> str:
    key = folder_key(name)
    for s in SCENE_SETS:
        if key == folder_key(s):
            return s
    if key in _SCENE_TOKENS:
        return _SCENE_TOKENS[key]
    raise RemoteGLMError(f"unknown scene set '{name}'; choose one of {', '.join(SCENE_SETS)}")


@dataclass
class SceneImage:
    filename: str  # relative to the set's root, with "/" ("Airport/airport_1.jpg")
    cls: str
    split: str = ""


@dataclass
class SceneSet:
    name: str
    root: Path
    images: list[SceneImage]
    folders: dict[str, str]  # class id -> folder name
    split_source: str  # "official: <files>" or "seeded"
    warnings: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return list(CLASSES[self.name])

    @property
    def classes_zh(self) -> list[str]:
        return class_names_zh(self.name)


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and not p.name.startswith("__")


def _is_image(p: Path) -> bool:
    return p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_EXTS


def _subdirs(p: Path) -> list[Path]:
    return sorted(d for d in p.iterdir() if d.is_dir() and _visible(d))


def _any_class(folder: str) -> bool:
    return any(folder_class(s, folder) for s in SCENE_SETS)


def _name_from_tokens(paths: list[Path]) -> str | None:
    for p in paths:
        for part in reversed(p.resolve().parts):
            tokens = [t for t in re.split(r"[^0-9a-z]+", part.lower()) if t]
            for t in [folder_key(part), *tokens]:
                if t in _SCENE_TOKENS:
                    return _SCENE_TOKENS[t]
    return None


def _fits(name: str, folders: list[str]) -> bool:
    return all(folder_class(name, f) for f in folders)


def _unknown_folders_error(root: Path, name: str, unknown: list[str], folders: list[str]) -> RemoteGLMError:
    hints = []
    for f in unknown[:5]:
        close = difflib.get_close_matches(folder_key(f), CLASSES[name], n=1, cutoff=0.6)
        hints.append(f"{f!r} (did you mean {close[0]}?)" if close else repr(f))
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    other = [s for s in SCENE_SETS if s != name and _fits(s, folders)]
    fit = f", or pass --name {other[0]} (these folders are its classes)" if other else ""
    classes = ", ".join(CLASSES[name])
    return RemoteGLMError(f"{root}: {len(unknown)} folder(s) are not {name} classes: {', '.join(hints)}{more}; "
                          f"{name} has {len(CLASSES[name])} classes ({classes}): rename or remove those folders{fit}")


def _pick_name(root: Path, start: Path, folders: list[str], name: str | None) -> str:
    if name:
        return canonical_scene_name(name)
    fitting = [s for s in SCENE_SETS if _fits(s, folders)]
    by_path = _name_from_tokens([root, start])
    if by_path and (by_path in fitting or not fitting):
        return by_path
    if len(fitting) == 1:
        return fitting[0]
    exact = [s for s in fitting if len(CLASSES[s]) == len(folders)]
    if len(exact) == 1:
        return exact[0]
    if fitting:
        raise RemoteGLMError(f"{root}: cannot tell which scene set this is (its folders fit {', '.join(fitting)}): "
                             "pass --name")
    best = max(SCENE_SETS, key=lambda s: sum(1 for f in folders if folder_class(s, f)))
    return best


def _list_entry(line: str) -> str:
    """A split list's line as a lower-case path with "/": its first field ("airplane_001.jpg 0" too)."""
    return line.split()[0].replace("\\", "/").lower()


def _split_lists(dirs: list[Path], images: list[SceneImage]) -> tuple[dict[str, list[str]], list[Path]] | None:
    """The official split lists among ``dirs`` that name these images (the best-matching group)."""
    by_base: dict[str, list[SceneImage]] = {}
    for im in images:
        by_base.setdefault(Path(im.filename).name.lower(), []).append(im)
    groups: dict[tuple[Path, str], dict[str, Path]] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            m = _SPLIT_LIST.match(p.name)
            if m and p.is_file():
                groups.setdefault((d, m["prefix"].lower()), {})[split_name(m["split"])] = p
    best = None
    for files in groups.values():
        if "train" not in files or not ({"val", "test"} & set(files)):
            continue
        lines = {split: [ln.strip() for ln in p.read_text(encoding="utf-8", errors="replace").splitlines()
                         if ln.strip() and not ln.lstrip().startswith("#")] for split, p in files.items()}
        total = sum(len(v) for v in lines.values())
        hits = sum(1 for v in lines.values() for ln in v if Path(_list_entry(ln)).name in by_base)
        if total and hits * 2 >= total and (best is None or hits > best[0]):
            best = (hits, lines, list(files.values()))
    return (best[1], best[2]) if best else None


def _apply_split_lists(ss: SceneSet, lines: dict[str, list[str]], files: list[Path]) -> None:
    by_rel = {im.filename.lower(): im for im in ss.images}
    by_base: dict[str, list[SceneImage]] = {}
    for im in ss.images:
        by_base.setdefault(Path(im.filename).name.lower(), []).append(im)
    unknown = 0
    for split in sorted(lines, key=split_order):
        for ln in lines[split]:
            rel = _list_entry(ln)
            if rel in by_rel:  # "airplane/airplane_001.jpg"
                hits = [by_rel[rel]]
            else:  # "airplane_001.jpg": the one image of that name (or those whose path ends so)
                same = by_base.get(Path(rel).name, [])
                hits = same if len(same) == 1 else [im for im in same if im.filename.lower().endswith("/" + rel)]
            if not hits:
                unknown += 1
                continue
            for im in hits:
                if im.split and im.split != split:
                    raise RemoteGLMError(f"{im.filename} is in both the {im.split} and the {split} split list "
                                         f"({', '.join(p.name for p in files)}): the lists would leak; fix them")
                im.split = split
    unlisted = [im for im in ss.images if not im.split]
    if unlisted:
        ss.warnings.append(f"{len(unlisted)} image(s) are in no official split list (first: {unlisted[0].filename}): "
                           "left out")
        ss.images = [im for im in ss.images if im.split]
    if unknown:
        ss.warnings.append(f"{unknown} line(s) of the split lists name no image here (missing files?)")
    ss.split_source = "official: " + ", ".join(p.name for p in files)


def load_scene_folders(root: str | Path, name: str | None = None, split_files: str | Path | None = None,
                       seeded: bool = False, val: float = 0.1, test: float = 0.1,
                       content: Callable[[Path], str | None] | None = None) -> SceneSet:
    """Read a folder-per-class scene set; one-line RemoteGLMError on a bad layout. ``content``
    (image path -> content hash) orders the seeded split (else the file paths do)."""
    start = Path(root)
    if not start.exists():
        raise RemoteGLMError(f"scene folder not found: {start}; pass --root DIR (the folder holding one folder per class)")
    if not start.is_dir():
        raise RemoteGLMError(f"{start} is a file; pass --root the folder that holds one folder per class")
    base = start  # wrappers such as UCMerced_LandUse/Images/ or NWPU-RESISC45/NWPU-RESISC45/
    while True:
        subs = _subdirs(base)
        if len(subs) == 1 and not any(_is_image(p) for p in base.iterdir()) and not _any_class(subs[0].name):
            base = subs[0]
            continue
        break
    subs = _subdirs(base)
    if not subs:
        n = sum(1 for p in base.iterdir() if _is_image(p))
        raise RemoteGLMError(f"{base}: no class folders (found {n} image file(s) directly in it); a scene set needs one "
                             "folder per class, e.g. AID/Airport/airport_1.jpg")
    folders = [d.name for d in subs]
    set_name = _pick_name(base, start, folders, name)
    unknown = [f for f in folders if folder_class(set_name, f) is None]
    if unknown:
        raise _unknown_folders_error(base, set_name, unknown, folders)
    by_class: dict[str, str] = {}
    for f in folders:
        c = folder_class(set_name, f)
        if c in by_class:
            raise RemoteGLMError(f"{base}: folders {by_class[c]!r} and {f!r} are both the {set_name} class {c}; "
                                 "merge them into one folder")
        by_class[c] = f
    images, empty = [], []
    for d in subs:
        files = sorted(p.name for p in d.iterdir() if _is_image(p))
        if not files:
            empty.append(d.name)
        images.extend(SceneImage(f"{d.name}/{fn}", folder_class(set_name, d.name)) for fn in files)
    if empty:
        raise RemoteGLMError(f"{base}: {len(empty)} class folder(s) have no images ({', '.join(repr(e) for e in empty[:5])}; "
                             f"images are {', '.join(IMAGE_EXTS)}): put the images back or remove the folder(s)")
    ss = SceneSet(set_name, base, images, {c: by_class[c] for c in CLASSES[set_name] if c in by_class}, "seeded")
    absent = [c for c in CLASSES[set_name] if c not in by_class]
    if absent:
        ss.warnings.append(f"{len(absent)} of {len(CLASSES[set_name])} {set_name} classes have no folder here "
                           f"({', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}): the classification prompt "
                           f"still lists all {len(CLASSES[set_name])}")
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise RemoteGLMError(f"--val and --test are fractions with val + test < 1 (got {val} and {test})")
    found = None
    if not seeded:
        dirs = [Path(split_files)] if split_files else list(dict.fromkeys([base, start, base.parent, start.parent]))
        found = _split_lists(dirs, images)
        if found is None and split_files:
            raise RemoteGLMError(f"{split_files}: no split lists (<name>-train.txt with -val.txt or -test.txt) that name "
                                 f"the images of {base}")
    if found:
        _apply_split_lists(ss, *found)
    else:
        assign_splits(ss.images, val=val, test=test, content=content and (lambda fn: content(base / fn)))
        key = "SHA-256 of the image" if content else "SHA-1 of the file path"
        ss.split_source = (f"seeded: {round((1 - val - test) * 100)}/{round(val * 100)}/{round(test * 100)} per class "
                           f"({key}), as the caption sets without a split")
    empty_splits = [sp for sp in SPLITS if not any(im.split == sp for im in ss.images)]
    if empty_splits:
        ss.warnings.append(f"no image in {' or '.join(empty_splits)}: the classes are too small for the split fractions")
    return ss


@dataclass
class ScenesConfig:
    root: Path
    name: str | None = None
    out_dir: Path | None = None  # default data/<name>_classify
    split_files: Path | None = None
    seeded: bool = False
    val: float = 0.1
    test: float = 0.1
    splits: Path | None = None  # the split registry (splits.py); default: splits.json beside out_dir
    command: str = ""  # the command line that runs this import


def scene_records(ss: SceneSet, out_dir: Path) -> dict[str, list[dict]]:
    """One scene-classification record per image, with the ONE classification prompt."""
    prompt = classify_prompt(ss.classes_zh)
    names = CLASS_NAMES_ZH[ss.name]
    order = {c: i for i, c in enumerate(ss.classes)}
    out: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for im in sorted(ss.images, key=lambda im: (order[im.cls], im.filename)):
        out.setdefault(im.split, []).append({"img": image_path(ss.root, im.filename, out_dir), "prompt": prompt,
                                             "label": names[im.cls], "task": "classify", "class": im.cls})
    check_no_leak(out)
    return out


def import_scenes(cfg: ScenesConfig) -> ImportSummary:
    """A folder-per-class scene set -> classification fine-tune files (no LLM involved)."""
    t0 = time.time()
    reg = Registry(cfg.splits or default_registry(cfg.out_dir))
    ss = load_scene_folders(cfg.root, cfg.name, cfg.split_files, cfg.seeded, cfg.val, cfg.test, content=reg.digest)
    for w in ss.warnings:
        say(f"warning: {w}")
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("data") / f"{ss.name}_classify"
    check_writable(out_dir, "--out_dir")
    # one split per image content across every builder: a seeded split takes the registered one
    official = ss.split_source.startswith("official")
    splits = SplitCheck(reg, Source(out_dir, f"{ss.name} scenes", cfg.command or _scenes_command(cfg, out_dir)),
                        ss.images, lambda im: ss.root / im.filename, lambda im: official, say)
    ss.images = splits.kept
    records = scene_records(ss, out_dir)
    s = ImportSummary(ss.name, "classify", items=len(ss.images),
                      detail=f"scenes: {ss.name}, {len(ss.folders)} of {len(ss.classes)} classes, {len(ss.images)} images; "
                             f"split {ss.split_source}")
    counts = {split: Counter(r["class"] for r in recs) for split, recs in records.items()}
    s.split_counts = {split: {"images": len(recs), "records": len(recs)} for split, recs in records.items()}
    files: dict[Path, object] = {out_dir / f"{ss.name}_classify_{split}.json": recs for split, recs in records.items()}
    files[out_dir / f"{ss.name}_classes.json"] = {
        "dataset": ss.name, "classes": ss.classes, "classes_zh": ss.classes_zh, "folders": ss.folders,
        "split_source": ss.split_source, "image_root": os.path.relpath(ss.root.absolute(), out_dir.absolute()),
        "counts": {split: {c: counts[split].get(c, 0) for c in ss.classes} for split in records}}
    stamp = build_stamp(IMPORT_VERSION, files[out_dir / f"{ss.name}_classes.json"],
                   [(im.filename, im.cls, im.split) for im in ss.images], str(out_dir.absolute()))
    write_if_changed(s, out_dir, stamp, files)
    splits.register()
    s.seconds = time.time() - t0
    return s


def _scenes_command(cfg: ScenesConfig, out_dir: Path) -> str:
    """The command line that reruns this import (for a ScenesConfig made in code)."""
    args = ["python", "-m", "remoteglm.data.importers", "scenes", "--root", str(cfg.root), "--out_dir", str(out_dir)]
    for flag, value in (("--name", cfg.name), ("--split_files", cfg.split_files), ("--splits", cfg.splits)):
        if value:
            args += [flag, str(value)]
    if cfg.seeded:
        args.append("--seeded_split")
    for flag, value in (("--val", cfg.val), ("--test", cfg.test)):
        if value != 0.1:
            args += [flag, str(value)]
    return shlex.join(args)
