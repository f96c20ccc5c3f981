"""The API's scene routes (``add_scene_routes``): tiled answers over a whole raster, the job of
``remoteglm scene`` (``serve.scene_run.answer_scene``) over HTTP.

    POST   /v1/scenes                      a raster (multipart/form-data: the file as ``file``, the
                                           options as text fields) or, only on a server started
                                           with --scene_root DIR, JSON naming a raster under DIR
                                           (``{"path": "/data/s2.tif", "task": "caption"}``)
    GET    /v1/scenes/{id}                 the job: status, progress (tiles, ETA), its result
    GET    /v1/scenes/{id}/quicklook.png   the scene with the boxes drawn (PNG)
    GET    /v1/scenes/{id}/scene.geojson   the features (application/geo+json)
    DELETE /v1/scenes/{id}                 cancel the job and delete its files

Options (text fields or JSON members; the command's flags): ``task`` (caption, classify, detect,
refer [detect]), ``category`` (detect), ``query`` (refer), ``classes`` (classify), ``bands``
("4,3,2"), ``stretch`` (percentile, minmax), ``wgs84``, ``tile``, ``overlap``, ``skip_empty``,
``max_new_tokens``, ``batch_size`` (tiles per turn of the model, at most --max_batch), ``wait``
[true]: answer when the job is done (200, the result; a client that goes away cancels the job)
or at once (false: 202 with the job's id; poll GET /v1/scenes/{id}).

The upload streams to a file in the job's folder (``api_upload``), at most --max_scene_mb; the
raster is opened and every option checked (``scene_run.check_job``) before the job queues: one
line each (400), e.g. not a raster, a band out of range. The result carries the GeoJSON
FeatureCollection (the scene's CRS, or WGS 84 with ``wgs84``), the Chinese summary, the tile
counts, and the URLs of the quicklook and the GeoJSON. How jobs share the model with chat
requests, and how long they are kept: ``serve.scene_jobs``.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Literal, Optional, Union

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from remoteglm.errors import RemoteGLMError
from remoteglm.serve.api_errors import APIError, ClientGone, validation_error
from remoteglm.serve.api_state import SCENES_PATH, APIState
from remoteglm.serve.api_upload import read_form, safe_name
from remoteglm.serve.openai_schema import ERROR_RESPONSES
from remoteglm.serve.scene_jobs import SceneJob, remove

SCENE_ERRORS = {s: ERROR_RESPONSES[400] for s in (403, 409, 413, 499, 507)}  # the same JSON shape
FILE_FIELD = "file"
DISK_MARGIN = 64 * 2**20  # free disk space kept beyond an upload's declared size
_FLAGS = re.compile(r"--(task|category|query|classes|bands|stretch|wgs84|tile|overlap|skip_empty|max_new_tokens|"
                    r"batch_size)\b")


class SceneOptions(BaseModel):
    """The options of a scene job (``remoteglm scene``'s flags)."""

    model_config = ConfigDict(extra="forbid")
    task: Literal["caption", "classify", "detect", "refer"] = "detect"
    category: Optional[str] = None
    query: Optional[str] = None
    classes: Union[str, list[str], None] = None
    bands: Union[str, list[int], None] = None
    stretch: Literal["percentile", "minmax"] = "percentile"
    wgs84: bool = False
    tile: Optional[int] = None
    overlap: Optional[int] = None
    skip_empty: float = 0.0
    max_new_tokens: Optional[int] = None
    batch_size: Optional[int] = None
    wait: bool = True


class SceneUpload(SceneOptions):
    """POST /v1/scenes as multipart/form-data: the raster and the options as text fields."""

    file: bytes


class ScenePathRequest(SceneOptions):
    """POST /v1/scenes as JSON: a raster under one of the server's --scene_root folders."""

    path: str


class SceneProgress(BaseModel):
    finished: int
    total: int
    eta_s: Optional[float] = None


class SceneOutcome(BaseModel):
    crs: Optional[str]
    tile: int
    overlap: int
    tiles: dict[str, int]
    features: int
    counts: dict[str, int]
    summary: str
    notes: list[str]
    errors: list[str]
    seconds: float
    geojson: dict
    geojson_url: str
    quicklook_url: str


class SceneJobInfo(BaseModel):
    id: str
    object: Literal["scene"] = "scene"
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    created: int
    model: str
    file: str
    task: dict
    progress: SceneProgress
    result: Optional[SceneOutcome] = None
    error: Optional[dict] = None


def _body_docs() -> dict:
    upload = SceneUpload.model_json_schema()
    upload["properties"]["file"] = {"type": "string", "format": "binary", "description": "the raster"}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": upload},
        "application/json": {"schema": ScenePathRequest.model_json_schema()}}}}


def _plain(text: str) -> str:
    """A scene error for an API client: the command's flags named as the request's fields."""
    return _FLAGS.sub(r"\1", text)


