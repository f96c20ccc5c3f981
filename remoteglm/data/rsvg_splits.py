"""DIOR-RSVG's official splits, as its authors' code reads them: the lists number objects, not images.

Source: github.com/ZhanYang-nwpu/RSVG-pytorch. ``DIOR_RSVG/train.txt`` / ``val.txt`` / ``test.txt``
(commit 461bcaf) hold one integer a line (``train.txt`` starts 3, 4, 5, 7, ...). ``data_loader.py``
(commit 0531211, ``RSVGDataset.__init__``) reads them as integers, walks the annotation folder with
``os.walk``, and numbers every ``<object>`` of every XML file from 0 in that order; an object whose
number is in the split's list belongs to that split, its box the ``bndbox``, its text the
``description``. The authors ran on Windows (the loader opens ``'DIOR_RSVG\\\\' + split + '.txt'``),
whose NTFS folder listing comes sorted by name; so here the ``.xml`` files directly in the
annotation folder are taken sorted by name (DIOR-RSVG's are ``00001.xml`` ... , all of one length,
so every name sort agrees on them).

So one image's objects can be in different splits, and DIOR-RSVG's XML holds only the objects
referred to (not every instance in the image). :func:`object_splits` gives each image ONE split,
the strictest of its objects' (test, else val, else train), so the split registry stays leak-free,
and keeps on it only the objects whose official split is that split: the test records are then
exactly the official test expressions, comparable with published numbers; an official train or val
expression on a test image (a train one on a val image) is left out and counted. The importer makes
only refer/identify records of those objects from their own descriptions: no detect, count or
grounded task and no rule-built position expression, which the missing instances would make false.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import RemoteGLMError
from .annotations import AnnotatedImage

MODE = "object-index split (DIOR-RSVG)"
STRICT = ("test", "val", "train")  # an image goes to the first of these that any of its objects is in
_INDEX = re.compile(r"0|[1-9]\d*")  # an integer as Python's str() writes it: DIOR's image ids are "00001"


def xml_files(ann: Path) -> list[Path]:
    """The ``.xml`` files directly in ``ann``, sorted by name (the authors' NTFS listing order)."""
    return [ann / n for n in sorted(os.listdir(ann)) if n.endswith(".xml") and (ann / n).is_file()]


def is_object_index(lists: dict[str, list[str]], ann: Path) -> bool:
    """Whether the split lists are object indices: every id an integer written without leading zeros,
    and not every id the stem of an annotation file. (Image lists name their XML files' stems - DIOR's
    ``00001`` - all of them. Some object indices may be stems too: DIOR-RSVG's files are named
    ``00001.xml`` ... ``17402.xml``, so its indices 10000 to 17402 are.)"""
    ids = [i for got in lists.values() for i in got]
    if not all(_INDEX.fullmatch(i) for i in ids):
        return False
    stems = {n[:-4] for n in os.listdir(ann) if n.endswith(".xml")}
    return not ids or not all(i in stems for i in ids)


@dataclass
class ObjectSplits:
    images: list[tuple[Path, AnnotatedImage, str]]  # (XML file, its objects of its split only, split)
    objects: int  # numbered, over all XML files
    files: int
    left_out: Counter = field(default_factory=Counter)  # (image's split, object's official split) -> objects
    unlisted: int = 0  # objects in no list

    def summary(self) -> str:
        """Two lines for the import summary: the mode, and the official expressions left out."""
        by_image = {s: " + ".join(f"{self.left_out[s, o]} {o}" for o in reversed(STRICT) if self.left_out[s, o])
                    for s in STRICT}
        where = ", ".join(f"{text} on {s} images" for s, text in by_image.items() if text)
        n = sum(self.left_out.values())
        return (f"{MODE}: {self.objects} objects of {self.files} XML files numbered in file-name order (the "
                f"authors' data_loader.py); each image in the strictest split of its objects (test > val > train)"
                + (f"; {self.unlisted} objects in no list left out" if self.unlisted else "")
                + f"\n{n} official expressions left out (their image is in a stricter split, so no image is in two "
                f"splits)" + (f": {where}" if where else ""))


def _official(folder: Path, lists: dict[str, list[str]]) -> dict[int, str]:
    """Object index -> its official split; a list with no index, or an index in two lists, is one line."""
    out: dict[int, str] = {}
    for split, ids in lists.items():
        if not ids:
            raise RemoteGLMError(f"{folder / f'{split}.txt'}: no object index (DIOR-RSVG's lists hold one object "
                                 "index a line); fill it or remove it")
        for i in map(int, ids):
            if out.setdefault(i, split) != split:
                raise RemoteGLMError(f"{folder / f'{split}.txt'}: object index {i} is also in {out[i]}.txt: the "
                                     "splits would leak; fix the lists")
    return out


def object_splits(folder: Path, lists: dict[str, list[str]], ann: Path,
                  read: Callable[[Path], AnnotatedImage]) -> ObjectSplits:
    """Each image of ``ann`` with a listed object, its split and the objects kept on it (see the module
    docstring); ``lists`` as ``grounding_import.split_ids`` reads them from ``folder``, ``read`` reads
    one XML file. Every problem is one line, found before anything is written."""
    official = _official(folder, lists)
    files = xml_files(ann)
    if not files:
        raise RemoteGLMError(f"{ann}: no .xml annotation file; pass --annotations DIOR-RSVG's Annotations folder")
    numbered, n = [], 0
    for f in files:
        a = read(f)
        numbered.append((f, a, n))
        n += len(a.objects)
    for split in lists:  # each list's largest index names its file
        top = max(i for i, s in official.items() if s == split)
        if top >= n:
            raise RemoteGLMError(f"{folder / f'{split}.txt'}: object index {top} is out of range: the {len(files)} "
                                 f"XML files of {ann} hold {n} objects (0 to {n - 1}, numbered in file-name order); "
                                 "are these DIOR-RSVG's lists for this Annotations folder?")
    out = ObjectSplits([], n, len(files))
    for f, a, first in numbered:
        splits = [official.get(first + k) for k in range(len(a.objects))]
        listed = {s for s in splits if s}
        out.unlisted += len(splits) - sum(1 for s in splits if s)
        if not listed:
            continue
        split = next(s for s in STRICT if s in listed)
        for k, (o, s) in enumerate(zip(a.objects, splits), 1):
            if s == split and not o.text:
                raise RemoteGLMError(f"{f}: object {k} (index {first + k - 1}, in {s}.txt) has no <description>: "
                                     "DIOR-RSVG's listed objects each have one; is this its Annotations folder?")
            if s and s != split:
                out.left_out[split, s] += 1
        out.images.append((f, a.with_objects(o for o, s in zip(a.objects, splits) if s == split), split))
    return out
