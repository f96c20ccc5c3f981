"""Large detection images (DOTA's run to 20,000 pixels a side) cut into tiles, with their boxes: a
pure function of the annotations; the caller crops the pixels of each window.

Windows of ``size`` x ``size`` step by ``size - overlap``; the last row and column end on the
image's edge (so no window hangs over it and every pixel is in one); an image no larger than a
tile is one window of its own size. A box is clipped to the window and moved to its coordinates;
an object mostly outside the window (less than ``keep`` of its area inside) is dropped there, as
it is whole in a neighbouring window. A clipped object's rotated box no longer has its 4 corners
in the window and is dropped; its clipped box stays.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from remoteglm.data.annotations import AnnotatedImage, Annotation
from remoteglm.boxes import Box
from remoteglm.errors import RemoteGLMError

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 on the original image


def _starts(length: int, size: int, step: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size, step))
    return starts + [length - size]


def windows(width: int, height: int, size: int, overlap: int) -> list[Window]:
    """The tile windows of a ``width`` x ``height`` image, row by row."""
    if not (isinstance(size, int) and size > 0):
        raise RemoteGLMError(f"tile size {size!r} must be a positive whole number of pixels")
    if not (isinstance(overlap, int) and 0 <= overlap < size):
        raise RemoteGLMError(f"tile overlap {overlap!r} must be a whole number from 0 to the tile size - 1 ({size - 1})")
    step = size - overlap
    return [(x, y, min(x + size, width), min(y + size, height))
            for y in _starts(height, size, step) for x in _starts(width, size, step)]


def tile_name(image: str, window: Window) -> str:
    """The file name of a window's tile: ``P0001.png`` at (1024, 512) -> ``P0001__1024_512.png``."""
    p = PurePosixPath(image)
    return f"{p.stem}__{window[0]}_{window[1]}{p.suffix}"


def _in_window(obj: Annotation, window: Window, keep: float) -> Annotation | None:
    x0, y0, x1, y1 = window
    b = obj.box
    moved = Box(b.x1 - x0, b.y1 - y0, b.x2 - x0, b.y2 - y0)
    box = moved.clip(x1 - x0, y1 - y0)
    if not box.area or box.area < keep * obj.area:
        return None
    whole = box == moved
    polygon = None
    if obj.polygon is not None and whole:
        polygon = tuple(v - (x0 if k % 2 == 0 else y0) for k, v in enumerate(obj.polygon))
    return Annotation(box=box, category=obj.category, polygon=polygon,
                      text=obj.text, difficult=obj.difficult)


def tile(image: AnnotatedImage, size: int, overlap: int, keep: float = 0.5) -> list[tuple[Window, AnnotatedImage]]:
    """Every window of ``image`` with its tile's annotation (objects clipped, moved, the mostly
    outside ones dropped), row by row; tiles with no object left are included."""
    if not (0 < keep <= 1):
        raise RemoteGLMError(f"keep {keep!r} must be a fraction of a box's area above 0, at most 1")
    out = []
    for window in windows(image.width, image.height, size, overlap):
        objects = [o for o in (_in_window(obj, window, keep) for obj in image.objects) if o is not None]
        out.append((window, AnnotatedImage(image=tile_name(image.image, window), width=window[2] - window[0],
                                           height=window[3] - window[1], objects=tuple(objects), gsd=image.gsd)))
    return out
