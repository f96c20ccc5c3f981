"""Tiled answers over a whole scene: the job behind ``remoteglm scene``, the API's ``/v1/scenes``
and the web demo's scene tab.

    job = check_job("scene.tif", scene_task("detect", category="储油罐"), out_dir="out")   # no model needed
    result = answer_scene(engine, "scene.tif", scene_task("detect", category="储油罐"), out_dir="out")

Family-neutral: it uses only the ``remoteglm.serve.engine.Engine`` interface (``image_fit``,
``batch``, ``boxes``). The scene is read window by window (``remoteglm.scene.raster``), so memory
stays bounded whatever its size; the windows are ``remoteglm.data.tiles.windows`` (tile side and
overlap from the engine's pixel budget unless given: ``answers.auto_tile``). A window is read at
the size the engine would reduce it to anyway; all-nodata windows are skipped, and with
``skip_empty`` those whose valid fraction is below it. Each tile's answer (and its boxes, in
scene pixels) goes to the journal (``remoteglm.scene.journal``) as soon as its batch is answered,
so a killed run rerun with the same arguments asks only the tiles not finished; a tile that cannot
be read (a corrupt tile) is journalled as failed and asked again by the next run.

Outputs in ``out_dir`` (written atomically when the tiles are done):

- ``scene.geojson``: a FeatureCollection (``remoteglm.scene.geo.feature_collection``) in the
  scene's CRS (or WGS 84 lon/lat with ``wgs84``; pixel coordinates for a scene without a CRS),
  properties ``category``, ``tile`` (the source tile's index in tiles.jsonl) and ``answer``;
- ``quicklook.png``: the whole scene (at most QUICKLOOK_SIDE pixels a side) with the boxes drawn
  (``remoteglm.serve.grounding.draw_boxes``); the same picture is the overview the model captions;
- ``summary.txt``: the short Chinese summary (``answers.summary``); ``result.json``: ``SceneResult``;
- ``tiles.jsonl``: the journal.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from remoteglm.errors import RemoteGLMError
from remoteglm.serve.scene_answers import (BOX_TASKS, SceneTask, auto_tile, counts, quicklook_boxes, read_size,
                                     scene_task, summary, tile_features, to_scene)
from remoteglm.scene.journal import Journal

QUICKLOOK_SIDE = 1024
DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_BATCH = 8
Progress = Callable[[int, int], None]  # (tiles finished, tiles in all)


@dataclass
class SceneJob:
    """The checked inputs of a run (``check_job``); ``notes``: what to tell the user once."""

    scene: Path
    task: SceneTask
    bands: tuple[int, ...]
    stretch: str
    tile: int | None
    overlap: int | None
    out_dir: Path
    wgs84: bool
    skip_empty: float
    max_new_tokens: int
    batch_size: int
    settings: dict
    notes: list[str] = field(default_factory=list)


@dataclass
class SceneResult:
    """What a run produced (also ``result.json``)."""

    out_dir: str
    geojson: str
    quicklook: str
    summary_file: str
    summary: str
    crs: str | None
    tile: int
    overlap: int
    tiles: int
    asked: int
    reused: int
    skipped: int
    failed: int
    features: int
    counts: dict
    seconds: float
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["counts"] = {("null" if k is None else k): v for k, v in self.counts.items()}
        return d


def _task(task: SceneTask | str, **kw) -> SceneTask:
    return task if isinstance(task, SceneTask) else scene_task(task, **kw)


def check_job(scene_path, task: SceneTask | str, *, out_dir, bands=None, stretch: str = "percentile",
              tile: int | None = None, overlap: int | None = None, wgs84: bool = False, skip_empty: float = 0.0,
              max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = DEFAULT_BATCH,
              model: str | dict | None = None, **task_args) -> SceneJob:
    """Every input checked, nothing written and no model needed: the scene opens with these
    bands, the options are in range, ``out_dir`` can be written and holds no run with other
    settings. ``model``: what identifies the model in the journal's settings. One line each."""
    from remoteglm.io import check_writable
    from remoteglm.scene.raster import open_scene

    task = _task(task, **task_args)
    for name, v in (("--tile", tile), ("--overlap", overlap)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise RemoteGLMError(f"{name} {v!r} must be a whole number of pixels")
    if tile is not None and tile < 16:
        raise RemoteGLMError(f"--tile {tile} is too small: give at least 16 pixels (or leave it out for the model's own size)")
    if tile is not None and overlap is not None and overlap >= tile:
        raise RemoteGLMError(f"--overlap {overlap} must be smaller than --tile {tile}")
    if not 0.0 <= float(skip_empty) <= 1.0:
        raise RemoteGLMError(f"--skip_empty {skip_empty!r} must be a fraction from 0 to 1 (tiles with less valid area are skipped)")
    if not (isinstance(max_new_tokens, int) and max_new_tokens > 0):
        raise RemoteGLMError(f"--max_new_tokens {max_new_tokens!r} must be a whole number above 0")
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise RemoteGLMError(f"--batch_size {batch_size!r} must be a whole number above 0")
    path = Path(scene_path).expanduser()
    with open_scene(path, bands, stretch) as scene:
        if wgs84 and scene.crs is None:
            raise RemoteGLMError(f"--wgs84: {path} has no coordinate system, so there is no lon/lat to give; "
                                 "leave out --wgs84 (the features are then in pixel coordinates)")
        notes = [] if scene.crs is not None else [
            f"note: {path} has no coordinate system (CRS): answering in pixel coordinates (x right, y down)"]
        st = path.stat()
        settings = {"scene": str(path.resolve()), "scene_size": [scene.width, scene.height], "scene_bytes": st.st_size,
                    "scene_mtime_ns": st.st_mtime_ns, "bands": list(scene.bands), "stretch": stretch,
                    "tile": tile if tile is not None else "auto", "overlap": overlap if overlap is not None else "auto",
                    "skip_empty": float(skip_empty), "max_new_tokens": max_new_tokens, "model": model,
                    **task.settings()}
        used = tuple(scene.bands)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise RemoteGLMError(f"--out {out} is a file: give a folder for the outputs")
    check_writable(out, "--out")
    Journal.read(out, settings)  # refuses another run's journal, a damaged one
    return SceneJob(path, task, used, stretch, tile, overlap, out, wgs84, float(skip_empty), max_new_tokens,
                    batch_size, settings, notes)


def answer_scene(engine, scene_path, task: SceneTask | str, *, out_dir, bands=None, stretch: str = "percentile",
                 tile: int | None = None, overlap: int | None = None, wgs84: bool = False, skip_empty: float = 0.0,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = DEFAULT_BATCH,
                 model: str | dict | None = None, progress: Progress | None = None, **task_args) -> SceneResult:
    """Ask ``engine`` ``task`` about every tile of the scene at ``scene_path`` and write the
    outputs (module doc) to ``out_dir``; tiles a previous run with the same settings finished are
    not asked again. ``task``: a ``SceneTask`` or its kind with ``category`` / ``query`` /
    ``classes`` in ``task_args``; ``model``: what identifies the model in the journal (default
    the engine's name); ``progress(finished, total)`` after each tile."""
    from remoteglm.data.tiles import windows
    from remoteglm.scene.raster import open_scene

    t0 = time.monotonic()
    model = model if model is not None else {"name": engine.name, "quant": engine.quant}
    job = check_job(scene_path, task, out_dir=out_dir, bands=bands, stretch=stretch, tile=tile, overlap=overlap,
                    wgs84=wgs84, skip_empty=skip_empty, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    model=model, **task_args)
    with open_scene(job.scene, job.bands, job.stretch) as scene:
        side, lap = auto_tile(engine.image_fit)
        side = job.tile if job.tile is not None else side
        lap = job.overlap if job.overlap is not None else (lap if job.tile is None else side // 8)
        if lap >= side:
            raise RemoteGLMError(f"--overlap {lap} must be smaller than the tile side {side}")
        grid = windows(scene.width, scene.height, side, lap)
        journal = Journal.read(job.out_dir, job.settings)
        journal.check_grid(grid)
        reused = sum(journal.finished(k) for k in range(len(grid)))
        journal.start()
        asked = _ask_tiles(engine, scene, job, grid, journal, progress)
        overview = scene.overview(QUICKLOOK_SIDE)
        if journal.overview is None:
            journal.add({"overview": engine.reply(overview, _overview_prompt(), max_new_tokens=job.max_new_tokens,
                                                  do_sample=False).text})
            journal.flush()
        return _write_outputs(scene, job, journal, overview, grid, (side, lap), asked, reused, time.monotonic() - t0)


def _overview_prompt() -> str:
    from remoteglm.model.prompt import DEFAULT_PROMPT

    return DEFAULT_PROMPT


def _ask_tiles(engine, scene, job: SceneJob, grid: list, journal: Journal, progress: Progress | None) -> int:
    """Read and ask every unfinished tile, ``batch_size`` at a time; the number asked."""
    todo = [k for k in range(len(grid)) if not journal.finished(k)]
    total, finished = len(grid), len(grid) - len(todo)
    if progress is not None:
        progress(finished, total)
    batch: list[tuple[int, tuple, object, float]] = []
    asked = 0

    def ask() -> None:
        nonlocal finished, asked
        images = [img for _, _, img, _ in batch]
        texts = engine.batch(images, [job.task.prompt] * len(batch), batch_size=len(batch),
                             max_new_tokens=job.max_new_tokens, do_sample=False)
        for (k, window, img, valid), text in zip(batch, texts):
            rec = {"tile": k, "window": list(window), "status": "done", "valid": round(valid, 4), "answer": text}
            if job.task.kind in BOX_TASKS:
                boxes, unread = engine.boxes(text, img)
                rec["boxes"] = [[round(v, 2) for v in b.xyxy] for b in to_scene(boxes, window, img.size)]
                rec["unread"] = unread
            journal.add(rec)
        journal.flush()
        asked += len(batch)
        finished += len(batch)
        batch.clear()
        if progress is not None:
            progress(finished, total)

    for k in todo:
        window = grid[k]
        try:
            img, valid = scene.read_rgb(window, read_size(window, engine.image_fit))
        except RemoteGLMError as e:
            journal.add({"tile": k, "window": list(window), "status": "failed", "error": str(e)})
            journal.flush()
            img, valid = None, 0.0
        if img is not None and (valid <= 0.0 or valid < job.skip_empty):
            journal.add({"tile": k, "window": list(window), "status": "skipped", "valid": round(valid, 4)})
            journal.flush(force=False)
            img = None
        if img is None:
            finished += 1
            if progress is not None:
                progress(finished, total)
            continue
        batch.append((k, window, img, valid))
        if len(batch) >= job.batch_size:
            ask()
    if batch:
        ask()
    journal.flush()
    return asked


def _write_outputs(scene, job: SceneJob, journal: Journal, overview, grid: list, tiling: tuple[int, int],
                   asked: int, reused: int, seconds: float) -> SceneResult:
    from remoteglm.io import write_bytes_atomic, write_json_atomic, write_text_atomic
    from remoteglm.scene.geo import feature_collection, write_geojson
    from remoteglm.serve.grounding import draw_boxes

    size = (scene.width, scene.height)
    records = [journal.tiles[k] for k in range(len(grid)) if k in journal.tiles]
    status = [r["status"] for r in records]
    tiles = {"total": len(grid), "done": status.count("done"), "skipped": status.count("skipped"),
             "failed": status.count("failed")}
    features = tile_features(records, job.task, size)
    fc = feature_collection(features, scene.crs, job.wgs84, transform=scene.transform, size=size)
    out = job.out_dir
    write_geojson(out / "scene.geojson", fc)
    drawn = quicklook_boxes(features, size, overview.size) if job.task.kind in BOX_TASKS else []
    buf = io.BytesIO()
    draw_boxes(overview, drawn).save(buf, format="PNG")
    write_bytes_atomic(out / "quicklook.png", buf.getvalue())
    found = counts(features)
    text = summary(job.task, journal.overview, found, tiles, scene.crs is None)
    write_text_atomic(out / "summary.txt", text)
    errors = [r["error"] for r in records if r["status"] == "failed"]
    result = SceneResult(out_dir=str(out), geojson=str(out / "scene.geojson"), quicklook=str(out / "quicklook.png"),
                         summary_file=str(out / "summary.txt"), summary=text,
                         crs=scene.crs.to_string() if scene.crs is not None else None, tile=tiling[0],
                         overlap=tiling[1], tiles=len(grid), asked=asked, reused=reused, skipped=tiles["skipped"],
                         failed=tiles["failed"], features=len(fc["features"]), counts=found,
                         seconds=round(seconds, 3), notes=list(job.notes), errors=errors)
    write_json_atomic(out / "result.json", result.to_dict())
    return result
