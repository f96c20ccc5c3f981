"""An annotated scene -> grounding fine-tune files with SPATIAL splits
(``python -m remoteglm.data.importers scene``).

The scene (GeoTIFF, COG, JPEG 2000: :mod:`remoteglm.scene.raster`) is cut by the one tiler
(:func:`remoteglm.data.tiles.tile`: boxes clipped and moved, objects mostly outside a window dropped
there); each tile with a task is stretched to 8-bit RGB, written as a PNG under ``OUT/tiles/``, and
gives the rule-built :func:`~remoteglm.data.referring.grounding_tasks` as records with boxes on the
tile and a ``source`` (scene, window), as the detection importer writes them.

Boxes (``--boxes``):
- a GeoJSON FeatureCollection; each feature's geometry (polygon, point, line, multi-, collection)
  becomes the box around all its coordinates in scene pixels (:func:`remoteglm.scene.geo.to_pixels`,
  the inverse of the scene's affine transform); its category is the property ``category`` (else
  ``class``, ``label``). Coordinates are in the CRS its ``crs`` member names (GeoJSON 1.0, section
  3.1, geojson.org/geojson-spec.html: ``{"type": "name", "properties": {"name":
  "urn:ogc:def:crs:EPSG::32618"}}``, as GDAL writes it), else WGS84 longitude/latitude (RFC 7946,
  section 4); another CRS than the scene's is reprojected with ``rasterio.warp.transform_geom``.
  A scene without a CRS cannot place map coordinates: one line.
- a JSON list ``[{"box": [x1, y1, x2, y2], "category": "ship"}, ...]`` in scene pixels.
A box overhanging the scene's edge is clipped to it; one with no area (a point, a line) or wholly
outside the scene is one line naming it, as a box outside its image in the detection importer
(``skip_bad_boxes``: left out and counted). A category with no Chinese name is one line.

Spatial splits: the scene is divided into a grid of blocks of about ``split_block`` pixels a side
(default two tiles; equal blocks, no thin remainder), ordered by a seeded hash of their grid
position: the first ``round(n * test)`` (at least one while a train block is left) are test, the
next ``round(n * val)`` val, the rest train. A tile window takes the split of the blocks it overlaps
when they all have one; a window reaching into blocks of two splits (also through the tile overlap)
is left out. So every window lies in the union of its split's blocks, those unions do not overlap,
and no val or test pixel is in any train tile (nor a val pixel in a test tile). Larger blocks leave
fewer windows out and keep test areas further from train.
The tiles are registered in the split registry (:mod:`~remoteglm.data.splits`), their split the
source's own (official) one, so training's no-leak check sees them; the registry knows images by
their bytes, so the tiles are written (each only when its bytes change) before it is asked, and all
input checks come before that.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import math
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from ..boxes import Box
from ..errors import RemoteGLMError
from ..io import check_writable, read_json, write_bytes_atomic
from .annotations import AnnotatedImage, Annotation, number
from .build import check_no_leak, image_path
from .datasets import SPLITS
from .grounding_import import category_names
from .import_summary import IMPORT_VERSION, ImportSummary, write_if_changed
from .jobs import STAMP, build_stamp, say
from .referring import grounding_tasks
from .rerun import RerunStamp, input_key
from .splits import Registry, Source, SplitCheck, default_registry
from .tiles import Window, tile, windows

TILE, OVERLAP, BLOCK_TILES = 512, 64, 2
CATEGORY_KEYS = ("category", "class", "label")


@dataclass
class SceneTilesConfig:
    scene: Path
    boxes: Path  # GeoJSON FeatureCollection or a JSON list of pixel boxes
    name: str | None = None  # default: the scene file's stem
    out_dir: Path | None = None  # default data/<name>_grounding
    tile: int = TILE
    overlap: int = OVERLAP
    bands: str | None = None  # "3,2,1"; default from the band descriptions
    stretch: str = "percentile"
    split_block: int | None = None  # pixels; default BLOCK_TILES tiles
    val: float = 0.1
    test: float = 0.1
    seed: int = 0
    names: Path | None = None  # JSON {category: Chinese name}
    splits: Path | None = None  # the split registry; default: splits.json beside out_dir
    skip_bad_boxes: bool = False
    command: str = ""


@dataclass
class TileUnit:
    path: Path  # OUT/tiles/<stem>__x_y.png
    split: str
    records: list


# ---- boxes ---------------------------------------------------------------------------------------
def _coords(geom, where: str, path: Path) -> list[tuple[float, float]]:
    """Every (x, y) of a GeoJSON geometry, at any nesting depth."""
    if not isinstance(geom, dict):
        raise RemoteGLMError(f"{path}: {where} has no geometry (null or not an object); give each feature a polygon")
    if geom.get("type") == "GeometryCollection":
        return [p for g in geom.get("geometries") or [] for p in _coords(g, where, path)]
    out: list[tuple[float, float]] = []
    todo = [geom.get("coordinates")]
    while todo:
        c = todo.pop()
        if isinstance(c, (list, tuple)) and len(c) >= 2 and all(isinstance(v, (int, float)) for v in c):
            out.append((number(path, where, c[0]), number(path, where, c[1])))
        elif isinstance(c, (list, tuple)):
            todo.extend(c)
        else:
            raise RemoteGLMError(f"{path}: {where}: geometry coordinates {str(c)[:60]!r} are not numbers")
    if not out:
        raise RemoteGLMError(f"{path}: {where}: the geometry has no coordinates")
    return out


def geojson_crs(fc: dict, path: Path):
    """The CRS a FeatureCollection's coordinates are in: its ``crs`` member's, else WGS84 lon/lat."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    member = fc.get("crs")
    if member is None:
        return CRS.from_epsg(4326)  # RFC 7946: longitude, latitude (rasterio keeps that axis order)
    props = member.get("properties") if isinstance(member, dict) else None
    name = (props.get("name") if member.get("type") == "name" else
            f"EPSG:{props.get('code')}" if member.get("type") == "EPSG" else None) if isinstance(props, dict) else None
    if not isinstance(name, str):
        raise RemoteGLMError(f"{path}: its 'crs' member {str(member)[:80]} names no CRS; use "
                             "{\"type\": \"name\", \"properties\": {\"name\": \"EPSG:32618\"}} or leave it out (WGS84)")
    try:
        return CRS.from_user_input(name)
    except CRSError:
        raise RemoteGLMError(f"{path}: its 'crs' member names {name!r}, a CRS GDAL does not know") from None


