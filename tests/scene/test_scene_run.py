"""``remoteglm scene`` (remoteglm/serve/scene_run.py, scene_answers.py, remoteglm/scene/journal.py,
remoteglm/commands/scene.py):
tiled answers over a scene with the real tiny VisualGLM, GeoJSON read back with GDAL's OGR
(pyogrio), quicklook boxes and GeoJSON features on the same ground, resume after SIGKILL, one-line
errors. The merging of boxes across tiles is tested on hand-made answers in VisualGLM's own box
text (its codec), since an untrained tiny model gives no boxes to merge."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from remoteglm.boxes import Box

ROOT = Path(__file__).resolve().parents[2]
CROP = ROOT / "tests" / "fixtures" / "scenes" / "s2_crop_384.tif"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---- helpers -------------------------------------------------------------------------------------
def make_tif(path: Path, width: int, height: int, *, crs="EPSG:32618", nodata=0, empty=None, block=256, seed=0):
    """A tiled DEFLATE 4-band uint16 GeoTIFF with noise; ``empty(y, x)`` masks rows/cols to nodata."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    data = rng.integers(200, 4000, size=(4, height, width), dtype=np.uint16)
    if empty is not None:
        data[(slice(None), *empty) if isinstance(empty, tuple) else (slice(None), empty)] = nodata
    profile = dict(driver="GTiff", width=width, height=height, count=4, dtype="uint16", nodata=nodata, tiled=True,
                   blockxsize=block, blockysize=block, compress="deflate", transform=from_origin(500000, 4200000, 10, 10))
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def wkb_ring(wkb: bytes) -> list[tuple[float, float]]:
    """The outer ring of a WKB Polygon (OGC Simple Features, little or big endian)."""
    end = "<" if wkb[0] == 1 else ">"
    kind, rings, n = struct.unpack_from(end + "III", wkb, 1)
    assert kind == 3 and rings >= 1
    xy = struct.unpack_from(end + "d" * (2 * n), wkb, 13)
    return list(zip(xy[0::2], xy[1::2]))


def read_ogr(path: Path):
    import pyogrio.raw

    meta, _, geometry, fields = pyogrio.raw.read(path)
    cols = {name: list(values) for name, values in zip(meta["fields"], fields)}
    return meta, [wkb_ring(g) for g in geometry], cols


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "remoteglm", "scene", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=timeout)


def journal_lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "tiles.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    from remoteglm.serve.loading import load_engine

    return load_engine(tiny_checkpoint, device="cpu", progress=False)[0]


# ---- prompts: asked in the training records' words ---------------------------------------------
def test_tiles_are_asked_in_the_training_records_words():
    from remoteglm.data.annotations import AnnotatedImage, Annotation
    from remoteglm.data.instructions import classify_prompt
    from remoteglm.data.referring import grounding_tasks
    from remoteglm.model.prompt import DEFAULT_PROMPT
    from remoteglm.serve.scene_answers import scene_task

    image = AnnotatedImage(image="a.png", width=200, height=200, objects=(
        Annotation(box=Box(10, 10, 40, 40), category="storagetank"), Annotation(box=Box(150, 150, 190, 190), category="storagetank")))
    records = {t.kind: t.question for t in grounding_tasks(image)}
    refer = [t.question for t in grounding_tasks(image) if t.kind == "refer"]
    assert scene_task("detect", category="storagetank").prompt == records["detect"] == "找出图中所有的储油罐。"
    assert scene_task("detect", category="储油罐").prompt == records["detect"]
    assert scene_task("refer", query="左上角的储油罐").prompt in refer
    assert scene_task("caption").prompt == DEFAULT_PROMPT
    assert scene_task("classify", classes="UCM").prompt == classify_prompt(scene_task("classify").classes)


