"""What every exchange format shares: reading and writing the tools' files (a JSON list or JSON
Lines), a record's turns in a family's box text (export), and a conversation read from a tool's
file back into a fine-tune record (import), each checked with one line per problem before
anything is written.

A record's fields that no chat format has (``kind``, ``task``, ``category``, ``expression``,
``polygon``, ... of the grounding work) travel in each exported sample's ``"remoteglm"`` object;
the tools drop columns they do not map (LLaMA-Factory's converter keeps only the mapped columns,
ms-swift removes unused columns, Qwen's loader reads only ``image``/``conversations``), and import
puts them back.

The image size (upright, as training reads it) is asked of ``size_of`` (the caller passes
``remoteglm.model.image.image_size``: data/ stands below the model stage).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from remoteglm.boxes import Box
from remoteglm.data.box_text import render_record
from remoteglm.data.exchange.box_spans import grid_reader, looks_like_boxes, to_markers
from remoteglm.data.records import Record, load_records, resolve_image
from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json, write_json_atomic, write_text_atomic

IMAGE_TAG = "<image>"  # where the image goes, in all three tools' text
META_KEY = "remoteglm"  # a sample's record fields that no chat format has
CORE = ("img", "prompt", "label", "history", "prompt_boxes", "label_boxes")
SizeOf = Callable[[Any], "tuple[int, int]"]


# ---- files ------------------------------------------------------------------------------------
def read_rows(path: str | Path, what: str) -> list[dict]:
    """The samples of a tool's file: a JSON list, or JSON Lines (``.jsonl``), each an object."""
    path = Path(path)
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise RemoteGLMError(f"{what} not found: {path}")
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise RemoteGLMError(f"{path}: line {n} is not JSON ({e.msg}); fix the line") from None
    else:
        rows = read_json(path, what)
        if not isinstance(rows, list):
            raise RemoteGLMError(f"{path}: expected a JSON list of samples (or a .jsonl file), "
                                 f"found a {type(rows).__name__}")
    if not rows:
        raise RemoteGLMError(f"{path}: no samples in the file")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RemoteGLMError(f"{path}: item {i} is a {type(row).__name__}, not a sample object")
    return rows


def write_rows(path: str | Path, rows: list[dict]) -> Path:
    """``rows`` as JSON Lines when ``path`` ends in .jsonl, else as one JSON list (atomic)."""
    if Path(path).suffix == ".jsonl":
        return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return write_json_atomic(path, rows)


@dataclass(frozen=True)
class ImagePaths:
    """How exported image paths are written: absolute, or relative to ``relative_to``."""

    relative_to: Path | None = None

    def write(self, img: Path) -> str:
        p = Path(img).absolute()
        return os.path.relpath(p, self.relative_to.absolute()) if self.relative_to is not None else str(p)


# ---- export -----------------------------------------------------------------------------------
def export_items(path: str | Path, split: str = "train", seed: int = 42,
                 image_root: str | Path | None = None) -> list[tuple[Record, dict]]:
    """The records of a fine-tune file (``load_records``: checked, images resolved), each with its
    fields beyond the records' own (``kind``, ``task``, ``category``, ...), which travel as META_KEY."""
    records = load_records(path, split, seed, image_root)
    data = read_json(path)
    if isinstance(data, list):
        return [(r, {k: v for k, v in item.items() if k not in CORE}) for r, item in zip(records, data)]
    return [(r, {}) for r in records]


@dataclass
class Exporter:
    """Writes one record as the turns a tool reads: the family's box text (``codec``, in the frame
    the tool shows the model), image sizes read once per image."""

    codec: Any
    size_of: SizeOf
    tags: Sequence[str] = (IMAGE_TAG,)  # the tool's placeholders: refused inside a record's text
    sizes: dict = field(default_factory=dict)

    def size(self, img: Path, where: str) -> tuple[int, int]:
        if img not in self.sizes:
            try:
                self.sizes[img] = self.size_of(img)
            except RemoteGLMError as e:
                raise RemoteGLMError(f"{where}: {e}") from None
        return self.sizes[img]

    def turns(self, record: Record, where: str) -> list[tuple[str, str]]:
        """(question, answer) pairs, oldest first, the last with the record's boxes written."""
        size = self.size(record.img, where)
        boxes = (*record.prompt_boxes, *record.label_boxes)
        if boxes and self.codec is None:
            raise RemoteGLMError(f"{where} has boxes: name the family whose box text to write (--family or --model)")
        try:
            prompt, label = render_record(record, self.codec, size)
        except RemoteGLMError as e:
            raise RemoteGLMError(f"{where}: {e}") from None
        for b in boxes:
            x1, y1, x2, y2 = self.codec.to_grid(b, size)
            if not (x1 < x2 and y1 < y2):
                raise RemoteGLMError(f"{where}: box [{b.x1:g}, {b.y1:g}, {b.x2:g}, {b.y2:g}] is under one step of this "
                                     f"family's grid on the {size[0]} x {size[1]} image: it would be written as an "
                                     "empty box; drop it or raise the pixel settings")
        turns = [*record.history, (prompt, label)]
        for tag in self.tags:
            if any(tag in t for pair in turns for t in pair):
                raise RemoteGLMError(f"{where}: the text holds {tag!r}, which the tool reads as its placeholder; "
                                     "reword it")
        return turns


