"""Boxes in records, model-neutral: the grounding annotation of one object and of one image, and the
checks every annotation reader shares (bounded file reads, numbers, boxes on the image), each
problem one RemoteGLMError line naming the file.

Boxes are ``remoteglm.boxes.Box``: pixels on the original image, x1, y1 (top left) to x2, y2
(bottom right), here always x1 < x2 and y1 < y2. A family's box codec turns them into its own
text; nothing here knows any family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from remoteglm.boxes import Box
from remoteglm.errors import RemoteGLMError

# One image's annotation file (a VOC XML, a DOTA labelTxt) is small; a COCO file holds a whole set
# (DIOR's ~190k objects are ~40 MB). Bigger means the wrong file: refuse it before reading it.
MAX_IMAGE_FILE_BYTES = 16 * 2**20
MAX_SET_FILE_BYTES = 1 * 2**30
MAX_OBJECTS = 20_000  # per image (DOTA's most crowded images hold a few thousand)
MAX_SIDE = 100_000  # pixels: an image side beyond this is a broken size field
# A box may overhang its image this much (DOTA's corners sometimes lie a pixel or two outside);
# it is clipped to the image. A larger overhang means the box belongs to another image or size.
OVERHANG = 0.01  # of the image side, at least OVERHANG_PX
OVERHANG_PX = 2.0

@dataclass(frozen=True)
class Annotation:
    """One object: its box (x1, y1, x2, y2 pixels on the original image), its category as the source
    names it, the rotated box's 4 corners (x1, y1, ..., x4, y4) where the source has one, the
    source's referring text, and the source's difficult flag."""
    box: Box
    category: str
    polygon: tuple[float, ...] | None = None
    text: str = ""
    difficult: bool = False

    @property
    def area(self) -> float:
        return self.box.area

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box.x1 + self.box.x2) / 2, (self.box.y1 + self.box.y2) / 2


@dataclass(frozen=True)
class AnnotatedImage:
    """One image's objects: ``image`` is the file name as the source gives it; ``width`` x ``height``
    its size in pixels; ``gsd`` metres per pixel where the source states it."""
    image: str
    width: int
    height: int
    objects: tuple[Annotation, ...] = field(default_factory=tuple)
    gsd: float | None = None

    def with_objects(self, objects) -> AnnotatedImage:
        return replace(self, objects=tuple(objects))


def read_bounded(path: str | Path, what: str, limit: int | None = None) -> str:
    """The text of an annotation file (at most ``limit`` bytes, default MAX_IMAGE_FILE_BYTES);
    missing, too large, unreadable or not UTF-8: one line."""
    path = Path(path)
    limit = MAX_IMAGE_FILE_BYTES if limit is None else limit
    if not path.is_file():
        raise RemoteGLMError(f"{what} not found: {path}")
    size = path.stat().st_size
    if size > limit:
        raise RemoteGLMError(f"{path}: {size} bytes, more than the {limit} an {what} may have; is it the right file?")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RemoteGLMError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise RemoteGLMError(f"cannot read {path}: {e.strerror or e}") from None


def number(path: Path, where: str, text) -> float:
    """A finite number from the file's ``text`` (a string or a JSON value), else one line."""
    if isinstance(text, bool):  # JSON true/false are not coordinates
        raise RemoteGLMError(f"{path}: {where}: {text!r} is not a number")
    try:
        value = float(text.strip() if isinstance(text, str) else text)
    except (TypeError, ValueError):
        raise RemoteGLMError(f"{path}: {where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise RemoteGLMError(f"{path}: {where}: {text!r} is not a finite number")
    return value


def image_size(path: Path, where: str, width, height) -> tuple[int, int]:
    """A positive whole image size (width, height), else one line."""
    w, h = number(path, f"{where} width", width), number(path, f"{where} height", height)
    if not (w == int(w) and h == int(h) and 0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise RemoteGLMError(f"{path}: {where}: image size {width} x {height} is not a positive whole size "
                             f"up to {MAX_SIDE} pixels")
    return int(w), int(h)


def on_image(path: Path, where: str, box: Box, width: int, height: int) -> Box:
    """``box`` checked against its image: empty or reversed, or overhanging it by more than
    OVERHANG, is one line; a slight overhang is clipped."""
    x1, y1, x2, y2 = box.xyxy
    if not (x1 < x2 and y1 < y2):
        raise RemoteGLMError(f"{path}: {where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is empty or reversed "
                             f"(x1 < x2 and y1 < y2 are needed)")
    sx, sy = max(OVERHANG_PX, OVERHANG * width), max(OVERHANG_PX, OVERHANG * height)
    if x1 < -sx or y1 < -sy or x2 > width + sx or y2 > height + sy:
        raise RemoteGLMError(f"{path}: {where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the "
                             f"{width} x {height} image; is it the annotation of another image?")
    clipped = box.clip(width, height)
    if not clipped.area:
        raise RemoteGLMError(f"{path}: {where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies on the edge of the "
                             f"{width} x {height} image, with nothing inside it")
    return clipped


def polygon_box(polygon: tuple[float, ...]) -> Box:
    """The axis-aligned box around a polygon's corners (x1, y1, x2, y2, ...)."""
    xs, ys = polygon[0::2], polygon[1::2]
    return Box(min(xs), min(ys), max(xs), max(ys))


def not_empty(path: Path, objects, what: str = "objects") -> None:
    """An annotation file with no object at all is one line: nothing to ground."""
    if not objects:
        raise RemoteGLMError(f"{path}: no {what} annotated; remove the file or add its objects")
    if len(objects) > MAX_OBJECTS:
        raise RemoteGLMError(f"{path}: {len(objects)} objects in one image, more than {MAX_OBJECTS}; "
                             f"is it the right file?")
