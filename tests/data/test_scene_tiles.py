"""``python -m remoteglm.data.importers scene``: an annotated scene -> PNG tiles and grounding records
with spatial splits.

The real scene is S1's Sentinel-2 crop (tests/fixtures/scenes/s2_crop_384.tif: 384 x 384, 10 m
pixels, EPSG:32618, origin 443410 E / 4171780 N); its boxes are written here at known map
coordinates, so their pixels on each tile are computed by hand. The split test uses a larger
synthetic GeoTIFF made here with rasterio.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_points

from remoteglm.data.importers import main
from remoteglm.data.scene_tiles import split_blocks, window_split, _edges
from remoteglm.data.tiles import windows
from remoteglm.errors import RemoteGLMError
from remoteglm.train.data import training_records

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "scenes" / "s2_crop_384.tif"
X0, Y0, GSD = 443410.0, 4171780.0, 10.0  # the fixture's transform (checked below)
# pixel boxes on the scene, by hand: map x = X0 + 10 * col, map y = Y0 - 10 * row
SHIP = (50, 40, 80, 70)
FARM = (300, 200, 340, 230)


def map_ring(box, to=None):
    """The box's corners in EPSG:32618 (or reprojected ``to`` another CRS), a closed ring."""
    x1, y1, x2, y2 = box
    xs = [X0 + GSD * x for x in (x1, x2, x2, x1, x1)]
    ys = [Y0 - GSD * y for y in (y1, y1, y2, y2, y1)]
    if to:
        xs, ys = warp_points("EPSG:32618", to, xs, ys)
    return [[x, y] for x, y in zip(xs, ys)]


def geojson(path: Path, boxes, crs: str | None = "EPSG:32618", member: bool = True) -> Path:
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"category": cat}, "geometry": {"type": "Polygon",
                                                                          "coordinates": [map_ring(b, crs)]}}
        for cat, b in boxes]}
    if member:
        fc["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{crs.split(':')[1]}"}}
    path.write_text(json.dumps(fc))
    return path


def run(capsys, *args) -> tuple[int, str]:
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


@pytest.fixture
def names(tmp_path: Path) -> Path:
    p = tmp_path / "names.json"
    p.write_text(json.dumps({"oyster_farm": "牡蛎养殖场"}, ensure_ascii=False))
    return p


def records_by_window(out: Path, name: str, split: str = "train") -> dict[tuple, list[dict]]:
    by: dict[tuple, list[dict]] = {}
    for r in json.loads((out / f"{name}_{split}.json").read_text()):
        by.setdefault(tuple(r["source"]["window"]), []).append(r)
    return by


def boxes_on(recs: list[dict]) -> set[tuple]:
    return {tuple(round(v) for v in b[:4]) for r in recs for b in r["prompt_boxes"] + r["label_boxes"]}


@pytest.mark.parametrize("form", ["utm_member", "wgs84", "utm19_member", "pixels"])
def test_boxes_land_on_the_hand_computed_tile_pixels(tmp_path, capsys, names, form):
    with rasterio.open(FIXTURE) as src:
        assert src.transform == from_origin(X0, Y0, GSD, GSD) and src.crs.to_epsg() == 32618
    objects = [("ship", SHIP), ("oyster_farm", FARM)]
    if form == "pixels":
        boxes = tmp_path / "boxes.json"
        boxes.write_text(json.dumps([{"box": list(b), "category": c} for c, b in objects]))
    elif form == "wgs84":  # RFC 7946: no crs member, lon/lat
        boxes = geojson(tmp_path / "boxes.geojson", objects, "EPSG:4326", member=False)
    else:
        boxes = geojson(tmp_path / "boxes.geojson", objects, "EPSG:32619" if form == "utm19_member" else "EPSG:32618")
    out = tmp_path / "data" / "s2_grounding"
    rc, err = run(capsys, "scene", "--scene", FIXTURE, "--boxes", boxes, "--names", names, "--name", "s2",
                  "--out_dir", out, "--tile", 128, "--overlap", 16, "--split_block", 384)
    assert rc == 0, err
    by = records_by_window(out, "s2")  # one block: all train
    # windows start at 0, 112, 224, 256 on both axes (step 112, the last ends on the edge)
    assert set(by) == {(0, 0, 128, 128), (224, 112, 352, 240), (256, 112, 384, 240)}
    expected = {(0, 0, 128, 128): (50, 40, 80, 70),  # the ship, whole in the first tile
                (224, 112, 352, 240): (300 - 224, 200 - 112, 340 - 224, 230 - 112),
                (256, 112, 384, 240): (300 - 256, 200 - 112, 340 - 256, 230 - 112)}
    for window, recs in by.items():
        got = [b for r in recs for b in r["prompt_boxes"] + r["label_boxes"]]
        assert got and all(np.allclose(b[:4], expected[window], atol=1.0) for b in got), (window, got)
        tile = out / recs[0]["img"]
        assert tile.parent == out / "tiles" and tile.name == f"s2_crop_384__{window[0]}_{window[1]}.png"
        with Image.open(tile) as im:
            assert im.mode == "RGB" and im.size == (128, 128)
        assert {r["kind"] for r in recs} >= {"refer", "identify", "detect", "count", "grounded"}
        assert recs[0]["source"]["img"] == os.path.relpath(FIXTURE, out)
    assert any("牡蛎养殖场" in r["prompt"] + r["label"] for r in by[(256, 112, 384, 240)])
    assert "2 boxes" in err and "3 tiles with tasks" in err