def _geojson_boxes(path: Path, fc: dict, scene) -> list[tuple[str, object, Box]]:
    from rasterio.warp import transform_geom

    from ..scene.geo import to_pixels

    features = fc.get("features")
    if not isinstance(features, list):
        raise RemoteGLMError(f"{path}: a FeatureCollection needs a 'features' list")
    src = geojson_crs(fc, path)
    if scene.crs is None:
        raise RemoteGLMError(f"{path}: the scene {scene.path} has no CRS, so map coordinates cannot be placed on it; "
                             "give its boxes in pixels as a JSON list [{\"box\": [x1, y1, x2, y2], \"category\": ...}]")
    out, geoms = [], []
    for i, f in enumerate(features):
        where = f"feature {i}"
        if not isinstance(f, dict) or f.get("type") != "Feature":
            raise RemoteGLMError(f"{path}: {where} is not a GeoJSON Feature object")
        props = f.get("properties") or {}
        category = next((props[k] for k in CATEGORY_KEYS if isinstance(props, dict) and k in props), None)
        _coords(f.get("geometry"), where, path)  # checked before any reprojection
        out.append((where, category, None))
        geoms.append(f["geometry"])
    if geoms and src != scene.crs:
        try:
            geoms = transform_geom(src, scene.crs, geoms)
        except Exception as e:  # GDAL/PROJ refuse: one line
            raise RemoteGLMError(f"{path}: cannot reproject its features from {src} to the scene's "
                                 f"{scene.crs} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return [(where, cat, to_pixels(_coords(g, where, path), scene.transform))
            for (where, cat, _), g in zip(out, geoms)]


def _pixel_boxes(path: Path, items: list) -> list[tuple[str, object, Box]]:
    out = []
    for i, item in enumerate(items):
        where = f"item {i}"
        b = item.get("box") if isinstance(item, dict) else None
        if not (isinstance(b, list) and len(b) == 4):
            raise RemoteGLMError(f"{path}: {where} is not {{\"box\": [x1, y1, x2, y2], \"category\": ...}} "
                                 "(pixels of the scene)")
        out.append((where, item.get("category"), Box(*(number(path, f"{where} box", v) for v in b))))
    return out


