"""The web demo's "整景 / Scene" tab (``scene_tab``): upload a whole raster (GeoTIFF, COG, JPEG
2000; a PNG/JPEG works too, in pixel coordinates), pick the task (caption / classify / detect /
refer), its category, query or classes, the bands and the stretch, and run the job of ``remoteglm
scene`` (``serve.scene_run.answer_scene``) with a progress bar over tiles (gradio shows the rate and
ETA); the page then shows the quicklook with the boxes, the Chinese summary, the tile counts, and
offers scene.geojson (and result.json) for download.

Each run writes to a folder of its own in the demo's upload folder (``$GRADIO_TEMP_DIR``, which the
demo sweeps by age and removes at exit: ``web_guard.UploadDir``), so its files expire with the
uploads. Runs queue one at a time (their own queue, not the chat's); the model is shared with chat
one batch of tiles at a time (the engine's lock is first come first served: ``serve.turns``), so a
question in the chat tab waits at most one batch. Bad input (not a raster, a band out of range, a
missing category...) is one line in the status box, with the upload's own file name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from remoteglm.errors import RemoteGLMError

DEFAULT_MAX_SCENE_MB = 2048.0
TASK_CHOICES = [("描述 / caption", "caption"), ("分类 / classify", "classify"), ("检测 / detect", "detect"),
                ("指代 / refer", "refer")]


def _out_root() -> Path:
    return Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir())


def run_scene(engine, path, task, category, query, classes, bands, stretch, wgs84, max_bytes: int, progress=None):
    """One scene run for the tab: ``(quicklook path, summary, geojson path, status line)``; bad
    input gives ``(None, "", None, "⚠️ one line")``. ``progress(finished, total)`` over tiles."""
    from remoteglm.scene.raster import parse_bands
    from remoteglm.serve.scene_answers import scene_task
    from remoteglm.serve.scene_run import answer_scene, check_job

    if not path:
        return None, "", None, "⚠️ 请先上传影像 / Upload a scene first"
    p = Path(path)

    def fail(msg: str):
        return None, "", None, "⚠️ " + msg.replace(str(p), p.name).replace("--", "")

    try:
        size = p.stat().st_size
        if size > max_bytes:
            return fail(f"{p.name}: {size / 2**20:.1f} MB，超过 {max_bytes / 2**20:g} MB 的上限 / "
                        f"over the {max_bytes / 2**20:g} MB scene upload limit")
        text = {"detect": category, "refer": query, "classify": classes}.get(task)
        text = (text or "").strip() or None
        kind = scene_task(task, category=text if task == "detect" else None, query=text if task == "refer" else None,
                          classes=text if task == "classify" else None)
        picked = parse_bands(bands) if (bands or "").strip() else None
        out = Path(tempfile.mkdtemp(prefix="remoteglm-scene-", dir=_out_root()))
        opts = dict(out_dir=out, bands=picked, stretch=stretch, wgs84=bool(wgs84))
        job = check_job(p, kind, **opts)
        result = answer_scene(engine, p, kind, progress=progress, **opts)
    except RemoteGLMError as e:
        return fail(str(e))
    except OSError as e:
        return fail(f"{p.name}: {e.strerror or e}")
    status = (f"切片 / tiles: {result.tiles}（{result.tile} px，重叠 / overlap {result.overlap}）；问 / asked {result.asked}，"
              f"跳过 / skipped {result.skipped}，失败 / failed {result.failed}；{result.features} 个要素 / feature(s)；"
              f"坐标系 / CRS: {result.crs or '无 / none (pixel coordinates)'}")
    notes = [n.replace(str(p), p.name) for n in job.notes] + [e.replace(str(p), p.name) for e in result.errors[:3]]
    if notes:
        status += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return result.quicklook, result.summary, result.geojson, status


def scene_tab(engine, max_scene_mb: float = DEFAULT_MAX_SCENE_MB) -> None:
    """The tab's components and event (``api_name="scene"``), inside an open ``gr.Tab``."""
    import gradio as gr

    max_bytes = int(max_scene_mb * 2**20)
    with gr.Row():
        with gr.Column(scale=2):
            upload = gr.File(label=f"上传整景影像 / Upload a scene (GeoTIFF·COG·JPEG 2000, ≤ {max_scene_mb:g} MB)",
                             type="filepath", elem_id="scene-upload")
            task = gr.Dropdown(TASK_CHOICES, value="caption", label="任务 / Task", elem_id="scene-task")
            category = gr.Textbox(label="检测类别 / Category (detect)", placeholder="储油罐 / storagetank")
            query = gr.Textbox(label="指代描述 / Query (refer)", placeholder="左侧的大型储油罐")
            classes = gr.Textbox(label="类别集 / Classes (classify)", placeholder="UCM，或 / or 农田,森林,住宅区")
            bands = gr.Textbox(label="波段 / Bands (R,G,B，如 / e.g. 4,3,2；空 / empty: from the file)")
            stretch = gr.Radio(["percentile", "minmax"], value="percentile", label="拉伸 / Stretch to 8 bit")
            wgs84 = gr.Checkbox(False, label="GeoJSON 用经纬度 / GeoJSON in WGS 84 lon/lat")
            run = gr.Button("运行 / Run", variant="primary", elem_id="scene-run")
        with gr.Column(scale=3):
            quicklook = gr.Image(label="整景缩略图 / Quicklook", type="filepath", format="png", interactive=False,
                                 elem_id="scene-quicklook")
            summary = gr.Textbox(label="整景摘要 / Summary", lines=4, interactive=False, elem_id="scene-summary")
            status = gr.Markdown(elem_id="scene-status")
            geojson = gr.File(label="下载 / Download scene.geojson", interactive=False, elem_id="scene-geojson")

    def on_run(path, task, category, query, classes, bands, stretch, wgs84, progress=gr.Progress()):
        def tiles(finished: int, total: int) -> None:
            progress((finished, total), desc="切片 / tiles", unit="tiles")

        return run_scene(engine, path, task, category, query, classes, bands, stretch, wgs84, max_bytes, tiles)

    run.click(on_run, [upload, task, category, query, classes, bands, stretch, wgs84], [quicklook, summary, geojson, status],
              api_name="scene", concurrency_limit=1, concurrency_id="scene")
