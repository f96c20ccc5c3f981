"""Benchmark: the grounding data path at DIOR and DOTA scale, no LLM involved.

* DIOR scale: 23,463 synthetic VOC XML files of 800 x 800 images with DIOR's object count
  (192,472 objects / 23,463 images = 8.2 per image; geometric, so long-tailed like DIOR's), 1-3 of
  DIOR's 20 categories per image, DIOR's official split sizes (5,862 / 5,863 / 11,738). Timed:
  reading the XML files (``data.voc.read_voc``), the rule builders (``data.referring.grounding_tasks``
  and each task's record), and the whole job ``python -m remoteglm.data.importers detection``
  in a fresh process (XML, image headers, split registry hashing, records, files), then its rerun.
* DOTA scale: 4000 x 4000 images with about 100 oriented boxes each (2,806 images, DOTA v1.0's
  count), cut by ``data.tiles.tile`` into 1024 px tiles with 200 px overlap (DOTA's devkit
  defaults); then the builders on the tiles that hold an object.

The synthetic set is written once (images: a small PNG each, 800 x 800 in its header, a unique
text chunk so no two share content) into ``--work`` and reused by later runs of the same scale.

    python benchmarks/grounding_bench.py               # full scale
    python benchmarks/grounding_bench.py --scale 0.05  # 5% of the images, a quick look

Prints images/s and records/s of each part, peak RSS (this process; the import job's own), and
the total wall time. Exit 1 if the import's records differ from the in-process builders'.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from remoteglm.boxes import Box  # noqa: E402
from remoteglm.data.annotations import AnnotatedImage, Annotation  # noqa: E402
from remoteglm.data.glossary import DETECTION_CLASSES  # noqa: E402
from remoteglm.data.referring import grounding_tasks  # noqa: E402
from remoteglm.data.tiles import tile  # noqa: E402
from remoteglm.data.voc import read_voc  # noqa: E402

DIOR_IMAGES = 23_463
DIOR_SPLITS = (("train", 5_862), ("val", 5_863), ("test", 11_738))
DIOR_MEAN_OBJECTS = 192_472 / DIOR_IMAGES
DOTA_IMAGES = 2_806
DOTA_V1 = DETECTION_CLASSES["DOTA"][:15]
SET_VERSION = 1  # bump when the synthetic set's recipe changes: older copies are rewritten


def _mib(kib: int) -> float:
    return kib / 1024  # ru_maxrss is KiB on Linux


def _png(width: int, height: int) -> tuple[bytes, bytes]:
    """A blank 1-bit PNG split after its IHDR chunk, so a text chunk can go between the halves."""
    buf = io.BytesIO()
    Image.new("1", (width, height)).save(buf, format="PNG")
    data = buf.getvalue()
    cut = 8 + 4 + 4 + 13 + 4  # signature, then IHDR's length, type, 13 bytes and CRC
    return data[:cut], data[cut:]


def _text_chunk(text: str) -> bytes:
    body = b"tEXt" + b"id\0" + text.encode()
    return struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))


def _object_count(rng: random.Random) -> int:
    """1 + a geometric count with DIOR's mean."""
    p = 1 / DIOR_MEAN_OBJECTS
    return 1 + int(math.log(1 - rng.random()) / math.log(1 - p))


def _voc(name: str, rng: random.Random) -> tuple[str, int]:
    cats = rng.sample(DETECTION_CLASSES["DIOR"], rng.randint(1, 3))
    n = _object_count(rng)
    objs = []
    for _ in range(n):
        w, h = rng.randint(8, 240), rng.randint(8, 240)
        x, y = rng.randint(0, 800 - w), rng.randint(0, 800 - h)
        objs.append(f"<object><name>{rng.choice(cats)}</name><difficult>0</difficult><bndbox><xmin>{x}</xmin>"
                    f"<ymin>{y}</ymin><xmax>{x + w}</xmax><ymax>{y + h}</ymax></bndbox></object>")
    return (f"<annotation><filename>{name}</filename><size><width>800</width><height>800</height><depth>3</depth>"
            f"</size>{''.join(objs)}</annotation>\n"), n


def dior_set(work: Path, n: int) -> Path:
    """The synthetic DIOR-scale set of ``n`` images under ``work`` (written once, then reused)."""
    root = work / f"dior_{n}"
    marker = root / "done.json"
    want = {"version": SET_VERSION, "images": n}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    head, tail = _png(800, 800)
    rng = random.Random(0)
    ids = [f"{i:05d}" for i in range(1, n + 1)]
    objects = 0
    for i in ids:
        (root / "JPEGImages" / f"{i}.png").write_bytes(head + _text_chunk(i) + tail)
        xml, k = _voc(f"{i}.png", rng)
        objects += k
        (root / "Annotations" / f"{i}.xml").write_text(xml, encoding="utf-8")
    start = 0
    for split, size in DIOR_SPLITS:
        take = round(size * n / DIOR_IMAGES) if split != "test" else n - start
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids[start:start + take]) + "\n")
        start += take
    marker.write_text(json.dumps(want))
    return root