def read_scene_boxes(path: Path, scene, skip_bad: bool = False) -> tuple[list[Annotation], int, int]:
    """The annotated objects in scene pixels (clipped to the scene), how many boxes were clipped,
    and how many were left out (``skip_bad``: no area, or wholly outside the scene)."""
    data = read_json(path, "--boxes file")
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        raw = _geojson_boxes(path, data, scene)
    elif isinstance(data, list):
        raw = _pixel_boxes(path, data)
    else:
        raise RemoteGLMError(f"{path}: neither a GeoJSON FeatureCollection nor a JSON list of "
                             "{\"box\": [x1, y1, x2, y2], \"category\": ...} pixel boxes")
    objects, bad, clipped = [], [], 0
    w, h = scene.width, scene.height
    for where, category, box in raw:
        if not (isinstance(category, str) and category.strip()):
            raise RemoteGLMError(f"{path}: {where} has no category (a non-empty string property "
                                 f"{' / '.join(CATEGORY_KEYS)})")
        x1, y1, x2, y2 = box.xyxy
        if not (x1 < x2 and y1 < y2):
            bad.append(f"{where} ({category}): its box ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}) in scene pixels has no "
                       "area (a point or a line?); give a polygon")
            continue
        inside = box.clip(w, h)
        if not inside.area:
            bad.append(f"{where} ({category}): its box ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}) in scene pixels lies "
                       f"outside the {w} x {h} scene; is it another scene's?")
            continue
        clipped += inside != box
        objects.append(Annotation(box=inside, category=category.strip()))
    if bad and not skip_bad:
        more = f" ({len(bad) - 1} more like it)" if len(bad) > 1 else ""
        raise RemoteGLMError(f"{path}: {bad[0]}{more}; --skip_bad_boxes leaves such features out")
    if not objects:
        raise RemoteGLMError(f"{path}: no box on the scene {scene.path} to train on")
    return objects, clipped, len(bad)


# ---- spatial splits ------------------------------------------------------------------------------
def _edges(length: int, block: int) -> list[int]:
    n = max(1, round(length / block))
    return [round(i * length / n) for i in range(n + 1)]


def _held_count(n: int, fraction: float) -> int:
    return max(1 if fraction > 0 else 0, round(n * fraction))


def split_blocks(width: int, height: int, block: int, val: float, test: float, seed: int) -> list[tuple[Window, str]]:
    """The scene's blocks (x0, y0, x1, y1) row by row, each with its split (module docstring)."""
    xs, ys = _edges(width, block), _edges(height, block)
    cells = [((xs[i], ys[j], xs[i + 1], ys[j + 1]), f"{seed}:{i}:{j}")
             for j in range(len(ys) - 1) for i in range(len(xs) - 1)]
    order = sorted(range(len(cells)), key=lambda k: hashlib.sha256(cells[k][1].encode()).hexdigest())
    n = len(cells)
    n_test, n_val = _held_count(n, test), _held_count(n, val)
    while n_test + n_val >= n and (n_val or n_test):  # at least one train block
        if n_val:
            n_val -= 1
        else:
            n_test -= 1
    split = {k: "test" if r < n_test else "val" if r < n_test + n_val else "train" for r, k in enumerate(order)}
    return [(cells[k][0], split[k]) for k in range(n)]


def window_split(window: Window, blocks: list[tuple[Window, str]], xs: list[int], ys: list[int]) -> str | None:
    """The split of every block ``window`` overlaps (by area), None when they have two or more."""
    x0, y0, x1, y1 = window
    cols = range(bisect.bisect_right(xs, x0) - 1, bisect.bisect_left(xs, x1))
    rows = range(bisect.bisect_right(ys, y0) - 1, bisect.bisect_left(ys, y1))
    found = {blocks[j * (len(xs) - 1) + i][1] for j in rows for i in cols}
    return found.pop() if len(found) == 1 else None