def test_classify_tiles_take_the_class_their_answer_names():
    from remoteglm.serve.scene_answers import counts, scene_task, tile_features

    task = scene_task("classify", classes="农田,森林,中密度住宅区")
    answers = ["森林。", " 农田 ", "这是一片森林", "中密度住宅区", "森林"]
    recs = [{"tile": k, "window": [0, 0, 10, 10], "status": "done", "answer": a} for k, a in enumerate(answers)]
    features = tile_features(recs, task, (10, 10))
    assert [f["properties"]["category"] for f in features] == ["森林", "农田", None, "中密度住宅区", "森林"]
    assert counts(features) == {"森林": 2, "农田": 1, None: 1, "中密度住宅区": 1}


# ---- pure: tile answers -> merged features -> GeoJSON -------------------------------------------
def test_answers_in_the_family_box_text_merge_across_overlaps_and_land_on_the_map(tiny_checkpoint, tmp_path):
    """Windows of the 384 fixture at 224/28 -> x, y starts 0 and 160. Each tile was read at half
    size (112 px, as for a model whose input is half the tile); answers in VisualGLM's box text."""
    from remoteglm.registry import family_of
    from remoteglm.serve.scene_answers import scene_task, tile_features, to_scene
    from remoteglm.scene.geo import feature_collection, to_pixels, write_geojson
    from remoteglm.scene.raster import open_scene
    from remoteglm.serve.grounding import answer_boxes

    codec = family_of(tiny_checkpoint).box_codec(tiny_checkpoint)
    task = scene_task("detect", category="storagetank")
    a = Box(170, 40, 215, 90)         # whole in tiles 0 and 1
    b = Box(200, 100, 262, 150)        # cut by tile 0's right edge (x 224), whole in tile 1
    c = Box(300, 300, 340, 330)        # only in tile 3
    tiles = {0: (0, 0, 224, 224), 1: (160, 0, 384, 224), 3: (160, 160, 384, 384)}
    seen = {0: [a, b], 1: [a, b], 3: [c]}
    records = []
    for k, win in tiles.items():
        local = [Box((bx.x1 - win[0]) / 2, (bx.y1 - win[1]) / 2, (bx.x2 - win[0]) / 2, (bx.y2 - win[1]) / 2, "储油罐")
                 for bx in seen[k]]
        text = "图中有" + codec.encode(local, (112, 112))
        boxes, unread = answer_boxes(codec, text, (112, 112))
        assert unread == 0
        scene_boxes = to_scene(boxes, win, (112, 112))
        records.append({"tile": k, "window": list(win), "status": "done", "answer": text,
                        "boxes": [list(x.xyxy) for x in scene_boxes]})
    records.append({"tile": 2, "window": [0, 160, 224, 384], "status": "skipped", "valid": 0.0})
    features = tile_features(records, task, (384, 384))
    assert [f["properties"]["tile"] for f in features] == [0, 1, 3]  # a: the two tiles' boxes merged; b: the cut box yields to the whole one
    for want in (a, b, c):
        assert any(abs(f["box"].x1 - want.x1) < 2 and abs(f["box"].x2 - want.x2) < 2
                   and abs(f["box"].y1 - want.y1) < 2 and abs(f["box"].y2 - want.y2) < 2 for f in features), want
    assert all(f["properties"]["category"] == "储油罐" for f in features)

    with open_scene(CROP) as scene:
        fc = feature_collection(features, scene.crs, transform=scene.transform, size=(384, 384))
        write_geojson(tmp_path / "s.geojson", fc)
        meta, rings, cols = read_ogr(tmp_path / "s.geojson")
        assert "32618" in meta["crs"] and cols["category"] == ["储油罐"] * 3
        left, top = scene.transform @ (0, 0)
        right, bottom = scene.transform @ (384, 384)
        for ring, f in zip(rings, fc["features"]):
            assert all(left <= x <= right and bottom <= y <= top for x, y in ring)
            back = to_pixels(ring, scene.transform)
            want = next(g["box"] for g in features if g["properties"]["answer"] == f["properties"]["answer"]
                        and abs(g["box"].x1 - back.x1) < 1e-6)
            assert max(abs(p - q) for p, q in zip(back.xyxy, want.xyxy)) < 1e-6