def synthetic(path: Path, size: int = 1024, crs: str | None = "EPSG:32618") -> Path:
    data = np.random.default_rng(0).integers(1, 4000, (3, size, size), dtype=np.uint16)
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint16", nodata=0,
                   transform=from_origin(X0, Y0, GSD, GSD), tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate")
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def grid_boxes(path: Path, size: int = 1024, step: int = 64) -> Path:
    path.write_text(json.dumps([{"box": [x + 20, y + 20, x + 40, y + 40], "category": "ship"}
                                for y in range(0, size, step) for x in range(0, size, step)]))
    return path


def overlaps(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_no_val_or_test_area_in_any_train_tile(tmp_path, capsys):
    scene, boxes = synthetic(tmp_path / "big.tif"), grid_boxes(tmp_path / "boxes.json")
    out = tmp_path / "data" / "big_grounding"
    rc, err = run(capsys, "scene", "--scene", scene, "--boxes", boxes, "--out_dir", out, "--tile", 128,
                  "--overlap", 32, "--split_block", 256, "--val", 0.2, "--test", 0.2, "--seed", 3)
    assert rc == 0, err
    tiles = {split: {tuple(r["source"]["window"]) for r in json.loads((out / f"big_{split}.json").read_text())}
             for split in ("train", "val", "test")}
    assert all(tiles.values()) and sum(map(len, tiles.values())) > 40
    for a_split, a_windows in tiles.items():  # every pair of windows of two splits: no common pixel
        for b_split, b_windows in tiles.items():
            if a_split != b_split:
                assert not any(overlaps(a, b) for a in a_windows for b in b_windows), (a_split, b_split)
    # the rule itself, over every window of the scene (also those without boxes)
    blocks = split_blocks(1024, 1024, 256, 0.2, 0.2, 3)
    xs = ys = _edges(1024, 256)
    assert [s for _, s in blocks].count("test") == 3 and [s for _, s in blocks].count("val") == 3
    split_of = {w: window_split(w, blocks, xs, ys) for w in windows(1024, 1024, 128, 32)}
    kept = [(w, s) for w, s in split_of.items() if s]
    assert len(kept) < len(split_of)  # windows reaching across a split boundary are left out
    for i, (a, sa) in enumerate(kept):
        for b, sb in kept[i + 1:]:
            assert sa == sb or not overlaps(a, b)
    for w, s in kept:  # each kept window lies in blocks of its split only
        assert all(bs == s for b, bs in blocks if overlaps(w, b))
    assert set(tiles["train"]) <= {w for w, s in kept if s == "train"}

    # the records train through the usual readers: boxes on their tile, images present
    train, valid = training_records(SimpleNamespace(train_data=[out / "big_train.json"],
                                                    valid_data=[out / "big_val.json"], seed=0, image_root=None))
    assert train and valid
    for r in train[:50]:
        with Image.open(r.img) as im:
            assert all(b.x2 <= im.width and b.y2 <= im.height for b in r.prompt_boxes + r.label_boxes)
    # and the split registry holds the test tiles out: training on them is refused
    with pytest.raises(RemoteGLMError, match="held out"):
        training_records(SimpleNamespace(train_data=[out / "big_train.json", out / "big_test.json"],
                                         valid_data=None, seed=0, image_root=None))


def snapshot(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_rerun_writes_nothing_and_a_changed_input_rewrites_only_what_changed(tmp_path, capsys):
    scene, boxes = synthetic(tmp_path / "s.tif", 512), grid_boxes(tmp_path / "b.json", 512, 128)
    out = tmp_path / "data" / "s_grounding"
    args = ["scene", "--scene", scene, "--boxes", boxes, "--out_dir", out, "--tile", 128, "--overlap", 0,
            "--split_block", 128]
    assert run(capsys, *args)[0] == 0
    before, registry = snapshot(out), (tmp_path / "data" / "splits.json").stat().st_mtime_ns
    rc, err = run(capsys, *args)
    assert rc == 0 and err.startswith("up to date:") and err.count("\n") == 1
    assert snapshot(out) == before and (tmp_path / "data" / "splits.json").stat().st_mtime_ns == registry
    os.utime(boxes)  # touched, same content: rebuilt, same bytes, no tile rewritten
    rc, err = run(capsys, *args)
    assert rc == 0 and "up to date" not in err.splitlines()[0]
    tiles = {p: t for p, t in before.items() if p.parent.name == "tiles"}
    assert tiles and {p: t for p, t in snapshot(out).items() if p.parent.name == "tiles"} == tiles
    assert run(capsys, *args)[1].startswith("up to date:")
    assert {p.name for p in out.glob("s_*.json")} == {"s_train.json", "s_val.json", "s_test.json"}
    rc, err = run(capsys, *args, "--val", 0, "--test", 0)  # one split now: the others' files go
    assert rc == 0 and {p.name for p in out.glob("s_*.json")} == {"s_train.json"}, err


def one_line_error(capsys, tmp_path, *args) -> str:
    out = tmp_path / "data" / "x_grounding"
    rc, err = run(capsys, "scene", *args, "--out_dir", out, "--tile", 128, "--overlap", 0)
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists() and not (tmp_path / "data" / "splits.json").exists()
    return err


def test_bad_inputs_are_one_line_each_and_write_nothing(tmp_path, capsys):
    scene = synthetic(tmp_path / "s.tif", 256)
    feature = lambda geom, cat="ship": {"type": "Feature", "properties": {"category": cat}, "geometry": geom}  # noqa
    inside = {"type": "Polygon", "coordinates": [map_ring((10, 10, 40, 40))]}
    cases = {
        "not a raster": (tmp_path / "x.txt", [feature(inside)]),
        "lies outside the 256 x 256 scene": (scene, [feature(inside), feature(
            {"type": "Polygon", "coordinates": [map_ring((1000, 1000, 1040, 1040))]})]),
        "has no area": (scene, [feature({"type": "Point", "coordinates": map_ring((5, 5, 6, 6))[0]})]),
        "no Chinese name": (scene, [feature(inside, "oyster_farm")]),
        "no category": (scene, [{"type": "Feature", "properties": {}, "geometry": inside}]),
    }
    (tmp_path / "x.txt").write_text("not an image")
    for why, (scene_file, features) in cases.items():
        boxes = tmp_path / "b.geojson"
        boxes.write_text(json.dumps({"type": "FeatureCollection", "features": features,
                                     "crs": {"type": "name", "properties": {"name": "EPSG:32618"}}}))
        assert why in one_line_error(capsys, tmp_path, "--scene", scene_file, "--boxes", boxes)
    err = one_line_error(capsys, tmp_path, "--scene", synthetic(tmp_path / "nocrs.tif", 256, None), "--boxes", boxes)
    assert "has no CRS" in err and "pixels" in err
    boxes.write_text(json.dumps({"type": "FeatureCollection", "features": [feature(inside)],
                                 "crs": {"type": "name", "properties": {"name": "EPSG:999999"}}}))
    assert "a CRS GDAL does not know" in one_line_error(capsys, tmp_path, "--scene", scene, "--boxes", boxes)
    boxes.write_text(json.dumps({"boxes": []}))
    assert "neither a GeoJSON" in one_line_error(capsys, tmp_path, "--scene", scene, "--boxes", boxes)
    boxes.write_text(json.dumps([{"box": [1, 2, 3], "category": "ship"}]))
    assert "item 0" in one_line_error(capsys, tmp_path, "--scene", scene, "--boxes", boxes)
    boxes.write_text(json.dumps([{"box": [120, 120, 136, 136], "category": "ship"}]))  # across the blocks' edge
    assert "no tile of" in one_line_error(capsys, tmp_path, "--scene", scene, "--boxes", boxes, "--split_block", 128,
                                          "--val", 0.3, "--test", 0.3)
    assert "--split_block 0" in one_line_error(capsys, tmp_path, "--scene", scene, "--boxes", boxes,
                                               "--split_block", 0)
    assert "--bands" in one_line_error(capsys, tmp_path, "--scene", scene, "--boxes", boxes, "--bands", "3,x")
    assert "out of range" in one_line_error(capsys, tmp_path, "--scene", scene, "--boxes", boxes, "--bands", "5,2,1")


def test_skip_bad_boxes_leaves_them_out_and_counts_them(tmp_path, capsys):
    scene = synthetic(tmp_path / "s.tif", 256)
    boxes = tmp_path / "b.json"
    boxes.write_text(json.dumps([{"box": [10, 10, 40, 40], "category": "ship"},
                                 {"box": [300, 300, 340, 340], "category": "ship"},
                                 {"box": [50, 50, 50, 80], "category": "ship"},
                                 {"box": [240, 100, 270, 130], "category": "ship"}]))  # overhangs: clipped
    out = tmp_path / "data" / "s_grounding"
    rc, err = run(capsys, "scene", "--scene", scene, "--boxes", boxes, "--out_dir", out, "--tile", 256,
                  "--overlap", 0, "--skip_bad_boxes")
    assert rc == 0, err
    assert "2 boxes (1 clipped to its edge), 2 left out (--skip_bad_boxes" in err
    recs = json.loads((out / "s_train.json").read_text())
    assert boxes_on(recs) == {(10, 10, 40, 40), (240, 100, 256, 130)}