def _check(cfg: SceneTilesConfig) -> int:
    """The option checks (before anything is read); returns the block size."""
    windows(1, 1, cfg.tile, cfg.overlap)  # tile and overlap: one line each
    block = cfg.split_block if cfg.split_block is not None else BLOCK_TILES * cfg.tile
    if not (isinstance(block, int) and block > 0):
        raise RemoteGLMError(f"--split_block {block!r} must be a positive whole number of pixels")
    for option, v in (("--val", cfg.val), ("--test", cfg.test)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v < 1):
            raise RemoteGLMError(f"{option} {v!r} must be a fraction of the scene's blocks, 0 <= f < 1")
    if cfg.val + cfg.test >= 1:
        raise RemoteGLMError(f"--val {cfg.val} + --test {cfg.test} leave no blocks for train; keep their sum under 1")
    if cfg.name is not None and not re.fullmatch(r"[\w.+-]+", cfg.name):
        raise RemoteGLMError(f"--name {cfg.name!r}: letters, digits, '.', '_', '+' or '-' only (it names files)")
    return block


# ---- the import ----------------------------------------------------------------------------------
def _write_tile(path: Path, data: bytes) -> None:
    """Write a tile unless it already holds these bytes (its mtime then stays, and so does the
    split registry's digest of it)."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:
        pass
    write_bytes_atomic(path, data)


def _drop_stale_tiles(tiles: Path, stem: str, keep: set[Path]) -> None:
    """Remove this scene's tiles of an earlier run that this one has not (other options)."""
    pattern = re.compile(re.escape(stem) + r"__\d+_\d+\.png$")
    for p in tiles.iterdir() if tiles.is_dir() else ():
        if p not in keep and pattern.fullmatch(p.name) and p.is_file():
            p.unlink()


def import_scene(cfg: SceneTilesConfig) -> ImportSummary:
    """An annotated scene -> grounding fine-tune files with spatial splits (module docstring)."""
    from ..scene.raster import open_scene, parse_bands

    t0 = time.time()
    block = _check(cfg)
    bands = parse_bands(cfg.bands) if cfg.bands else None
    name = cfg.name or re.sub(r"[^\w.+-]", "_", Path(cfg.scene).stem)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("data") / f"{name}_grounding"
    rerun = _rerun_stamp(cfg, name, out_dir, block)
    if rerun.fresh():  # nothing read, nothing written
        s = ImportSummary(name, "grounding", up_to_date=True)
        s.seconds = time.time() - t0
        s.quick = f"up to date: {out_dir} (scene, boxes, options, outputs unchanged; nothing read; {s.seconds:.1f} s)"
        return s
    scene_path = Path(cfg.scene)
    with open_scene(scene_path, bands, cfg.stretch) as scene:
        objects, clipped, left_out = read_scene_boxes(Path(cfg.boxes), scene, cfg.skip_bad_boxes)
        annotated = AnnotatedImage(f"{scene_path.stem}.png", scene.width, scene.height, tuple(objects))
        names = category_names(cfg.names, (o.category for o in objects))
        check_writable(out_dir, "--out_dir")
        reg = Registry(cfg.splits or default_registry(out_dir))
        check_writable(reg.path, "--splits", folder=False)
        blocks = split_blocks(scene.width, scene.height, block, cfg.val, cfg.test, cfg.seed)
        xs, ys = _edges(scene.width, block), _edges(scene.height, block)
        all_windows = windows(scene.width, scene.height, cfg.tile, cfg.overlap)
        crossing = sum(window_split(w, blocks, xs, ys) is None for w in all_windows)
        edited = rerun.outputs_edited()
        rerun.clear()  # until this build has finished
        source = image_path(scene_path.parent, scene_path.name, out_dir)
        units, digests, idle, empty = [], [], 0, 0
        for window, t in tile(annotated, cfg.tile, cfg.overlap):
            split = window_split(window, blocks, xs, ys)
            if not t.objects or split is None:
                continue
            tasks = grounding_tasks(t, names)
            if not tasks:
                idle += 1
                continue
            image, valid = scene.read_rgb(window)
            if valid <= 0:  # all nodata: nothing to see there
                empty += 1
                continue
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            data = buf.getvalue()
            path = out_dir / "tiles" / t.image
            _write_tile(path, data)
            digests.append((t.image, hashlib.sha256(data).hexdigest()))
            img = image_path(out_dir / "tiles", t.image, out_dir)
            units.append(TileUnit(path, split, [
                {**task.to_dict(img), "source": {"img": source, "window": list(window)}} for task in tasks]))
        crs = scene.crs.to_string() if scene.crs is not None else "no CRS: pixel boxes"
    check = SplitCheck(reg, Source(out_dir, f"{name} scene tiles", cfg.command or _command(cfg, name, out_dir, block)),
                       units, lambda u: u.path, lambda u: True, say)
    if not check.kept:
        raise RemoteGLMError(f"{cfg.boxes}: no tile of {scene_path} gives a task (boxes mostly outside every tile, "
                             "in tiles across a split boundary, or too many in one): try other --tile, --split_block")
    records: dict[str, list[dict]] = {}
    for u in sorted(check.kept, key=lambda u: SPLITS.index(u.split)):
        records.setdefault(u.split, []).extend(u.records)
    counts = {sp: {"images": sum(u.split == sp for u in check.kept), "records": len(recs)}
              for sp, recs in records.items()}
    check_no_leak(records)
    s = ImportSummary(name, "grounding")
    s.items, s.split_counts = len(check.kept), counts
    per_block = {sp: sum(1 for _, b in blocks if b == sp) for sp in SPLITS}
    s.detail = (f"scene: {scene_path} ({scene.width} x {scene.height}, {crs}), {len(objects)} boxes"
                + (f" ({clipped} clipped to its edge)" if clipped else "")
                + (f", {left_out} left out (--skip_bad_boxes: no area or outside the scene)" if left_out else "")
                + f"; {len(blocks)} split blocks of ~{block} px (" + ", ".join(f"{k} {v}" for k, v in per_block.items())
                + f"); {len(all_windows)} windows of {cfg.tile} px, {crossing} cross a split boundary (left out); "
                + f"{len(check.kept)} tiles with tasks written to {out_dir / 'tiles'}"
                + (f"; {idle} tile(s) gave no task" if idle else "") + (f"; {empty} all-nodata tiles" if empty else "")
                + "".join(f"; no {sp} tile (no box in its blocks, or too few blocks: lower --split_block)"
                          for sp in SPLITS if per_block[sp] and sp not in records))
    files = {out_dir / f"{name}_{split}.json": recs for split, recs in records.items()}
    stamp = build_stamp(IMPORT_VERSION, "scene", records, sorted(digests), str(out_dir.absolute()))
    if edited:  # by hand, since the last build: all written again
        (out_dir / STAMP).unlink(missing_ok=True)
    for split in set(SPLITS) - set(records):  # an earlier run's file of a split this one has no tile of
        (out_dir / f"{name}_{split}.json").unlink(missing_ok=True)
    write_if_changed(s, out_dir, stamp, files)
    _drop_stale_tiles(out_dir / "tiles", scene_path.stem, {u.path for u in check.kept})
    check.register()
    s.seconds = time.time() - t0
    rerun.record(files, [u.path for u in check.kept], [reg.path])
    return s


