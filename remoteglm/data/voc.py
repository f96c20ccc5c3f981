"""Pascal VOC XML annotations, one file per image: DIOR's horizontal boxes and DIOR-RSVG's referring
samples (each ``object`` has ``name``, ``bndbox`` and, in DIOR-RSVG, a ``description``: the
English referring expression; 800 x 800 images).

    <annotation><filename>00001.jpg</filename><size><width>800</width><height>800</height></size>
      <object><name>vehicle</name><difficult>0</difficult>
        <bndbox><xmin>10</xmin><ymin>20</ymin><xmax>40</xmax><ymax>60</ymax></bndbox>
        <description>The vehicle on the left</description></object></annotation>

The size is required: without it no box can be checked against its image.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from remoteglm.data.annotations import (
    AnnotatedImage, Annotation, image_size, not_empty, number, on_image, read_bounded,
)
from remoteglm.boxes import Box
from remoteglm.errors import RemoteGLMError


def _text(path: Path, node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or not (child.text or "").strip():
        raise RemoteGLMError(f"{path}: {where} has no <{tag}>")
    return child.text.strip()


def read_voc(path: str | Path) -> AnnotatedImage:
    """One VOC XML file's image and objects (boxes checked on the image, clipped by at most a pixel
    or two); every problem is one line naming the file."""
    path = Path(path)
    text = read_bounded(path, "VOC annotation file")
    if "<!DOCTYPE" in text or "<!ENTITY" in text:  # entity expansion could blow a small file up
        raise RemoteGLMError(f"{path}: XML with a DOCTYPE or ENTITY declaration is not a VOC annotation")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise RemoteGLMError(f"{path}: malformed XML ({e}); fix the file or re-download it") from None
    if root.tag != "annotation":
        raise RemoteGLMError(f"{path}: the root element is <{root.tag}>, not a VOC <annotation>")
    image = _text(path, root, "filename", "<annotation>")
    size = root.find("size")
    if size is None:
        raise RemoteGLMError(f"{path}: no <size> (width and height are needed to check the boxes)")
    width, height = image_size(path, "<size>", _text(path, size, "width", "<size>"),
                               _text(path, size, "height", "<size>"))
    objects = []
    for i, node in enumerate(root.findall("object"), 1):
        where = f"object {i}"
        name = _text(path, node, "name", where)
        bnd = node.find("bndbox")
        if bnd is None:
            raise RemoteGLMError(f"{path}: {where} ({name}) has no <bndbox>")
        box = Box(*(number(path, f"{where} <{t}>", _text(path, bnd, t, f"{where} <bndbox>"))
                    for t in ("xmin", "ymin", "xmax", "ymax")))
        difficult = node.find("difficult")
        flag = (difficult.text or "0").strip() if difficult is not None else "0"
        if flag not in ("0", "1"):
            raise RemoteGLMError(f"{path}: {where} <difficult> is {flag!r}, not 0 or 1")
        description = node.find("description")
        objects.append(Annotation(
            box=on_image(path, f"{where} ({name})", box, width, height), category=name,
            text=" ".join((description.text or "").split()) if description is not None else "",
            difficult=flag == "1"))
    not_empty(path, objects)
    return AnnotatedImage(image=image, width=width, height=height, objects=tuple(objects))
