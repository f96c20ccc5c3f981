"""Boxes in scene pixels -> the map: rings through the scene's affine transform, non-maximum
suppression per category, GeoJSON FeatureCollections.

Pixel (col, row) -> map (x, y) is the scene's ``affine.Affine`` (rasterio's ``transform``: pixel
corner convention, so box edges land on pixel edges); its inverse takes a ring back to the box.

GeoJSON: a Polygon per box, its exterior ring counterclockwise (RFC 7946 section 3.1.6, the
right-hand rule; https://datatracker.ietf.org/doc/html/rfc7946#section-3.1.6). In the scene's
CRS the collection carries the 2008 GeoJSON "crs" member of type "name"
(https://geojson.org/geojson-spec.html#named-crs) with an OGC URN such as
"urn:ogc:def:crs:EPSG::32618" - RFC 7946 dropped the member, but GDAL's GeoJSON driver still reads
it (https://gdal.org/development/rfc/rfc65_rfc7946_geojson.html) and so QGIS places the features;
a CRS without an EPSG code is named by its WKT, which GDAL also accepts there. ``wgs84=True``
gives RFC 7946's own CRS (lon, lat on WGS 84, no "crs" member) through
``rasterio.warp.transform_geom``. A scene without a CRS gives pixel coordinates (x = column,
y = row, y down) and no "crs" member; the caller says so once.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_geom

from remoteglm.boxes import Box, iou
from remoteglm.errors import RemoteGLMError
from remoteglm.io import write_json_atomic

Point = tuple[float, float]


def _ccw(ring: list[Point]) -> list[Point]:
    """The closed ring counterclockwise (shoelace area > 0 in x-right, y-up axes)."""
    area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:]))
    return ring if area >= 0 else ring[::-1]


def to_map(box: Box, transform: Affine) -> list[Point]:
    """The box's four corners in CRS units as a closed ring of 5 points (counterclockwise)."""
    corners = [(box.x1, box.y1), (box.x1, box.y2), (box.x2, box.y2), (box.x2, box.y1), (box.x1, box.y1)]
    return _ccw([tuple(map(float, transform @ c)) for c in corners])


def to_pixels(ring: Sequence[Point], transform: Affine) -> Box:
    """The pixel box a ring from ``to_map`` came from (the bounds of its inverse-mapped points)."""
    inverse = ~transform
    pts = [inverse @ (float(x), float(y)) for x, y in ring]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return Box(min(xs), min(ys), max(xs), max(ys))


def nms(items: Sequence[Box], iou_threshold: float = 0.5, scores: Sequence[float] | None = None) -> list[int]:
    """Greedy non-maximum suppression within each label: in order of score (highest first; ties
    and no scores: list order), a box is kept unless its IoU with a kept box of the same label is
    above ``iou_threshold``. Returns the kept indices in ascending order."""
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise RemoteGLMError(f"NMS IoU threshold {iou_threshold!r} must be between 0 and 1")
    if scores is not None and len(scores) != len(items):
        raise RemoteGLMError(f"NMS got {len(scores)} score(s) for {len(items)} box(es): give one score per box")
    order = list(range(len(items)))
    if scores is not None:
        order.sort(key=lambda i: -float(scores[i]))  # stable: ties keep list order
    kept: dict[Any, list[int]] = {}
    for i in order:
        same = kept.setdefault(items[i].label, [])
        if all(iou(items[i], items[j]) <= iou_threshold for j in same):
            same.append(i)
    return sorted(i for group in kept.values() for i in group)


def crs_member(crs: CRS) -> dict:
    """The 2008 GeoJSON named-CRS member for ``crs`` (module doc)."""
    epsg = crs.to_epsg()
    name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else crs.to_wkt()
    return {"type": "name", "properties": {"name": name}}


def feature_collection(features: Sequence[dict], crs: CRS | None, wgs84: bool = False, *,
                       transform: Affine | None = None, size: tuple[int, int] | None = None) -> dict:
    """A GeoJSON FeatureCollection of ``features`` ({"box": Box in scene pixels, "properties":
    {...}}; a box's label fills "category" when the properties lack it).

    ``transform`` (the scene's) is needed with a ``crs``; ``size`` = (width, height) clips each
    box to the scene, so every feature lies inside its footprint; boxes with no area inside are
    left out. ``crs`` None: pixel coordinates (module doc)."""
    if crs is not None and transform is None:
        raise RemoteGLMError("feature_collection needs the scene's transform to place boxes in its CRS")
    if wgs84 and crs is None:
        raise RemoteGLMError("cannot give WGS 84 coordinates for a scene without a CRS: leave out --wgs84")
    out = []
    for n, feature in enumerate(features):
        box = feature.get("box")
        if not isinstance(box, Box):
            raise RemoteGLMError(f"feature {n} has no Box under 'box' (got {type(box).__name__})")
        if size is not None:
            box = box.clip(*size)
            if box.area <= 0:
                continue
        properties = dict(feature.get("properties") or {})
        if box.label is not None:
            properties.setdefault("category", box.label)
        if crs is None:
            ring = _ccw([(box.x1, box.y1), (box.x1, box.y2), (box.x2, box.y2), (box.x2, box.y1), (box.x1, box.y1)])
            ring = [(float(x), float(y)) for x, y in ring]
        else:
            ring = to_map(box, transform)
        geometry = {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}
        if wgs84:
            geometry = transform_geom(crs, "EPSG:4326", geometry)
            lonlat = _ccw([tuple(p) for p in geometry["coordinates"][0]])
            geometry = {"type": "Polygon", "coordinates": [[list(p) for p in lonlat]]}
        out.append({"type": "Feature", "properties": properties, "geometry": geometry})
    fc: dict = {"type": "FeatureCollection"}
    if crs is not None and not wgs84:
        fc["crs"] = crs_member(crs)
    fc["features"] = out
    return fc


def write_geojson(path: str | os.PathLike, fc: dict) -> None:
    """Write the collection atomically (a reader never sees half a file)."""
    write_json_atomic(path, fc, indent=None)