def _rerun_stamp(cfg: SceneTilesConfig, name: str, out_dir: Path, block: int) -> RerunStamp:
    """What this import reads, listed (not read): the scene, the boxes, the --names file, the options."""
    registry = Path(cfg.splits or default_registry(out_dir)).absolute()
    options = {"name": name, "tile": cfg.tile, "overlap": cfg.overlap, "bands": cfg.bands, "stretch": cfg.stretch,
               "split_block": block, "val": cfg.val, "test": cfg.test, "seed": cfg.seed, "splits": str(registry),
               "skip_bad_boxes": cfg.skip_bad_boxes, "out_dir": str(out_dir.absolute())}
    files = [Path(cfg.scene), Path(cfg.boxes)] + ([Path(cfg.names)] if cfg.names else [])
    return RerunStamp(out_dir, input_key(IMPORT_VERSION, options, [], files, code=__name__))


def _command(cfg: SceneTilesConfig, name: str, out_dir: Path, block: int) -> str:
    """The command line that reruns this import (for a SceneTilesConfig made in code)."""
    args = ["python", "-m", "remoteglm.data.importers", "scene", "--scene", str(cfg.scene), "--boxes", str(cfg.boxes),
            "--name", name, "--out_dir", str(out_dir), "--tile", str(cfg.tile), "--overlap", str(cfg.overlap),
            "--stretch", cfg.stretch, "--split_block", str(block), "--val", str(cfg.val), "--test", str(cfg.test),
            "--seed", str(cfg.seed)]
    for flag, value in (("--bands", cfg.bands), ("--names", cfg.names), ("--splits", cfg.splits)):
        if value is not None:
            args += [flag, str(value)]
    return shlex.join(args + (["--skip_bad_boxes"] if cfg.skip_bad_boxes else []))
