"""DOTA ``labelTxt`` annotations, one file per image (DOTA v1.0 / v1.5 / v2.0): optional header lines
``imagesource:GoogleEarth`` and ``gsd:0.146`` (``gsd:null`` where unknown), then one object a line,

    x1 y1 x2 y2 x3 y3 x4 y4 category difficult

the 4 corners of the oriented box in pixels, clockwise from any corner, and difficult 0 or 1.
The file holds no image size, so the caller passes the image's (read from the image itself);
``label_image`` names the image of a label file (same stem, DOTA's images are PNG).
"""

from __future__ import annotations

from pathlib import Path

from remoteglm.data.annotations import (
    AnnotatedImage, Annotation, image_size, not_empty, number, on_image, polygon_box, read_bounded,
)
from remoteglm.errors import RemoteGLMError

_HEADERS = ("imagesource", "gsd")


def label_image(label: str | Path, suffix: str = ".png") -> str:
    """The image file name of a labelTxt file (``P0001.txt`` -> ``P0001.png``)."""
    return Path(label).stem + suffix


def read_dota(path: str | Path, size: tuple[int, int], image: str | None = None) -> AnnotatedImage:
    """One labelTxt file's objects on its image of ``size`` (width, height): the rotated box as the
    polygon, its enclosing box (checked on the image, clipped by at most a pixel or two) as the
    box; every problem is one line naming the file and line."""
    path = Path(path)
    width, height = image_size(path, "image", *size)
    gsd = None
    objects = []
    for n, line in enumerate(read_bounded(path, "DOTA label file").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        key, colon, value = line.partition(":")
        if colon and key.strip().lower() in _HEADERS:
            if key.strip().lower() == "gsd" and value.strip().lower() not in ("", "null", "none"):
                gsd = number(path, f"line {n} gsd", value)
                if gsd <= 0:
                    raise RemoteGLMError(f"{path}: line {n}: gsd {value.strip()} is not positive")
            continue
        parts = line.split()
        if len(parts) not in (9, 10):
            raise RemoteGLMError(f"{path}: line {n}: {len(parts)} fields, expected "
                                 f"'x1 y1 x2 y2 x3 y3 x4 y4 category difficult'")
        polygon = tuple(number(path, f"line {n} corner value {i + 1}", v) for i, v in enumerate(parts[:8]))
        flag = parts[9] if len(parts) == 10 else "0"
        if flag not in ("0", "1"):
            raise RemoteGLMError(f"{path}: line {n}: difficult is {flag!r}, not 0 or 1")
        box = on_image(path, f"line {n} ({parts[8]})", polygon_box(polygon), width, height)
        objects.append(Annotation(box=box, category=parts[8], polygon=polygon, difficult=flag == "1"))
    not_empty(path, objects)
    return AnnotatedImage(image=image or label_image(path), width=width, height=height,
                          objects=tuple(objects), gsd=gsd)
