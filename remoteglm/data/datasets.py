"""Load English caption sets (Karpathy ``dataset.json`` or the RemoteGLM list) into one shape.

Karpathy: ``{"images": [{"filename", "imgid", "split", "sentences": [{"raw", "tokens"}]}]}``.
RemoteGLM: ``[{"imged_id": "1.tif", "caption": "s1 .  s2 .  ..."}]`` - no split, so one is
assigned (see :func:`assign_splits`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import RemoteGLMError
from .glossary import CLASSES, CLASS_NAMES_ZH
from ..io import read_json

SPLITS = ("train", "val", "test")


def split_name(split: str) -> str:
    """A split as an official file names it ("valid", "validation", "test-phili") -> ours ("val", "test_phili")."""
    s = split.lower().replace("-", "_")
    return "val" if s in ("valid", "validation") else s


def split_order(split: str) -> tuple:
    """Sort key: train, val, test, then any other split (RSVQA-HR's test_phili) by name."""
    return (SPLITS.index(split), "") if split in SPLITS else (len(SPLITS), split)

# Sydney_captions classes are contiguous blocks of image numbers (inclusive upper bounds).
_SYDNEY_BLOCKS = [(242, "residential"), (264, "airport"), (314, "meadow"), (359, "river"),
                  (451, "ocean"), (547, "industrial"), (613, "runway")]
_NAMES = {"ucm": "UCM", "uc_merced": "UCM", "ucmerced": "UCM", "sydney": "Sydney", "rsicd": "RSICD"}


@dataclass
class CaptionImage:
    filename: str
    imgid: int
    split: str
    sentences: list[str]
    cls: str | None = None
    derived: bool = False  # split assigned here (assign_splits), not the dataset's own


@dataclass
class CaptionSet:
    name: str
    path: Path
    fmt: str  # "karpathy" or "remoteglm"
    images: list[CaptionImage]
    warnings: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return list(CLASSES.get(self.name, []))

    @property
    def classes_zh(self) -> list[str]:
        return [CLASS_NAMES_ZH[self.name][c] for c in self.classes]

    def sentences(self) -> list[str]:
        return [s for im in self.images for s in im.sentences]


def canonical_name(name: str) -> str:
    """'ucm' / 'UCM_captions' -> 'UCM'; unknown names are kept as given."""
    low = name.lower()
    for key, canon in _NAMES.items():
        if low == key or low.startswith(key + "_") or low.startswith(key + "-"):
            return canon
    return name


def infer_name(path: Path, obj: object) -> str:
    """Dataset name from the Karpathy ``dataset`` field, else from the path (UCM/Sydney/RSICD)."""
    if isinstance(obj, dict) and isinstance(obj.get("dataset"), str):
        name = canonical_name(obj["dataset"])
        if name in CLASSES:
            return name
    for part in reversed(path.resolve().parts):
        low = part.lower()
        for key, canon in _NAMES.items():
            if key in low:
                return canon
    return path.stem


def split_caption(caption: str) -> list[str]:
    """RemoteGLM caption ("s1 .  s2 .  ") -> sentences; falls back to ordinary full stops."""
    parts = [p.strip() for p in re.split(r"\s+\.(?=\s|$)", caption)]
    parts = [p for p in parts if p]
    if len(parts) <= 1 and re.search(r"[.!?]\s", caption):
        parts = [p.strip().rstrip(".").strip() for p in re.split(r"(?<=[.!?])\s+", caption)]
        parts = [p for p in parts if p]
    return parts


def scene_class(name: str, filename: str) -> str | None:
    """Scene class of an image from its file name (None when the name does not say)."""
    stem = Path(filename).stem
    if name == "UCM" and stem.isdigit() and 1 <= int(stem) <= 2100:
        return CLASSES["UCM"][(int(stem) - 1) // 100]
    if name == "Sydney" and stem.isdigit():
        n = int(stem)
        for last, cls in _SYDNEY_BLOCKS:
            if 1 <= n <= last:
                return cls
        return None
    if name == "RSICD":
        m = re.match(r"([a-z]+)_?\d+$", stem.lower())
        if m and m.group(1) in CLASSES["RSICD"]:
            return m.group(1)
    return None


def _split_key(filename: str) -> str:
    return hashlib.sha1(filename.encode("utf-8")).hexdigest()


def assign_splits(images: list[CaptionImage], val: float = 0.1, test: float = 0.1,
                  content: Callable[[str], str | None] | None = None) -> None:
    """Give every image a split: 80/10/10 like the Karpathy files, per scene class.

    Within each class the images are ordered by ``content(filename)`` (the builders pass the
    SHA-256 of the image's bytes, so a copy under another name sorts alike), else - no image
    file - by SHA-1 of the file name; the first 10% go to test, the next 10% to val, the rest to
    train. Same files -> same split on every machine.
    """
    groups: dict[str | None, list[CaptionImage]] = {}
    for im in images:
        groups.setdefault(im.cls, []).append(im)
    for group in groups.values():
        group.sort(key=lambda im: (content and content(im.filename)) or _split_key(im.filename))
        n_test, n_val = round(len(group) * test), round(len(group) * val)
        for i, im in enumerate(group):
            im.split = "test" if i < n_test else "val" if i < n_test + n_val else "train"


def has_text(sentence: str) -> bool:
    """Whether a caption has anything to translate: a word of two or more letters. RSICD holds
    captions like "1" and "." that no translation can turn into Chinese; they are dropped by rule."""
    return bool(re.search(r"[^\W\d_]{2,}", sentence))


def _sentence_text(path: Path, where: str, s: object) -> str:
    if isinstance(s, dict):
        raw = s.get("raw")
        if raw is None and isinstance(s.get("tokens"), list):
            raw = " ".join(map(str, s["tokens"]))
    else:
        raw = s
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise RemoteGLMError(f"{path}: {where} is a JSON {type(raw).__name__}, not a sentence string; fix that entry")
    return raw.strip()


def _karpathy(path: Path, obj: dict) -> list[CaptionImage]:
    images = []
    for i, im in enumerate(obj["images"]):
        if not isinstance(im, dict) or "filename" not in im:
            raise RemoteGLMError(f"{path}: images[{i}] has no 'filename'; each image needs filename, split, sentences")
        if not isinstance(im["filename"], str) or not im["filename"].strip():
            raise RemoteGLMError(f"{path}: images[{i}] 'filename' should be a file name string, got {im['filename']!r}")
        raw_sents = im.get("sentences") or []
        if not isinstance(raw_sents, list):
            raise RemoteGLMError(f"{path}: images[{i}] ({im['filename']}) 'sentences' is a JSON {type(raw_sents).__name__}; "
                                 'it must be a list such as [{"raw": "..."}, ...]')
        sents = [t for k, s in enumerate(raw_sents)
                 if (t := _sentence_text(path, f"images[{i}].sentences[{k}]", s))]
        split = im.get("split", "")
        split = "train" if split == "restval" else split
        imgid = im.get("imgid", i)
        images.append(CaptionImage(im["filename"], imgid if isinstance(imgid, int) else i,
                                   split if isinstance(split, str) else "", sents))
    return images


def _remoteglm(path: Path, obj: list) -> list[CaptionImage]:
    images = []
    for i, item in enumerate(obj):
        if not isinstance(item, dict) or "imged_id" not in item:
            raise RemoteGLMError(f"{path}: item {i} has no 'imged_id'; each item needs imged_id and caption")
        caption = item.get("caption") or ""
        if not isinstance(caption, str):
            raise RemoteGLMError(f"{path}: item {i} ({item['imged_id']}) 'caption' is a JSON {type(caption).__name__}; "
                                 'it must be one string of sentences ("s1 .  s2 .")')
        images.append(CaptionImage(str(item["imged_id"]), i, "", split_caption(caption)))
    return images


def detect_format(obj: object) -> str | None:
    """'karpathy', 'remoteglm', or None when the JSON is neither."""
    if isinstance(obj, dict) and isinstance(obj.get("images"), list):
        return "karpathy"
    if isinstance(obj, list) and obj and isinstance(obj[0], dict) and "imged_id" in obj[0] and "caption" in obj[0]:
        return "remoteglm"
    return None


def load_captions(path: str | Path, name: str | None = None,
                  content: Callable[[str], str | None] | None = None) -> CaptionSet:
    """Read an English caption file of either format; one-line RemoteGLMError on bad input.
    ``content`` (file name -> content hash) orders the images a split is assigned to."""
    path = Path(path)
    if not path.exists():
        raise RemoteGLMError(
            f"caption file not found: {path}; put the dataset there (see data/README.md) or pass --input PATH"
        )
    obj = read_json(path, "caption file")
    fmt = detect_format(obj)
    if fmt is None:
        got = f"a JSON {type(obj).__name__}" + (f" with keys {sorted(obj)[:5]}" if isinstance(obj, dict) else "")
        raise RemoteGLMError(
            f"{path}: unknown caption format ({got}); expected a Karpathy dataset.json "
            '{"images": [...]} or a RemoteGLM list [{"imged_id", "caption"}]'
        )
    images = _karpathy(path, obj) if fmt == "karpathy" else _remoteglm(path, obj)
    if not images:
        raise RemoteGLMError(f"{path}: no images in the file; check that it is the right dataset.json")
    name = canonical_name(name) if name else infer_name(path, obj)
    cs = CaptionSet(name, path, fmt, images)
    dropped = [sent for im in images for sent in im.sentences if not has_text(sent)]
    if dropped:
        for im in images:
            im.sentences = [sent for sent in im.sentences if has_text(sent)]
        examples = ", ".join(repr(x) for x in list(dict.fromkeys(dropped))[:3])
        cs.warnings.append(f"{len(dropped)} caption(s) with nothing to translate dropped (no word of two letters: {examples})")
    empty = [im.filename for im in images if not im.sentences]
    if empty:
        if len(empty) == len(images):
            raise RemoteGLMError(f"{path}: every image has empty captions (or only ones with nothing to translate); "
                                 "check that it is the right dataset.json")
        cs.images = images = [im for im in images if im.sentences]
        cs.warnings.append(f"{len(empty)} image(s) without any usable caption left out (first: {', '.join(empty[:3])})")
    if name not in CLASSES:
        cs.warnings.append(f"dataset name '{name}' is not UCM, Sydney or RSICD: no scene classes (pass --name)")
    for im in images:
        im.cls = scene_class(name, im.filename)
    no_cls = [im.filename for im in images if im.cls is None]
    if name in CLASSES and no_cls:
        cs.warnings.append(
            f"{len(no_cls)} image(s) have no scene class from their file name (e.g. {no_cls[0]}): "
            "they get description prompts only"
        )
    bad_split = [im for im in images if im.split not in SPLITS]
    if bad_split:
        assign_splits(bad_split, content=content)
        for im in bad_split:
            im.derived = True
        why = "the RemoteGLM list has no split" if fmt == "remoteglm" else f"{len(bad_split)} image(s) had no valid split"
        key = "SHA-256 of the image, or SHA-1 of the file name" if content else "SHA-1 of the file name"
        cs.warnings.append(
            f"{why}: assigned a reproducible 80/10/10 split per class ({key}), "
            "not the official one; use the official dataset.json to keep its split"
        )
    return cs


def check_images(cs: CaptionSet, folder: str | Path) -> list[str]:
    """Warnings (not errors) for a missing image folder or image files that are not in it."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"image folder not found: {folder} (outputs still name the expected image paths)"]
    present = {p.name for p in folder.iterdir()}
    missing = [im.filename for im in cs.images if im.filename not in present]
    if not missing:
        return []
    return [f"{len(missing)} of {len(cs.images)} images missing from {folder} (first: {', '.join(missing[:5])})"]