# ---- end to end with the real tiny model -----------------------------------------------------
def test_caption_run_on_the_real_crop_reads_back_with_ogr_inside_the_footprint(tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    r = run_cli("--from_pretrained", tiny_checkpoint, "--device", "cpu", "--scene", CROP, "--task", "caption",
                "--out", out, "--max_new_tokens", 8)
    assert r.returncode == 0, r.stderr
    assert "tile/s" in r.stderr or "tile]" in r.stderr  # the progress bar over tiles
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert (res["tiles"], res["tile"], res["overlap"], res["asked"]) == (4, 224, 28, 4)
    meta, rings, cols = read_ogr(out / "scene.geojson")
    assert "32618" in meta["crs"] and len(rings) == 4 and cols["tile"] == [0, 1, 2, 3]
    assert all(isinstance(t, str) for t in cols["answer"])
    for ring in rings:  # each footprint is its tile's window, on the map
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        assert 443410 <= min(xs) and max(xs) <= 443410 + 3840 and 4171780 - 3840 <= min(ys) and max(ys) <= 4171780
        assert round(max(xs) - min(xs)) == 2240
    summary = (out / "summary.txt").read_text(encoding="utf-8")
    assert summary.startswith("场景概览：") and "共 4 个图块：回答 4 个" in summary
    from PIL import Image

    assert Image.open(out / "quicklook.png").size == (384, 384)
    # --wgs84: the same run's answers, lon/lat (Virginia's Eastern Shore), nothing asked again
    r = run_cli("--from_pretrained", tiny_checkpoint, "--device", "cpu", "--scene", CROP, "--task", "caption",
                "--out", out, "--max_new_tokens", 8, "--wgs84")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "result.json").read_text())["asked"] == 0
    meta, rings, _ = read_ogr(out / "scene.geojson")
    assert all(-76 < x < -75 and 37 < y < 38.5 for ring in rings for x, y in ring)


def test_quicklook_boxes_and_geojson_features_denote_the_same_ground(engine, tiny_checkpoint, tmp_path):
    """Answers journalled by hand (boxes through the codec), then the real job finishes the run:
    it asks only the overview and draws; each GeoJSON polygon taken back through the transform and
    scaled to the quicklook lands on the rectangle drawn there."""
    from PIL import Image

    from remoteglm.registry import family_of
    from remoteglm.serve.scene_answers import scene_task, to_scene
    from remoteglm.scene.geo import to_pixels
    from remoteglm.scene.journal import Journal
    from remoteglm.scene.raster import open_scene
    from remoteglm.serve.scene_run import answer_scene, check_job
    from remoteglm.serve.grounding import COLOURS, answer_boxes

    src = make_tif(tmp_path / "s.tif", 1500, 1000, block=256)
    out = tmp_path / "out"
    task = scene_task("detect", category="ship")
    opts = dict(out_dir=out, tile=600, overlap=100, model="tiny")
    job = check_job(src, task, **opts)
    from remoteglm.data.tiles import windows

    grid = windows(1500, 1000, 600, 100)
    codec = family_of(tiny_checkpoint).box_codec(tiny_checkpoint)
    ships = {0: Box(100, 150, 400, 380), 5: Box(1050, 600, 1400, 900)}
    journal = Journal.read(out, job.settings)
    journal.start()
    for k, win in enumerate(grid):
        rec = {"tile": k, "window": list(win), "status": "done", "answer": "无", "boxes": []}
        if k in ships:
            s = ships[k]
            local = Box(s.x1 - win[0], s.y1 - win[1], s.x2 - win[0], s.y2 - win[1])
            rec["answer"] = codec.encode([Box(*(v * 224 / 600 for v in local.xyxy))], (224, 224))
            boxes, _ = answer_boxes(codec, rec["answer"], (224, 224))
            rec["boxes"] = [list(b.xyxy) for b in to_scene(boxes, win, (224, 224))]
        journal.add(rec)
    journal.flush()
    res = answer_scene(engine, src, task, **opts)
    assert (res.asked, res.reused, res.features) == (0, len(grid), 2)
    meta, rings, cols = read_ogr(out / "scene.geojson")
    ql = np.asarray(Image.open(out / "quicklook.png").convert("RGB"))
    with open_scene(src) as scene:
        sx, sy = ql.shape[1] / scene.width, ql.shape[0] / scene.height
        for i, ring in enumerate(rings):
            px = to_pixels(ring, scene.transform)
            assert any(max(abs(p - q) for p, q in zip(px.xyxy, s.xyxy)) < 3 for s in ships.values())
            colour = np.array([int(COLOURS[i][j:j + 2], 16) for j in (1, 3, 5)])
            x1, y1, x2, y2 = px.x1 * sx, px.y1 * sy, px.x2 * sx, px.y2 * sy
            row = np.flatnonzero((ql[round((y1 + y2) / 2)] == colour).all(axis=1))
            col = np.flatnonzero((ql[:, round((x1 + x2) / 2)] == colour).all(axis=1))
            assert abs(row.min() - x1) <= 2 and abs(row.max() - x2) <= 2, (row, x1, x2)
            assert abs(col.min() - y1) <= 2 and abs(col.max() - y2) <= 2, (col, y1, y2)