def dota_images(n: int) -> list[AnnotatedImage]:
    """``n`` DOTA-scale images in memory: 4000 x 4000, 50-150 oriented boxes (about 100) each."""
    rng = random.Random(1)
    out = []
    for k in range(n):
        objs = []
        for _ in range(rng.randint(50, 150)):
            w, h, a = rng.uniform(10, 150), rng.uniform(10, 150), rng.uniform(0, math.pi)
            cx, cy = rng.uniform(110, 3890), rng.uniform(110, 3890)
            c, s = math.cos(a) / 2, math.sin(a) / 2
            corners = [(cx + dx * w * c - dy * h * s, cy + dx * w * s + dy * h * c)
                       for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
            poly = tuple(v for p in corners for v in p)
            xs, ys = poly[0::2], poly[1::2]
            objs.append(Annotation(box=Box(min(xs), min(ys), max(xs), max(ys)), category=rng.choice(DOTA_V1),
                                   polygon=poly, difficult=rng.random() < 0.05))
        out.append(AnnotatedImage(f"P{k:04d}.png", 4000, 4000, tuple(objs)))
    return out


def _records(images) -> int:
    """How many records the builders make of ``images`` (each task turned into its record, as the import does)."""
    n = 0
    for a in images:
        for t in grounding_tasks(a):
            t.to_dict(a.image)
            n += 1
    return n


def _run(cmd: list[str], log: Path) -> tuple[int, float, float]:
    """A fresh process: (exit code, wall seconds, its own peak RSS in MiB)."""
    t0 = time.perf_counter()
    with log.open("w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, time.perf_counter() - t0, _mib(usage.ru_maxrss)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of DIOR's 23,463 and DOTA's 2,806 images [1]")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "remoteglm_grounding_bench",
                    help="folder for the synthetic sets, kept for later runs [%(default)s]")
    a = ap.parse_args()
    if not 0 < a.scale <= 1:
        print("--scale must be above 0, at most 1")
        return 2
    t_all = time.perf_counter()
    n_dior, n_dota = max(1, round(DIOR_IMAGES * a.scale)), max(1, round(DOTA_IMAGES * a.scale))

    t0 = time.perf_counter()
    root = dior_set(a.work, n_dior)
    print(f"DIOR scale: {n_dior} images of 800 x 800 in {root} ({time.perf_counter() - t0:.1f} s to make or find)",
          flush=True)
    t0 = time.perf_counter()
    dior = [read_voc(p) for p in sorted((root / "Annotations").glob("*.xml"))]
    t_read = time.perf_counter() - t0
    objects = sum(len(d.objects) for d in dior)
    print(f"  read_voc: {n_dior / t_read:,.0f} images/s ({objects:,} objects, {objects / n_dior:.2f} per image; "
          f"{t_read:.1f} s)", flush=True)
    t0 = time.perf_counter()
    built = _records(dior)
    t_build = time.perf_counter() - t0
    print(f"  builders (grounding_tasks + records): {built:,} records, {n_dior / t_build:,.0f} images/s, "
          f"{built / t_build:,.0f} records/s ({t_build:.1f} s)", flush=True)
    del dior

    run = a.work / f"run_{n_dior}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    cmd = [sys.executable, "-m", "remoteglm.data.importers", "detection", "--format", "voc", "--name", "DIOR",
           "--annotations", str(root / "Annotations"), "--images", str(root / "JPEGImages"),
           "--split_files", str(root / "ImageSets" / "Main"), "--out_dir", str(run / "DIOR_grounding"),
           "--splits", str(run / "splits.json")]
    rc, t_job, rss_job = _run(cmd, run / "import.log")
    written = sum(len(json.loads(p.read_text(encoding="utf-8")))
                  for p in (run / "DIOR_grounding").glob("DIOR_*.json")) if rc == 0 else 0
    print(f"  whole import job (python -m remoteglm.data.importers detection, new process): exit {rc}, "
          f"{written:,} records, {n_dior / t_job:,.0f} images/s, {written / t_job:,.0f} records/s, "
          f"{t_job:.1f} s, peak RSS {rss_job:.0f} MiB", flush=True)
    rc2, t_again, rss_again = _run(cmd, run / "rerun.log")
    print(f"  its rerun (outputs up to date): exit {rc2}, {t_again:.1f} s, peak RSS {rss_again:.0f} MiB", flush=True)
    if rc:
        print((run / "import.log").read_text()[-2000:])

    t0 = time.perf_counter()
    dota = dota_images(n_dota)
    t_make = time.perf_counter() - t0
    boxes = sum(len(d.objects) for d in dota)
    print(f"DOTA scale: {n_dota} images of 4000 x 4000, {boxes:,} oriented boxes ({boxes / n_dota:.0f} per image; "
          f"made in memory in {t_make:.1f} s)", flush=True)
    t0 = time.perf_counter()
    tiles = [t for d in dota for _, t in tile(d, 1024, 200)]
    t_tile = time.perf_counter() - t0
    full = [t for t in tiles if t.objects]
    kept = sum(len(t.objects) for t in full)
    print(f"  tiler (1024 px, overlap 200): {len(tiles):,} tiles ({len(full):,} with an object, {kept:,} objects kept), "
          f"{n_dota / t_tile:,.1f} images/s, {len(tiles) / t_tile:,.0f} tiles/s ({t_tile:.1f} s)", flush=True)
    t0 = time.perf_counter()
    tiled = _records(full)
    t_tb = time.perf_counter() - t0
    print(f"  builders on the tiles: {tiled:,} records, {tiled / t_tb:,.0f} records/s ({t_tb:.1f} s); tiler + builders "
          f"{n_dota / (t_tile + t_tb):,.1f} images/s, {tiled / (t_tile + t_tb):,.0f} records/s", flush=True)

    peak = _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print(f"peak RSS of this process (in-process parts, all DIOR annotations or DOTA tiles in memory): {peak:.0f} MiB")
    print(f"total wall time: {time.perf_counter() - t_all:.1f} s")
    same = rc == 0 and rc2 == 0 and written == built
    if not same:
        print(f"the import job wrote {written} records, the builders in this process made {built}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