def _options(raw: dict) -> SceneOptions:
    data = {k: v for k, v in raw.items() if v != ""}  # an empty form field is one not given
    try:
        return (ScenePathRequest if "path" in data else SceneOptions).model_validate(data)
    except ValidationError as e:
        raise validation_error(e.errors(), data) from None


def _job_options(o: SceneOptions, max_batch: int) -> dict:
    """``answer_scene``'s keyword arguments (task included) for the options ``o``."""
    from remoteglm.scene.raster import parse_bands
    from remoteglm.serve.scene_answers import scene_task
    from remoteglm.serve.scene_run import DEFAULT_BATCH, DEFAULT_MAX_NEW_TOKENS

    batch = o.batch_size if o.batch_size is not None else min(DEFAULT_BATCH, max_batch)
    if o.batch_size is not None and not 1 <= o.batch_size <= max_batch:
        raise APIError(400, f"batch_size {o.batch_size} must be from 1 to {max_batch}, the answers this server generates "
                            "at once (--max_batch)", param="batch_size")
    try:
        task = scene_task(o.task, o.category, o.query, o.classes)
        bands = parse_bands(o.bands) if isinstance(o.bands, str) else (tuple(o.bands) if o.bands is not None else None)
    except RemoteGLMError as e:
        raise APIError(400, _plain(str(e)), code="invalid_value") from None
    return dict(task=task, bands=bands, stretch=o.stretch, tile=o.tile, overlap=o.overlap, wgs84=o.wgs84,
                skip_empty=o.skip_empty, batch_size=batch,
                max_new_tokens=o.max_new_tokens if o.max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS)


def _allowed_path(text: str, roots) -> Path:
    if not roots:
        raise APIError(400, "this server reads no rasters by path (start it with --scene_root DIR); upload the raster "
                            "as multipart/form-data instead", param="path")
    p = Path(text).expanduser()
    if not p.is_absolute():
        raise APIError(400, f"path {text} must be absolute", param="path")
    real = p.resolve()
    if not any(real.is_relative_to(r) for r in roots):
        raise APIError(403, f"path {text} is outside the folders this server may read (--scene_root)",
                       type_="permission_error", param="path")
    if not real.is_file():
        raise APIError(400, f"no such file: {text}", param="path")
    return real


async def _json_body(request: Request, limit: int) -> dict:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise APIError(413, f"a JSON scene request is at most {limit / 2**20:g} MB (--max_request_mb); upload a raster "
                                "as multipart/form-data", code="request_too_large")
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise APIError(400, f"the request body is not valid JSON ({e})", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object naming the raster (path) and the options",
                       code="invalid_request")
    return body


def _info(job: SceneJob, api: APIState) -> dict:
    out = {"id": job.id, "object": "scene", "status": job.status, "created": int(job.created), "model": api.engine.name,
           "file": job.name, "task": job.options["task"].settings(),
           "progress": {"finished": job.finished, "total": job.total, "eta_s": job.eta_s()},
           "result": None, "error": None}
    if job.error is not None:
        out["error"] = job.error.body()["error"]
    r = job.result
    if job.status == "done" and r is not None:
        from remoteglm.io import read_json

        url = f"{SCENES_PATH}/{job.id}"
        out["result"] = {"crs": r.crs, "tile": r.tile, "overlap": r.overlap,
                         "tiles": {"total": r.tiles, "asked": r.asked, "reused": r.reused, "skipped": r.skipped,
                                   "failed": r.failed},
                         "features": r.features, "counts": {("null" if k is None else k): v for k, v in r.counts.items()},
                         "summary": r.summary, "notes": [_plain(job.plain(n)) for n in r.notes],
                         "errors": [job.plain(e) for e in r.errors], "seconds": r.seconds,
                         "geojson": read_json(job.out_dir / "scene.geojson"),
                         "geojson_url": f"{url}/scene.geojson", "quicklook_url": f"{url}/quicklook.png"}
    return out