# ---- import -----------------------------------------------------------------------------------
@dataclass
class Sample:
    """One conversation read from a tool's file: its image (as written there, or decoded bytes),
    (question, answer) pairs with the image tag taken out, and the record fields of META_KEY.
    ``reader``: how the last turn's box numbers become boxes (None: the family's grid)."""

    where: str
    image: str | bytes
    turns: list[tuple[str, str]]
    meta: dict = field(default_factory=dict)
    reader: Callable[[tuple[int, int]], Any] | None = None
    codec: Any = None  # the box syntax of ``reader`` (None: the family's)
    suffix: str = ""   # the file suffix of an image given as bytes (".png")


def take_image_tag(text: str, where: str, strip: bool = False) -> str:
    """The first question without its one image tag (records put the image before the question,
    as training and serving render it; whitespace right after a leading tag goes with it)."""
    if text.count(IMAGE_TAG) != 1:
        raise RemoteGLMError(f"{where}: the first question has {text.count(IMAGE_TAG)} {IMAGE_TAG} tags; "
                             "a record has one image, in its first question")
    before, after = text.split(IMAGE_TAG)
    if strip:  # Qwen's loader strips the text around each tag
        return (before.strip() + after.strip()).strip()
    return before + (after.lstrip() if not before.strip() else after)


def pair_turns(messages: list[tuple[str, str]], where: str) -> list[tuple[str, str]]:
    """(role, text) messages (user / assistant, alternating, from a question to an answer) ->
    (question, answer) pairs."""
    if not messages:
        raise RemoteGLMError(f"{where}: no messages")
    roles = [r for r, _ in messages]
    want = ["user", "assistant"] * (len(messages) // 2 + 1)
    if len(messages) % 2 or roles != want[: len(messages)]:
        raise RemoteGLMError(f"{where}: the turns go {'/'.join(roles)}; a record needs user/assistant pairs "
                             "from a question to its answer")
    for r, t in messages:
        if not isinstance(t, str):
            raise RemoteGLMError(f"{where}: a {r} turn's text is a {type(t).__name__}, not a string")
    pairs = [(messages[k][1], messages[k + 1][1]) for k in range(0, len(messages), 2)]
    if not pairs[-1][1].strip():
        raise RemoteGLMError(f"{where}: the last answer is empty")
    return pairs


def meta_of(row: dict, where: str) -> dict:
    meta = row.get(META_KEY) or {}
    if not isinstance(meta, dict) or any(k in CORE for k in meta):
        raise RemoteGLMError(f"{where}: {META_KEY!r} must be an object of record fields other than {', '.join(CORE)}")
    return meta


@dataclass
class Importer:
    """Turns Samples into fine-tune records: images resolved (``base``) and sized, the family's box
    text (``codec``, in the frame the tool showed the model) read back to pixels."""

    codec: Any
    size_of: SizeOf
    base: Path          # where relative image paths are looked up
    out_dir: Path       # the records' image paths are written relative to it
    image_dir: Path     # where images that came as bytes are stored (their content's name)
    images: dict = field(default_factory=dict)  # bytes to store: path -> data
    sizes: dict = field(default_factory=dict)   # image path -> size, read once

    def record(self, s: Sample) -> dict:
        img = self._image(s)
        size = self._size(s, img)
        history, (question, answer) = s.turns[:-1], s.turns[-1]
        codec = s.codec or self.codec
        for q, a in s.turns if codec is None else history:
            if looks_like_boxes(q) or looks_like_boxes(a):
                what = ("an earlier turn has box text; records keep boxes in the last turn only"
                        if codec is not None else "the text has box text: name the family it is written for "
                        "(--family or --model) so it is read back to pixels")
                raise RemoteGLMError(f"{s.where}: {what}")
        prompt, label, pboxes, lboxes = question, answer, (), ()
        if codec is not None:
            reader = s.reader(size) if s.reader else grid_reader(codec, size, s.where)
            prompt, pboxes = to_markers(question, codec, reader, s.where)
            label, lboxes = to_markers(answer, codec, reader, s.where)
        if not label.strip():
            raise RemoteGLMError(f"{s.where}: the answer is empty")
        rec: dict = {"img": os.path.relpath(img, self.out_dir.absolute()), "prompt": prompt, "label": label}
        if history:
            rec["history"] = [list(t) for t in history]
        if pboxes or lboxes:
            rec["prompt_boxes"], rec["label_boxes"] = _box_lists(pboxes), _box_lists(lboxes)
        return rec | s.meta

    def _image(self, s: Sample) -> Path:
        if isinstance(s.image, bytes):
            import hashlib

            path = (self.image_dir / (hashlib.sha256(s.image).hexdigest()[:20] + s.suffix)).absolute()
            self.images[path] = s.image
            return path
        img = Path(resolve_image(s.image, self.base)).absolute()
        if not img.is_file():
            raise RemoteGLMError(f"{s.where}: image not found: {img} (relative paths are looked up in {self.base}; "
                                 "pass --image_root to the folder that holds them)")
        return img

    def _size(self, s: Sample, img: Path) -> tuple[int, int]:
        if img not in self.sizes:
            try:
                self.sizes[img] = self.size_of(s.image if isinstance(s.image, bytes) else img)
            except RemoteGLMError as e:
                raise RemoteGLMError(f"{s.where}: {e}") from None
        return self.sizes[img]


def _box_lists(boxes: Sequence[Box]) -> list[list]:
    return [[_num(v) for v in b.xyxy] + ([b.label] if b.label is not None else []) for b in boxes]


def _num(v: float) -> float | int:
    r = round(v, 2)
    return int(r) if r == int(r) else r
