"""POST /v1/scenes (remoteglm/serve/api_scene.py, api_upload.py, scene_jobs.py): the API server as
a real subprocess on 127.0.0.1 with the tiny VisualGLM, driven by httpx. A Sentinel-2 crop uploaded
as multipart -> a GeoJSON FeatureCollection read back with GDAL's OGR (pyogrio) in EPSG:32618,
the quicklook PNG, the upload deleted; a text file, a band out of range and the other bad inputs
one 400 line each, nothing left behind; an oversize upload 413 (declared and streamed); JSON
naming a path only under --scene_root; chat answered while a scene job runs (the engine's lock
is first come first served) and after it; DELETE cancels; the OpenAPI schema documents the route."""

import io
import json
import os
import struct
import sys
import time
from pathlib import Path

import httpx
import pytest

from remoteglm.compat import free_port

ROOT = Path(__file__).resolve().parents[2]
SCENES = ROOT / "tests" / "fixtures" / "scenes"
CROP = SCENES / "s2_crop_384.tif"  # 384 x 384, 4 bands uint16, EPSG:32618
MAX_SCENE_MB = 1
ENV = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
ENV.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("scene_dir")


@pytest.fixture(scope="module")
def server(start_server, tiny_checkpoint, scene_dir):
    port = free_port()
    cmd = [sys.executable, "-m", "remoteglm.serve.api", "--from_pretrained", str(tiny_checkpoint), "--port", str(port),
           "--max_new_tokens", "12", "--max_batch", "4", "--max_scene_mb", str(MAX_SCENE_MB), "--scene_dir", str(scene_dir),
           "--scene_root", str(SCENES)]
    srv = start_server(cmd, env=ENV, cwd=ROOT, ready_marker="serving ")
    srv.wait_ready("API server")
    yield srv, port
    srv.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server[1]}", timeout=120) as client:
        yield client


def upload(http, path_or_bytes, name="s2.tif", **fields):
    raw = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return http.post("/v1/scenes", files={"file": (name, raw, "image/tiff")},
                     data={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()})


