"""remoteglm.scene.geo: pixel boxes <-> the map through the real Sentinel-2 crop's transform,
NMS per category, GeoJSON read back by GDAL's OGR (pyogrio) in the scene CRS and in WGS 84."""

import json
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
from affine import Affine

from remoteglm.boxes import Box
from remoteglm.errors import RemoteGLMError
from remoteglm.scene.geo import feature_collection, nms, to_map, to_pixels, write_geojson
from remoteglm.scene.raster import open_scene

S2_CROP = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "scenes" / "s2_crop_384.tif"


@pytest.fixture(scope="module")
def s2():
    with open_scene(S2_CROP) as scene:
        yield scene


def signed_area(ring):
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:])) / 2


def test_to_map_and_back_on_the_real_transform(s2):
    t = s2.transform
    ring = to_map(Box(0, 0, 1, 1), t)
    assert len(ring) == 5 and ring[0] == ring[-1]
    assert (443410.0, 4171780.0) in ring and (443420.0, 4171770.0) in ring  # 10 m pixels from the origin
    assert signed_area(ring) == pytest.approx(100.0)  # counterclockwise (RFC 7946), 10 m x 10 m
    rng = np.random.default_rng(0)
    for x1, y1, w, h in rng.uniform([0, 0, 0.5, 0.5], [380, 380, 200, 200], size=(200, 4)):
        box = Box(x1, y1, x1 + w, y1 + h, "x")
        back = to_pixels(to_map(box, t), t)
        assert max(abs(a - b) for a, b in zip(back.xyxy, box.xyxy)) < 1e-6
    rotated = Affine.translation(1000, 2000) @ Affine.rotation(30) @ Affine.scale(2, -2)
    back = to_pixels(to_map(Box(3, 4, 50, 60), rotated), rotated)
    assert back.xyxy == pytest.approx((3, 4, 50, 60), abs=1e-6)


def test_nms_per_category():
    boxes = [Box(0, 0, 10, 10, "ship"), Box(1, 1, 11, 11, "ship"), Box(1, 1, 11, 11, "harbor"),
             Box(50, 50, 60, 60, "ship"), Box(0, 0, 10, 10, None), Box(0.5, 0, 10.5, 10, None)]
    assert nms(boxes) == [0, 2, 3, 4]  # first of overlapping same-label boxes; other labels kept
    assert nms(boxes, scores=[0.2, 0.9, 0.5, 0.1, 0.3, 0.3]) == [1, 2, 3, 4]  # higher score; a tie keeps the first
    assert nms(boxes, iou_threshold=0.9) == [0, 1, 2, 3, 4]  # IoU(0, 1) = 0.68 kept, IoU(4, 5) = 0.905 not
    assert nms(boxes, iou_threshold=0.95) == [0, 1, 2, 3, 4, 5]
    assert nms([]) == []
    with pytest.raises(RemoteGLMError, match="score"):
        nms(boxes, scores=[1.0])
    with pytest.raises(RemoteGLMError, match="between 0 and 1"):
        nms(boxes, iou_threshold=1.5)


def features():
    return [{"box": Box(10, 20, 100, 80, "农田"), "properties": {"score": 0.9, "tile": 0, "answer": "农田"}},
            {"box": Box(300, 300, 500, 420, "沼泽"), "properties": {"tile": 3}},  # past the scene's edge: clipped
            {"box": Box(400, 10, 450, 50, "船"), "properties": {}}]  # wholly outside: left out


def test_geojson_in_the_scene_crs_opens_in_gdal(s2, tmp_path):
    fc = feature_collection(features(), s2.crs, transform=s2.transform, size=(s2.width, s2.height))
    assert fc["crs"] == {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32618"}}
    assert [f["properties"]["category"] for f in fc["features"]] == ["农田", "沼泽"]
    path = tmp_path / "boxes.geojson"
    write_geojson(path, fc)
    assert json.loads(path.read_text("utf-8")) == fc
    info = pyogrio.read_info(path, force_total_bounds=True)
    assert info["crs"] == "EPSG:32618" and info["features"] == 2 and info["geometry_type"] == "Polygon"
    left, bottom, right, top = (443410.0, 4171780.0 - 3840, 443410.0 + 3840, 4171780.0)  # the footprint
    x0, y0, x1, y1 = info["total_bounds"]
    assert left <= x0 < x1 <= right and bottom <= y0 < y1 <= top
    assert (x0, y1) == (443510.0, 4171580.0)  # box 1's top left: origin + (10, 20) px * 10 m
    meta, _, geometry, fields = pyogrio.raw.read(path)
    assert meta["crs"] == "EPSG:32618" and len(geometry) == 2
    assert list(meta["fields"]) == ["score", "tile", "answer", "category"]
    assert list(fields[3]) == ["农田", "沼泽"]
    for feature in fc["features"]:
        ring = feature["geometry"]["coordinates"][0]
        assert all(left <= x <= right and bottom <= y <= top for x, y in ring)
        assert signed_area(ring) > 0
        back = to_pixels(ring, s2.transform)
        assert 0 <= back.x1 < back.x2 <= s2.width and 0 <= back.y1 < back.y2 <= s2.height


def test_geojson_in_wgs84(s2, tmp_path):
    fc = feature_collection(features(), s2.crs, wgs84=True, transform=s2.transform, size=(s2.width, s2.height))
    assert "crs" not in fc  # RFC 7946: lon/lat on WGS 84 is the default
    path = tmp_path / "wgs84.geojson"
    write_geojson(path, fc)
    info = pyogrio.read_info(path, force_total_bounds=True)
    assert info["crs"] == "EPSG:4326" and info["features"] == 2
    lon0, lat0, lon1, lat1 = info["total_bounds"]
    assert -75.70 < lon0 < lon1 < -75.55 and 37.62 < lat0 < lat1 < 37.72  # the Eastern Shore of Virginia
    for feature in fc["features"]:
        assert signed_area(feature["geometry"]["coordinates"][0]) > 0


def test_pixel_coordinates_without_a_crs_and_bad_input(tmp_path):
    fc = feature_collection([{"box": Box(1, 2, 3, 4, "a"), "properties": {"k": 1}}], None)
    assert "crs" not in fc
    ring = fc["features"][0]["geometry"]["coordinates"][0]
    assert sorted(map(tuple, ring[:4])) == [(1, 2), (1, 4), (3, 2), (3, 4)]
    assert fc["features"][0]["properties"] == {"k": 1, "category": "a"}
    with pytest.raises(RemoteGLMError, match="without a CRS"):
        feature_collection([], None, wgs84=True)
    with pytest.raises(RemoteGLMError, match="transform"):
        feature_collection([], "EPSG:32618")
    with pytest.raises(RemoteGLMError, match="feature 0 has no Box"):
        feature_collection([{"box": (1, 2, 3, 4)}], None)
