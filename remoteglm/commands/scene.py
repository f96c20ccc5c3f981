"""``remoteglm scene``: ask a model about a whole remote-sensing scene (GeoTIFF, COG, JPEG 2000 of
any size; a plain PNG/JPEG works too, in pixel coordinates) tile by tile, and get the answers back
on the map: scene.geojson (boxes or tile footprints with the answer text, in the scene's CRS or
WGS 84), quicklook.png (the scene with the boxes drawn), summary.txt (a short Chinese summary) and
result.json, in --out.

Tiles are as large as the model sees without shrinking them (VisualGLM 224 pixels; the
transformers families the side of their max_pixels), overlapping by an eighth; --tile / --overlap
set them (a larger tile is read reduced: more ground per answer, less detail). Interrupted (Ctrl-C,
a kill), rerun the same command: finished tiles are not asked again.

Examples:
    remoteglm scene --from_pretrained checkpoints/finetune-... --scene S2.tif --task detect --category 储油罐 --out out/
    remoteglm scene --from_pretrained DIR --scene S2.tif --task caption --bands 4,3,2 --skip_empty 0.5 --out out/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.options import Parser, add_model_args


def build_parser() -> Parser:
    from remoteglm.serve.scene_answers import DEFAULT_CLASSES, TASKS
    from remoteglm.serve.scene_run import DEFAULT_BATCH, DEFAULT_MAX_NEW_TOKENS

    doc = __doc__.split("\n\n")
    ap = Parser(prog="remoteglm scene", description="\n\n".join(doc[:2]), epilog="\n\n".join(doc[2:]),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    g = ap.add_argument_group("scene")
    g.add_argument("--scene", required=True, metavar="PATH", help="GeoTIFF / COG / JPEG 2000 (or PNG/JPEG) to answer")
    g.add_argument("--bands", metavar="R,G,B",
                   help="1-based band numbers shown as red, green, blue (one band: grey) [from the band "
                        "descriptions (Sentinel-2 B04,B03,B02) or colour interpretation, else the first three]")
    g.add_argument("--stretch", choices=("percentile", "minmax"), default="percentile",
                   help="to 8-bit: 2-98 %% percentiles of the scene, or its min/max [percentile]")
    g.add_argument("--out", required=True, metavar="DIR", help="folder for the outputs and the tile journal")
    g.add_argument("--wgs84", action="store_true", help="GeoJSON in WGS 84 lon/lat instead of the scene's CRS")
    t = ap.add_argument_group("task")
    t.add_argument("--task", choices=TASKS, default="detect",
                   help="caption / classify: one answer per tile (its footprint); detect / refer: boxes [detect]")
    t.add_argument("--category", metavar="NAME",
                   help="detect: the object, in Chinese (储油罐) or an English DIOR/DOTA name (storagetank, ship)")
    t.add_argument("--query", metavar="TEXT", help="refer: the object to find, e.g. 左侧的大型储油罐")
    t.add_argument("--classes", metavar="SET|A,B,...",
                   help=f"classify: a dataset's classes (UCM, AID, NWPU-RESISC45, WHU-RS19, RSICD, Sydney) or "
                        f"Chinese names separated by commas [{DEFAULT_CLASSES}]")
    k = ap.add_argument_group("tiles")
    k.add_argument("--tile", type=int, metavar="PX", help="tile side in scene pixels [the model's own input side]")
    k.add_argument("--overlap", type=int, metavar="PX", help="overlap of neighbouring tiles [tile / 8]")
    k.add_argument("--skip_empty", type=float, default=0.0, metavar="FRACTION",
                   help="skip tiles whose valid (not nodata) fraction is below this; all-nodata tiles are always "
                        "skipped [0]")
    k.add_argument("--max_new_tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                   help=f"longest answer per tile [{DEFAULT_MAX_NEW_TOKENS}]")
    k.add_argument("--batch_size", type=int, default=DEFAULT_BATCH, help=f"tiles answered together [{DEFAULT_BATCH}]")
    return ap


class _Bar:
    """``progress(finished, total)`` as a tqdm bar over tiles (rate and ETA), on stderr."""

    def __init__(self):
        self.bar = None

    def __call__(self, finished: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=finished, unit="tile", desc="scene", dynamic_ncols=True,
                            file=sys.stderr)
        elif finished > self.bar.n:
            self.bar.update(finished - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@cli_entry
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from remoteglm.serve.scene_answers import scene_task
    from remoteglm.scene.raster import parse_bands
    from remoteglm.serve.scene_run import answer_scene, check_job
    from remoteglm.serve.loading import check_checkpoint

    task = scene_task(a.task, a.category, a.query, a.classes)
    bands = parse_bands(a.bands) if a.bands is not None else None
    check_checkpoint(a.from_pretrained)
    model = {"path": str(Path(a.from_pretrained).expanduser().resolve()), "quant": a.quant,
             "min_pixels": a.min_pixels, "max_pixels": a.max_pixels}
    opts = dict(out_dir=a.out, bands=bands, stretch=a.stretch, tile=a.tile, overlap=a.overlap, wgs84=a.wgs84,
                skip_empty=a.skip_empty, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, model=model)
    job = check_job(a.scene, task, **opts)  # everything checked before the model loads or a file is written
    for note in job.notes:
        print(note, file=sys.stderr, flush=True)
    from remoteglm.compat import quiet_warnings
    from remoteglm.serve.bootstrap import start_engine

    quiet_warnings()
    engine, _, _ = start_engine(a, progress=False)
    bar = _Bar()
    try:
        result = answer_scene(engine, a.scene, task, progress=bar, **opts)
    finally:
        bar.close()
    print(result.summary, end="")
    print(f"tiles: {result.tiles} ({result.tile} px, overlap {result.overlap}); asked {result.asked}, "
          f"from an earlier run {result.reused}, skipped {result.skipped}, failed {result.failed}; "
          f"{result.features} feature(s) in {result.geojson}; quicklook {result.quicklook}")
    if result.failed:
        raise RemoteGLMError(f"{result.failed} tile(s) could not be read ({result.errors[0]}); the outputs hold the "
                             "other tiles: rerun the same command to ask only the failed ones again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