def test_resume_after_sigkill_asks_only_the_unfinished_tiles(tiny_checkpoint, tmp_path):
    src = make_tif(tmp_path / "big.tif", 1024, 1024, block=128)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "remoteglm", "scene", "--from_pretrained", str(tiny_checkpoint), "--device", "cpu",
            "--scene", str(src), "--task", "caption", "--tile", "64", "--overlap", "0", "--batch_size", "2",
            "--max_new_tokens", "4", "--out", str(out)]
    p = subprocess.Popen(args, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            path = out / "tiles.jsonl"
            if path.is_file() and path.read_bytes().count(b'"status":"done"') >= 10:
                break
            assert p.poll() is None, "the run ended before it could be killed"
            time.sleep(0.005)
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    assert p.returncode == -signal.SIGKILL
    before = {r["tile"] for r in journal_lines(out) if r.get("status") == "done"}
    assert 10 <= len(before) < 256
    with open(out / "tiles.jsonl", "ab") as f:  # a line torn by the kill
        f.write(b'{"tile":255,"window":[960,960,10')
    r = subprocess.run(args, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "result.json").read_text())
    assert (res["tiles"], res["reused"], res["asked"]) == (256, len(before), 256 - len(before))
    lines = journal_lines(out)  # the torn line was cut off; each tile answered once, by one run
    tiles = [r for r in lines if "tile" in r]
    assert sorted(r["tile"] for r in tiles) == list(range(256))
    assert {r["tile"] for r in tiles if r["run"] == 1} == before
    assert sum(r["run"] == 2 for r in tiles) == 256 - len(before)


def test_a_plain_png_is_answered_in_pixel_coordinates_said_once(tiny_checkpoint, tmp_path):
    from PIL import Image

    png = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 500, 3), dtype=np.uint8)).save(png)
    out = tmp_path / "out"
    r = run_cli("--from_pretrained", tiny_checkpoint, "--device", "cpu", "--scene", png, "--task", "classify",
                "--classes", "农田,森林,住宅区", "--out", out, "--max_new_tokens", 4)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("no coordinate system") == 1 and "NotGeoreferenced" not in r.stderr, r.stderr
    fc = json.loads((out / "scene.geojson").read_text(encoding="utf-8"))
    assert "crs" not in fc and len(fc["features"]) == 6  # 224 tiles of 500 x 300: x 0, 196, 276; y 0, 76
    xs = [x for f in fc["features"] for x, _ in f["geometry"]["coordinates"][0]]
    ys = [y for f in fc["features"] for _, y in f["geometry"]["coordinates"][0]]
    assert (min(xs), max(xs), min(ys), max(ys)) == (0, 500, 0, 300)
    assert "像素坐标" in (out / "summary.txt").read_text(encoding="utf-8")
    r = run_cli("--from_pretrained", tiny_checkpoint, "--scene", png, "--task", "caption", "--out", tmp_path / "o2",
                "--wgs84")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--wgs84" in r.stderr


# ---- one line each, before the model loads or anything is written -----------------------------
def _one_line_error(capsys, argv, *want):
    from remoteglm.commands.scene import main

    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and err.startswith("error: ") and "Traceback" not in err, err
    for w in want:
        assert w in err, err
    return err


