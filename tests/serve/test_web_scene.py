"""The web demo's "整景 / Scene" tab (remoteglm/serve/web_scene.py): web_demo.py as a real
subprocess on 127.0.0.1 with the tiny VisualGLM, driven through gradio_client like the chat tab's
tests. The Sentinel-2 fixture scene -> a scene.geojson that GDAL's OGR (pyogrio) reads in
EPSG:32618, a PNG quicklook, the summary and the tile counts; a text file, a band out of range and a
missing category one line each in the status; the chat tab still answers; progress over tiles."""

import os
import sys
from pathlib import Path

import pytest

from remoteglm.compat import free_port

ROOT = Path(__file__).resolve().parents[2]
CROP = ROOT / "tests" / "fixtures" / "scenes" / "s2_crop_384.tif"
PNG = ROOT / "tests" / "fixtures" / "images" / "s2_farmland.png"
DIST_VARS = ("MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK", "WORLD_SIZE")


@pytest.fixture(scope="module")
def gradio_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("gradio_scene")


@pytest.fixture(scope="module")
def client(start_server, tiny_checkpoint, gradio_tmp):
    from gradio_client import Client

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", GRADIO_TEMP_DIR=str(gradio_tmp),
               GRADIO_ANALYTICS_ENABLED="False")
    srv = start_server([sys.executable, str(ROOT / "web_demo.py"), "--from_pretrained", str(tiny_checkpoint),
                        "--port", str(port), "--max_new_tokens", "12", "--max_upload_mb", "1", "--max_scene_mb", "2"],
                       env=env, cwd=ROOT, ready_marker="Running on local URL")
    srv.wait_ready("web demo")
    yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    srv.stop()


def scene(client, path, task="caption", category="", query="", classes="", bands="", stretch="percentile", wgs84=False):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), task, category, query, classes, bands, stretch, wgs84, api_name="/scene")


def test_the_scene_tab_gives_a_geojson_a_quicklook_and_a_summary(client, gradio_tmp):
    import pyogrio.raw
    from PIL import Image

    quicklook, summary, geojson, status = scene(client, CROP)
    assert status.startswith("切片 / tiles: 4（224 px，重叠 / overlap 28）；问 / asked 4") and "EPSG:32618" in status, status
    assert summary.strip()
    meta, _, geometry, _ = pyogrio.raw.read(geojson)
    assert Path(geojson).name == "scene.geojson" and meta["crs"] == "EPSG:32618" and len(geometry) == 4
    with Image.open(quicklook) as img:
        assert img.format == "PNG" and img.size == (384, 384)
    runs = list(gradio_tmp.rglob("remoteglm-scene-*"))  # in the demo's own upload folder: swept with the uploads
    assert runs and all((r / "scene.geojson").is_file() for r in runs)


def test_bad_scenes_get_one_line_in_the_status(client, tmp_path):
    notes = tmp_path / "notes.tif"
    notes.write_bytes(b"just text, not a raster\n" * 10)
    out = scene(client, notes)
    assert out[0] is None and out[2] is None and out[3].startswith("⚠️ not a raster: notes.tif: GDAL cannot read it")
    assert str(tmp_path) not in out[3] and "\n" not in out[3]
    status = scene(client, CROP, bands="5,3,2")[3]
    assert status.startswith("⚠️ band 5 is out of range: s2_crop_384.tif has 4 band(s)"), status
    assert "needs category" in scene(client, CROP, task="detect")[3]
    big = tmp_path / "big.tif"
    big.write_bytes(b"\0" * (3 * 2**20))  # over --max_scene_mb 2: gradio's own limit (the larger of the two)
    with pytest.raises(ValueError, match="exceeds the maximum file size of 2097152 bytes"):
        scene(client, big)


def test_the_chat_tab_still_answers(client):
    from gradio_client import handle_file

    preview, chat = client.predict(handle_file(str(PNG)), api_name="/upload_image")
    assert preview and chat == []
    messages, _ = client.predict("描述这张图片。", [], 0, 0.4, 100, 2048, 12, api_name="/ask")
    assert messages[-1]["role"] == "assistant" and messages[-1]["content"]


def test_progress_goes_over_the_tiles(tiny, tmp_path, monkeypatch):
    from remoteglm.serve.sampling import DEMO_DEFAULTS
    from remoteglm.serve.visualglm_engine import VisualGLMEngine
    from remoteglm.serve.web_scene import run_scene

    model, tok, _ = tiny
    engine = VisualGLMEngine(model, tok, defaults=DEMO_DEFAULTS, max_new_tokens=8)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    seen = []
    quicklook, _, geojson, status = run_scene(engine, str(CROP), "detect", "储油罐", "", "", "4,3,2", "minmax", True, 2**30,
                                              lambda f, t: seen.append((f, t)))
    assert seen[0] == (0, 4) and seen[-1] == (4, 4) and [f for f, _ in seen] == sorted(f for f, _ in seen)
    assert Path(geojson).parent.parent == tmp_path and Path(quicklook).is_file() and "EPSG:32618" in status
    assert run_scene(engine, str(CROP), "caption", "", "", "", "", "percentile", False, 1000)[3] == (
        "⚠️ s2_crop_384.tif: 0.7 MB，超过 0.000953674 MB 的上限 / over the 0.000953674 MB scene upload limit")
