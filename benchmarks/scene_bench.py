"""Benchmark: ``remoteglm scene`` on a 30,000 x 30,000 4-band uint16 GeoTIFF with the tiny model on
the CPU (issue 21: peak RSS under 2 GB whatever the scene's size).

The scene is written once into ``--work`` (reused while its size matches): tiled 512 x 512,
DEFLATE, nodata 0, EPSG:32618 at 10 m, written sparse (GDAL's ``SPARSE_OK``: blocks never written
take no space and read as nodata), with real content in ``--patches`` patches of 1,536 x 1,536
pixels spread over a grid: each patch is the project's real Sentinel-2 crop
(tests/fixtures/scenes/s2_crop_384.tif) repeated 4 x 4, so the tiles that hold content carry
real reflectances. The job runs in a fresh process (``python -m remoteglm scene ... --task
detect --category storagetank``, default tiles: the tiny VisualGLM's 224 px with 28 px overlap),
so every one of the scene's windows is read: the all-nodata ones are skipped, the others asked.

    python benchmarks/scene_bench.py                # 30,000 x 30,000
    python benchmarks/scene_bench.py --side 4000    # a quick look

Prints the number of tiles (all, asked, skipped), tiles/s over all tiles and over the asked ones,
the wall time, the job process's peak RSS (its own rusage, ``os.wait4``;
``resource.getrusage(RUSAGE_CHILDREN)`` would also count the tiny-model maker) and whether it is
under the 2 GB goal (exit 1 if not, or if the job fails).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CROP = ROOT / "tests" / "fixtures" / "scenes" / "s2_crop_384.tif"
GOAL_BYTES = 2 * 1000 ** 3
PATCH_REPEAT = 4  # the 384 px crop 4 x 4 times: 1,536 px patches


def build_scene(path: Path, side: int, patches: int) -> dict:
    """The sparse scene at ``path`` (module doc); its description."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(CROP) as src:
        crop = src.read()
    patch = np.tile(crop, (1, PATCH_REPEAT, PATCH_REPEAT))
    p = patch.shape[1]
    per_row = max(1, int(round(patches ** 0.5)))
    step = side // per_row
    origins = [(c * step + (step - p) // 2, r * step + (step - p) // 2)
               for r in range(per_row) for c in range(per_row)][:patches]
    origins = [(max(0, min(x, side - p)), max(0, min(y, side - p))) for x, y in origins]
    profile = dict(driver="GTiff", width=side, height=side, count=4, dtype="uint16", nodata=0, crs="EPSG:32618",
                   transform=from_origin(400000, 4300000, 10, 10), tiled=True, blockxsize=512, blockysize=512,
                   compress="deflate", predictor=2, sparse_ok=True, bigtiff="if_safer")
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.descriptions = ("B04", "B03", "B02", "B08")
        for x, y in origins:
            w, h = min(p, side - x), min(p, side - y)
            dst.write(patch[:, :h, :w], window=rasterio.windows.Window(x, y, w, h))
    os.replace(tmp, path)
    return {"side": side, "patches": len(origins), "patch_px": p}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=30000, help="scene width = height in pixels [30000]")
    ap.add_argument("--patches", type=int, default=16, help="patches of real content [16]")
    ap.add_argument("--work", default=str(ROOT / "cache" / "scene_bench"), help="folder for the scene and outputs")
    ap.add_argument("--from_pretrained", help="model folder [a tiny VisualGLM made in --work]")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--max_new_tokens", type=int, default=32)
    a = ap.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    scene = work / f"scene_{a.side}.tif"
    meta_file = scene.with_suffix(".json")
    want = {"side": a.side, "patches": a.patches}
    meta = json.loads(meta_file.read_text()) if scene.is_file() and meta_file.is_file() else None
    if meta is None or {k: meta.get(k) for k in want} != want:
        t = time.monotonic()
        meta = {**build_scene(scene, a.side, a.patches), **want}
        meta_file.write_text(json.dumps(meta))
        print(f"scene written: {scene} ({scene.stat().st_size / 2**20:.1f} MiB on disk, "
              f"{time.monotonic() - t:.1f} s)", flush=True)
    model = a.from_pretrained
    if model is None:
        model = str(work / "visualglm-tiny")
        if not (Path(model) / "latest").exists():
            subprocess.run([sys.executable, "-m", "remoteglm", "tiny", "visualglm", model, "--pretrain_steps", "0"],
                           cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    out = work / f"out_{a.side}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "remoteglm", "scene", "--from_pretrained", model, "--device", "cpu", "--scene",
           str(scene), "--task", "detect", "--category", "storagetank", "--out", str(out),
           "--batch_size", str(a.batch_size), "--max_new_tokens", str(a.max_new_tokens)]
    print("$ " + " ".join(cmd), flush=True)
    t = time.monotonic()
    log = out.with_suffix(".log")
    with open(log, "w") as f:  # (a file, not a pipe: nothing to drain while waiting for the child)
        child = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=f, stderr=f)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not the tiny-model maker's
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t
    peak = usage.ru_maxrss * 1024  # KiB on Linux
    if child.returncode != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
        print(f"scene job failed (exit {child.returncode}); log {log}", file=sys.stderr)
        return 1
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    print(f"scene {a.side} x {a.side}, 4 bands uint16, {meta['patches']} patches of real content "
          f"({meta['patch_px']} px); tiles {res['tile']} px, overlap {res['overlap']}")
    print(f"tiles: {res['tiles']:,} in all, asked {res['asked']:,}, skipped {res['skipped']:,} (no data), "
          f"failed {res['failed']}; features {res['features']}")
    print(f"job {res['seconds']:.1f} s ({res['tiles'] / res['seconds']:,.1f} tiles/s over all tiles, "
          f"{res['asked'] / res['seconds']:,.1f} asked tiles/s); process wall {wall:.1f} s")
    ok = peak < GOAL_BYTES
    print(f"peak RSS of the job's process {peak / 2**20:,.0f} MiB ({'under' if ok else 'OVER'} the 2 GB goal)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