async def _until_end_or_gone(request: Request, job: SceneJob, api: APIState) -> None:
    """Wait for ``job`` to end; a client that goes away first cancels it (ClientGone)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    ended, left = asyncio.ensure_future(job.wait()), asyncio.ensure_future(gone())
    try:
        done, _ = await asyncio.wait({ended, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (ended, left):
            if not t.done():
                t.cancel()
    if ended not in done:
        api.scenes.cancel(job)
        raise ClientGone()


async def _receive_job(request: Request, api: APIState, job_id: str, folder: Path) -> SceneJob:
    """The job a POST describes, its raster on disk and its options checked (not queued)."""
    scenes = api.scenes
    kind = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if kind == "application/json":
        body = await _json_body(request, api.max_request_bytes)
        o = _options(body)
        source, name, uploaded = _allowed_path(o.path, scenes.limits.roots), o.path, False
    else:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) + DISK_MARGIN > scenes.free_bytes():
            raise APIError(507, f"not enough disk space for a {int(declared) / 2**20:.0f} MB upload in the server's scene "
                                "folder (--scene_dir); retry later or send a smaller raster", type_="server_error",
                           code="insufficient_storage")
        upload = folder / "upload"
        try:
            fields, filename = await read_form(request.stream(), request.headers.get("content-type"), FILE_FIELD, upload)
        except OSError as e:
            raise APIError(507, f"the upload could not be stored: {e.strerror or e}", type_="server_error",
                           code="insufficient_storage") from None
        if filename is None:
            raise APIError(400, f"the form has no file: send the raster as the field {FILE_FIELD!r}", param=FILE_FIELD)
        o = _options(fields)
        source = upload.with_name("scene" + "".join(c for c in Path(filename).suffix.lower() if c.isalnum() or c == ".")[:10])
        upload.rename(source)
        name, uploaded = safe_name(filename), True
    job = SceneJob(job_id, folder, source, name, uploaded, _job_options(o, api.generations.max_batch),
                   client_waits=o.wait)
    try:
        from remoteglm.serve.scene_run import check_job

        opts = {k: v for k, v in job.options.items() if k != "task"}
        await anyio.to_thread.run_sync(lambda: check_job(source, job.options["task"], out_dir=job.out_dir, **opts))
    except RemoteGLMError as e:
        raise APIError(400, _plain(job.plain(str(e))), code="bad_scene") from None
    return job


def add_scene_routes(app: FastAPI, api: APIState) -> None:
    """The scene routes (module doc) on ``app``."""
    scenes = api.scenes

    def find(job_id: str) -> SceneJob:
        job = scenes.get(job_id)
        if job is None:
            raise APIError(404, f"no scene job {job_id} (jobs are kept {scenes.limits.keep_s / 60:g} minutes after they "
                                "end: --scene_keep_minutes)", param="id", code="scene_not_found")
        return job

    @app.post(SCENES_PATH, response_model=None, openapi_extra=_body_docs(), status_code=200,
              summary="Tiled answers over a whole raster (GeoTIFF / COG / JPEG 2000): GeoJSON, summary, quicklook",
              responses={**ERROR_RESPONSES, **SCENE_ERRORS, 200: {"model": SceneJobInfo}, 202: {"model": SceneJobInfo}})
    async def create_scene(request: Request) -> Response:
        scenes.sweep()
        scenes.reserve()  # 429 / 503 before a byte of the body is read
        job_id, folder = scenes.new_folder()
        try:
            job = await _receive_job(request, api, job_id, folder)
            scenes.submit(job)
        except BaseException:
            scenes.unreserve()
            remove(folder)
            raise
        if not job.client_waits:
            return JSONResponse(_info(job, api), status_code=202, headers={"Location": f"{SCENES_PATH}/{job.id}"})
        await _until_end_or_gone(request, job, api)
        if job.status != "done":
            raise job.error or APIError(500, f"the scene job ended {job.status}", type_="server_error")
        return JSONResponse(await anyio.to_thread.run_sync(_info, job, api))

    @app.get(SCENES_PATH + "/{job_id}", response_model=SceneJobInfo, responses=ERROR_RESPONSES,
             summary="A scene job: status, progress over tiles with ETA, and its result once done")
    async def get_scene(job_id: str) -> JSONResponse:
        job = find(job_id)
        return JSONResponse(await anyio.to_thread.run_sync(_info, job, api))

    def output(job_id: str, name: str, media: str) -> FileResponse:
        job = find(job_id)
        if job.status != "done":
            raise APIError(409, f"scene job {job_id} is {job.status}, not done: it has no {name}", code="scene_not_done")
        return FileResponse(job.out_dir / name, media_type=media)

    @app.get(SCENES_PATH + "/{job_id}/quicklook.png", response_class=FileResponse, responses=ERROR_RESPONSES,
             summary="The scene's quicklook with the boxes drawn (PNG)")
    async def get_quicklook(job_id: str) -> FileResponse:
        return output(job_id, "quicklook.png", "image/png")

    @app.get(SCENES_PATH + "/{job_id}/scene.geojson", response_class=FileResponse, responses=ERROR_RESPONSES,
             summary="The scene's features (GeoJSON FeatureCollection)")
    async def get_geojson(job_id: str) -> FileResponse:
        return output(job_id, "scene.geojson", "application/geo+json")

    @app.delete(SCENES_PATH + "/{job_id}", responses=ERROR_RESPONSES, summary="Cancel a scene job and delete its files")
    async def delete_scene(job_id: str) -> dict:
        scenes.delete(find(job_id))
        return {"id": job_id, "object": "scene", "deleted": True}