def one_line_error(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and "\n" not in err["message"], err
    return err


def job_folders(scene_dir):
    return sorted(p for root in scene_dir.iterdir() for p in root.iterdir())


def ring_bounds(wkb: bytes) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the outer ring of a WKB Polygon (OGC Simple Features)."""
    order = "<" if wkb[0] == 1 else ">"
    kind, _, n = struct.unpack_from(order + "III", wkb, 1)
    assert kind == 3
    xy = struct.unpack_from(order + "d" * (2 * n), wkb, 13)
    return min(xy[0::2]), min(xy[1::2]), max(xy[0::2]), max(xy[1::2])


def read_ogr(path):
    import pyogrio.raw

    meta, _, geometry, fields = pyogrio.raw.read(path)
    return meta, geometry, dict(zip(meta["fields"], fields))


def test_an_uploaded_scene_comes_back_as_geojson_on_the_map_with_a_quicklook(http, scene_dir, tmp_path):
    import rasterio
    from PIL import Image

    r = upload(http, CROP, name="s2_crop_384.tif", task="caption")
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "done" and job["file"] == "s2_crop_384.tif" and job["task"]["task"] == "caption"
    res = job["result"]
    assert res["crs"] == "EPSG:32618" and (res["tile"], res["overlap"]) == (224, 28)
    assert res["tiles"] == {"total": 4, "asked": 4, "reused": 0, "skipped": 0, "failed": 0}
    assert job["progress"]["finished"] == job["progress"]["total"] == 4
    assert res["features"] == 4 and res["summary"].strip() and res["errors"] == []
    out = tmp_path / "scene.geojson"
    out.write_text(json.dumps(res["geojson"]), encoding="utf-8")
    meta, geometry, fields = read_ogr(out)
    assert meta["crs"] == "EPSG:32618" and len(geometry) == 4
    assert {"tile", "answer"} <= set(fields) and sorted(fields["tile"]) == [0, 1, 2, 3]  # (category: null for captions)
    with rasterio.open(CROP) as src:
        left, bottom, right, top = src.bounds
    for g in geometry:  # every tile footprint inside the scene's
        x0, y0, x1, y1 = ring_bounds(bytes(g))
        assert left - 1e-6 <= x0 < x1 <= right + 1e-6 and bottom - 1e-6 <= y0 < y1 <= top + 1e-6
    served = http.get(res["geojson_url"])
    assert served.status_code == 200 and served.headers["content-type"] == "application/geo+json"
    assert served.json() == res["geojson"]
    png = http.get(res["quicklook_url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(png.content))
    assert img.format == "PNG" and img.size == (384, 384)
    folder = next(f for f in job_folders(scene_dir) if f.name == job["id"])
    assert not list(folder.glob("scene*")) and (folder / "out" / "scene.geojson").is_file()  # the upload is gone
    assert http.get(f"/v1/scenes/{job['id']}").json()["result"]["geojson"] == res["geojson"]
    assert http.delete(f"/v1/scenes/{job['id']}").json() == {"id": job["id"], "object": "scene", "deleted": True}
    assert not folder.exists()
    assert one_line_error(http.get(f"/v1/scenes/{job['id']}"), 404)["code"] == "scene_not_found"


def test_bad_inputs_get_one_line_and_leave_nothing_behind(http, scene_dir):
    before = job_folders(scene_dir)
    err = one_line_error(upload(http, b"these are my notes, not a raster\n" * 20, name="notes.txt", task="caption"), 400)
    assert err["message"].startswith("not a raster: notes.txt: GDAL cannot read it"), err
    assert str(scene_dir) not in err["message"]
    err = one_line_error(upload(http, CROP, task="caption", bands="5,3,2"), 400)
    assert err["message"].startswith("band 5 is out of range: s2.tif has 4 band(s) (1..4)") and "--" not in err["message"]
    err = one_line_error(upload(http, CROP, task="detect"), 400)
    assert "needs category" in err["message"]
    assert one_line_error(upload(http, CROP, task="segment"), 400)["param"] == "task"
    assert one_line_error(upload(http, CROP, task="caption", colour="yes"), 400)["param"] == "colour"
    assert one_line_error(upload(http, CROP, task="caption", batch_size=9), 400)["param"] == "batch_size"
    assert one_line_error(upload(http, CROP, task="caption", tile=8), 400)["message"].startswith("tile 8 is too small")
    no_file = http.post("/v1/scenes", files={"task": (None, "caption")})
    assert one_line_error(no_file, 400)["param"] == "file"
    cut = http.post("/v1/scenes", content=b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.tif\"\r\n\r\nII*",
                    headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert "closing boundary" in one_line_error(cut, 400)["message"]
    assert one_line_error(http.post("/v1/scenes", content=b"II*\x00", headers={"content-type": "image/tiff"}),
                          400)["code"] == "unsupported_content_type"
    assert job_folders(scene_dir) == before


def test_an_oversize_upload_is_refused_with_413_declared_or_streamed(http, scene_dir):
    before = job_folders(scene_dir)
    big = b"\0" * int((MAX_SCENE_MB + 0.2) * 2**20)
    err = one_line_error(upload(http, big, name="big.tif"), 413)
    assert "1 MB limit (--max_scene_mb; send a smaller raster)" in err["message"]

    def chunks():  # no Content-Length: refused as it streams in
        head = b'--b0\r\nContent-Disposition: form-data; name="file"; filename="big.tif"\r\n\r\n'
        yield head
        for _ in range(12):
            yield b"\0" * 100_000

    r = http.post("/v1/scenes", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b0"})
    assert one_line_error(r, 413)["code"] == "request_too_large"
    assert job_folders(scene_dir) == before


def test_json_names_a_path_only_under_the_scene_root(http):
    r = http.post("/v1/scenes", json={"path": str(CROP), "task": "caption", "wait": False, "wgs84": True})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/scenes/{job['id']}" and job["status"] in ("queued", "running", "done")
    end = time.monotonic() + 60
    while job["status"] in ("queued", "running") and time.monotonic() < end:
        time.sleep(0.1)
        job = http.get(f"/v1/scenes/{job['id']}").json()
    assert job["status"] == "done" and job["file"] == str(CROP)
    fc = job["result"]["geojson"]
    assert len(fc["features"]) == 4
    lon, lat = fc["features"][0]["geometry"]["coordinates"][0][0]
    assert -80 < lon < -70 and 30 < lat < 45  # EPSG:32618 (UTM 18N) in WGS 84: the US east coast
    outside = ROOT / "tests" / "fixtures" / "images" / "OSBS_029.tif"
    assert one_line_error(http.post("/v1/scenes", json={"path": str(outside), "task": "caption"}), 403)["param"] == "path"
    assert one_line_error(http.post("/v1/scenes", json={"path": "s2_crop_384.tif"}), 400)["param"] == "path"
    escape = str(SCENES / ".." / "images" / "OSBS_029.tif")
    assert one_line_error(http.post("/v1/scenes", json={"path": escape, "task": "caption"}), 403)["param"] == "path"


def test_chat_is_answered_while_a_scene_runs_and_after_it(http):
    chat = {"model": "visualglm-tiny", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 4}
    r = upload(http, CROP, task="caption", tile=48, overlap=6, batch_size=1, wait=False)  # 9 x 9 tiles, one per turn
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    end = time.monotonic() + 60
    while (job := http.get(f"/v1/scenes/{job_id}").json())["progress"]["finished"] < 2 and time.monotonic() < end:
        time.sleep(0.05)
    assert job["status"] == "running" and job["progress"]["total"] == 81
    t0 = time.monotonic()
    answer = http.post("/v1/chat/completions", json=chat)
    waited = time.monotonic() - t0
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] is not None
    during = http.get(f"/v1/scenes/{job_id}").json()
    assert during["status"] == "running" and during["progress"]["finished"] < 81, (waited, during["progress"])
    assert during["progress"]["eta_s"] is not None and during["progress"]["eta_s"] > 0
    while (job := http.get(f"/v1/scenes/{job_id}").json())["status"] == "running" and time.monotonic() < end:
        time.sleep(0.1)
    assert job["status"] == "done" and job["result"]["tiles"]["asked"] == 81
    assert http.post("/v1/chat/completions", json=chat).status_code == 200


def test_delete_cancels_a_running_job(http, scene_dir):
    r = upload(http, CROP, task="caption", tile=48, overlap=6, batch_size=1, wait=False)
    job_id = r.json()["id"]
    end = time.monotonic() + 30
    while http.get(f"/v1/scenes/{job_id}").json()["progress"]["finished"] < 1 and time.monotonic() < end:
        time.sleep(0.05)
    assert http.delete(f"/v1/scenes/{job_id}").status_code == 200
    assert http.get(f"/v1/scenes/{job_id}").status_code == 404
    while any(f.name == job_id for f in job_folders(scene_dir)) and time.monotonic() < end:
        time.sleep(0.05)  # removed when the job stops, at its next batch
    assert not any(f.name == job_id for f in job_folders(scene_dir))


def test_a_waiting_client_that_goes_away_cancels_its_job(http, server, scene_dir):
    import socket

    before = {f.name for f in job_folders(scene_dir)}
    body = httpx.Request("POST", "http://x/v1/scenes", files={"file": ("s2.tif", CROP.read_bytes(), "image/tiff")},
                         data={"task": "caption", "tile": "48", "overlap": "6", "batch_size": "1"})
    raw = body.read()
    head = (f"POST /v1/scenes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {body.headers['content-type']}\r\n"
            f"Content-Length: {len(raw)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server[1]), timeout=30) as s:
        s.sendall(head + raw)
        end = time.monotonic() + 30
        while not (new := {f.name for f in job_folders(scene_dir)} - before) and time.monotonic() < end:
            time.sleep(0.05)
        job_id = new.pop()  # (its folder is made before the upload is read: 404 until the job queues)
        while (http.get(f"/v1/scenes/{job_id}").json().get("progress") or {}).get("finished", 0) < 1 \
                and time.monotonic() < end:
            time.sleep(0.05)
    while (job := http.get(f"/v1/scenes/{job_id}").json())["status"] == "running" and time.monotonic() < end:
        time.sleep(0.05)
    assert job["status"] == "cancelled" and job["progress"]["finished"] < 81
    assert job["error"]["code"] == "scene_cancelled"


def test_the_openapi_schema_documents_the_scene_routes(http):
    spec = http.get("/openapi.json").json()
    post = spec["paths"]["/v1/scenes"]["post"]
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["file"]["format"] == "binary" and "task" in form["properties"]
    assert "path" in post["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"200", "202", "400", "413"} <= set(post["responses"]) and "SceneJobInfo" in spec["components"]["schemas"]
    assert {"/v1/scenes/{job_id}", "/v1/scenes/{job_id}/quicklook.png", "/v1/scenes/{job_id}/scene.geojson"} <= set(spec["paths"])