def test_bad_input_is_one_line_and_writes_nothing(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--from_pretrained", str(tiny_checkpoint), "--out", str(out)]
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    _one_line_error(capsys, base + ["--scene", str(text), "--task", "caption"], "notes.tif")
    _one_line_error(capsys, base + ["--scene", str(CROP), "--task", "caption", "--bands", "1,2,9"], "band 9", "4 band")
    empty = make_tif(tmp_path / "empty.tif", 300, 300, empty=(slice(None), slice(None)))
    _one_line_error(capsys, base + ["--scene", str(empty), "--task", "caption"], "all-nodata")
    _one_line_error(capsys, base + ["--scene", str(CROP), "--task", "detect"], "--category")
    _one_line_error(capsys, base + ["--scene", str(CROP), "--task", "detect", "--category", "spaceship"], "spaceship")
    _one_line_error(capsys, base + ["--scene", str(CROP), "--task", "refer"], "--query")
    _one_line_error(capsys, base + ["--scene", str(CROP), "--task", "caption", "--tile", "64", "--overlap", "64"],
                    "--overlap")
    _one_line_error(capsys, ["--from_pretrained", str(tmp_path / "nomodel"), "--out", str(out), "--scene", str(CROP)])
    assert not out.exists()


def test_other_arguments_on_a_run_folder_are_refused_in_one_line(tiny_checkpoint, tmp_path, capsys):
    from remoteglm.scene.journal import Journal
    from remoteglm.serve.scene_run import check_job

    out = tmp_path / "out"
    model = {"path": str(Path(tiny_checkpoint).resolve()), "quant": None, "min_pixels": None, "max_pixels": None}
    job = check_job(CROP, "caption", out_dir=out, model=model)
    Journal.read(out, job.settings).start()
    before = (out / "tiles.jsonl").read_bytes()
    err = _one_line_error(capsys, ["--from_pretrained", str(tiny_checkpoint), "--out", str(out), "--scene", str(CROP),
                                   "--task", "detect", "--category", "ship"], "other settings", "fresh --out")
    assert "task" in err and (out / "tiles.jsonl").read_bytes() == before


def test_a_corrupt_tile_is_journalled_failed_the_run_goes_on_and_says_rerun(tiny_checkpoint, tmp_path, capsys):
    import rasterio

    from remoteglm.commands.scene import main

    src = make_tif(tmp_path / "c.tif", 512, 512, block=256)
    with rasterio.open(src) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
    with open(src, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 64)
    out = tmp_path / "out"
    rc = main(["--from_pretrained", str(tiny_checkpoint), "--device", "cpu", "--scene", str(src), "--task", "caption",
               "--out", str(out), "--max_new_tokens", "4"])
    err = capsys.readouterr().err
    assert rc == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "corrupt tile" in last and "rerun" in last
    recs = [r for r in journal_lines(out) if "tile" in r]
    failed = [r for r in recs if r["status"] == "failed"]
    assert failed and all(r["window"][2] > 256 and r["window"][3] > 256 for r in failed)
    assert any(r["status"] == "done" for r in recs)
    assert json.loads((out / "result.json").read_text())["failed"] == len(failed)


def test_nodata_tiles_are_skipped_and_skip_empty_skips_sparse_ones(engine, tmp_path):
    from remoteglm.serve.scene_run import answer_scene

    rows = np.zeros((448, 448), dtype=bool)
    rows[:, 224:] = True          # the right half is nodata
    rows[:50, :224] = True        # and the top of the left half
    src = make_tif(tmp_path / "half.tif", 448, 448, empty=rows)
    res = answer_scene(engine, src, "caption", out_dir=tmp_path / "a", tile=224, overlap=0, max_new_tokens=2)
    assert (res.tiles, res.asked, res.skipped) == (4, 2, 2)
    res = answer_scene(engine, src, "caption", out_dir=tmp_path / "b", tile=224, overlap=0, max_new_tokens=2,
                       skip_empty=0.9)
    assert (res.tiles, res.asked, res.skipped) == (4, 1, 3)
