"""COCO-style detection JSON, one file per set:

    {"images": [{"id": 1, "file_name": "00001.jpg", "width": 800, "height": 800}, ...],
     "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [x, y, w, h]}, ...],
     "categories": [{"id": 3, "name": "storagetank"}, ...]}

``bbox`` is the top-left corner and the size in pixels. An image without annotations is kept
(with no objects); a file without any annotation is refused.
"""

from __future__ import annotations

from pathlib import Path

from remoteglm.data.annotations import (
    MAX_SET_FILE_BYTES, AnnotatedImage, Annotation, image_size, not_empty, number, on_image,
)
from remoteglm.boxes import Box
from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json


def _list(path: Path, data: dict, key: str) -> list[dict]:
    items = data.get(key)
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise RemoteGLMError(f"{path}: '{key}' must be a list of objects {{...}}; is it a COCO-style file?")
    return items


def _id(path: Path, where: str, item: dict, key: str = "id"):
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RemoteGLMError(f"{path}: {where} has no '{key}' (a number or a string)")
    return value


def read_coco(path: str | Path) -> list[AnnotatedImage]:
    """Every image of a COCO-style file with its objects, in the file's image order; every problem
    (unknown image or category id, a malformed or outside box, no annotation at all) is one line
    naming the file."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > MAX_SET_FILE_BYTES:
        raise RemoteGLMError(f"{path}: {path.stat().st_size} bytes, more than the {MAX_SET_FILE_BYTES} a "
                             f"COCO-style file may have; is it the right file?")
    data = read_json(path, "COCO-style annotation file", require_object=True)
    categories = {}
    for i, c in enumerate(_list(path, data, "categories"), 1):
        cid = _id(path, f"category {i}", c)
        name = c.get("name")
        if not isinstance(name, str) or not name.strip():
            raise RemoteGLMError(f"{path}: category {cid!r} has no 'name'")
        if cid in categories:
            raise RemoteGLMError(f"{path}: category id {cid!r} is given twice")
        categories[cid] = name.strip()
    images: dict = {}
    for i, im in enumerate(_list(path, data, "images"), 1):
        iid = _id(path, f"image {i}", im)
        name = im.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise RemoteGLMError(f"{path}: image {iid!r} has no 'file_name'")
        if iid in images:
            raise RemoteGLMError(f"{path}: image id {iid!r} is given twice")
        images[iid] = (name, image_size(path, f"image {iid!r}", im.get("width"), im.get("height")), [])
    annotations = _list(path, data, "annotations")
    not_empty(path, annotations, "annotations")
    for i, a in enumerate(annotations, 1):
        where = f"annotation {a.get('id', i)!r}"
        iid = _id(path, where, a, "image_id")
        if iid not in images:
            raise RemoteGLMError(f"{path}: {where}: image_id {iid!r} is not among the file's images")
        cid = _id(path, where, a, "category_id")
        if cid not in categories:
            raise RemoteGLMError(f"{path}: {where}: category_id {cid!r} is not among the file's categories")
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise RemoteGLMError(f"{path}: {where}: 'bbox' must be [x, y, width, height]")
        x, y, w, h = (number(path, f"{where} bbox", v) for v in bbox)
        _, (width, height), objects = images[iid]
        box = on_image(path, f"{where} ({categories[cid]})", Box(x, y, x + w, y + h), width, height)
        objects.append(Annotation(box=box, category=categories[cid], difficult=bool(a.get("iscrowd"))))
    return [AnnotatedImage(image=name, width=w, height=h, objects=tuple(objs))
            for name, (w, h), objs in images.values()]
