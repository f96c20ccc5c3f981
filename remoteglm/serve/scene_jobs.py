"""The API server's scene jobs (``SceneJobs``): each POST /v1/scenes is a job in a folder of its
own under the server's scene folder (the uploaded raster, then what ``serve.scene_run.answer_scene``
writes there), run one at a time in a worker thread and kept ``keep_s`` after it ended.

Sharing the one model with chat requests: a job asks ``batch_size`` tiles at a time through
``Engine.batch``, which holds the engine's lock for that batch only, and the lock is first come
first served (``serve.turns.FairLock``). A chat batch that is waiting for the model therefore goes
before the job's next batch of tiles: a chat request waits at most one batch of tiles (lower
``batch_size`` to shorten that), and the scene goes on between chat batches. Jobs wait in a
bounded line: at most ``max_jobs`` are queued or running, uploads still arriving included; more
get 429. Cancelling (DELETE, a waiting client gone, shutdown) stops a job at its next batch; an
uploaded raster is deleted as soon as its job ends, the rest when the job expires or the server
stops.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from remoteglm.errors import RemoteGLMError
from remoteglm.serve.api_errors import APIError, internal_error, shutting_down
from remoteglm.serve.api_log import log

DEFAULT_MAX_SCENE_MB = 2048.0
DEFAULT_MAX_SCENE_JOBS = 4
DEFAULT_SCENE_KEEP_S = 3600.0
DEFAULT_SCENE_UPLOAD_TIMEOUT = 1800.0
MAX_KEPT = 64  # ended jobs kept at most (the oldest go first)


@dataclass(frozen=True)
class SceneLimits:
    """The scene routes' settings (the command line's ``--max_scene_mb`` ... ``--scene_root``).
    ``folder``: where job folders are made (None: the system's temp folder); ``roots``: folders
    whose rasters a request may name by path (empty: uploads only)."""

    max_bytes: int = int(DEFAULT_MAX_SCENE_MB * 2**20)
    folder: Path | None = None
    roots: tuple[Path, ...] = ()
    max_jobs: int = DEFAULT_MAX_SCENE_JOBS
    keep_s: float = DEFAULT_SCENE_KEEP_S
    upload_timeout: float = DEFAULT_SCENE_UPLOAD_TIMEOUT


class Cancelled(Exception):
    """Raised from a job's progress callback to stop ``answer_scene`` at its next batch."""


@dataclass
class SceneJob:
    """One scene job. ``name``: the raster as the client knows it (its upload's file name or the
    path it gave), used in every message instead of the server's own paths."""

    id: str
    folder: Path
    source: Path
    name: str
    uploaded: bool
    options: dict  # answer_scene's keyword arguments, task included, out_dir and progress excepted
    status: str = "queued"  # queued, running, done, failed, cancelled
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    finished: int = 0
    total: int = 0
    result: object = None  # scene_run.SceneResult once done
    error: APIError | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    notify: list = field(default_factory=list)  # (loop, future) of the clients waiting for the end
    deleted: bool = False
    client_waits: bool = True  # the client waits for the end (POST ... wait=true)
    _pace: tuple[float, int] | None = None  # (time, tiles finished) when this run's counting began

    @property
    def out_dir(self) -> Path:
        return self.folder / "out"

    def progress(self, finished: int, total: int) -> None:
        """``answer_scene``'s callback: counts, and the stop asked for."""
        if self._pace is None:
            self._pace = (time.monotonic(), finished)
        self.finished, self.total = finished, total
        if self.cancel.is_set():
            raise Cancelled()

    def eta_s(self) -> float | None:
        """Seconds until the last tile, at this run's pace so far (None before it is known)."""
        if self.status != "running" or self._pace is None:
            return 0.0 if self.status == "done" else None
        t0, f0 = self._pace
        done = self.finished - f0
        if done <= 0:
            return None
        return round((self.total - self.finished) * (time.monotonic() - t0) / done, 1)

    def plain(self, text: str) -> str:
        """``text`` with the server's paths replaced by the raster's name as the client knows it."""
        return text.replace(str(self.source), self.name).replace(str(self.folder), "(job folder)")

    async def wait(self) -> None:
        """Until the job ended (on the event loop)."""
        if self.ended is not None:
            return
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.notify.append((loop, fut))
        await fut


class SceneJobs:
    """The scene jobs of one server (module doc)."""

    def __init__(self, engine, limits: SceneLimits = SceneLimits()):
        self.engine, self.limits = engine, limits
        self.jobs: dict[str, SceneJob] = {}
        self.line: deque[SceneJob] = deque()
        self.receiving = 0  # uploads being received: they hold a place in the line
        self.closing = False
        self._root: Path | None = None
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    # places and folders
    def active(self) -> int:
        return self.receiving + sum(1 for j in self.jobs.values() if j.status in ("queued", "running"))

    def reserve(self) -> None:
        """A place for a new job, taken before its upload is read: 503 shutting down, 429 full."""
        if self.closing:
            raise shutting_down()
        if self.active() >= self.limits.max_jobs:
            running = next((j for j in self.jobs.values() if j.status == "running"), None)
            eta = running.eta_s() if running is not None else None
            s = int(max(1, min(3600, eta or 60)))
            raise APIError(429, f"the server is busy with scenes: {self.active()} scene job(s) are queued, running or "
                                f"uploading, the most it takes (--max_scene_jobs {self.limits.max_jobs}); retry in {s} s",
                           type_="rate_limit_error", code="queue_full", headers={"Retry-After": str(s)})
        self.receiving += 1

    def unreserve(self) -> None:
        self.receiving = max(0, self.receiving - 1)

    def new_folder(self) -> tuple[str, Path]:
        """(a new job id, its folder), made now (mode 0700)."""
        if self._root is None:
            base = self.limits.folder
            if base is not None:
                base.mkdir(parents=True, exist_ok=True)
            self._root = Path(tempfile.mkdtemp(prefix="remoteglm-scenes-", dir=base))
        job_id = "scene-" + secrets.token_hex(12)
        folder = self._root / job_id
        folder.mkdir(mode=0o700)
        return job_id, folder

    def free_bytes(self) -> int:
        return shutil.disk_usage(self._root).free if self._root is not None else 1 << 62

    # the line and the worker
    def submit(self, job: SceneJob) -> None:
        """Queue ``job`` (its place was reserved; its inputs checked)."""
        self.unreserve()
        if self.closing:
            remove(job.folder)
            raise shutting_down()
        with self._cv:
            self.jobs[job.id] = job
            self.line.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="remoteglm-api-scenes", daemon=True)
                self._thread.start()
            self._cv.notify()

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self.line and not self.closing:
                    self._cv.wait()
                if self.closing and not self.line:
                    return
                job = self.line.popleft()
                if job.status != "queued":  # cancelled while waiting
                    continue
                job.status, job.started = "running", time.time()
            self._run(job)

    def _run(self, job: SceneJob) -> None:
        from remoteglm.serve.scene_run import answer_scene

        try:
            job.result = answer_scene(self.engine, job.source, out_dir=job.out_dir, progress=job.progress, **job.options)
            job.status = "done"
        except Cancelled:
            job.status = "cancelled"
            job.error = shutting_down(cut=True) if self.closing else APIError(409, "the scene job was cancelled",
                                                                             code="scene_cancelled")
        except RemoteGLMError as e:  # the raster itself (e.g. changed since it was checked)
            job.status, job.error = "failed", APIError(400, job.plain(str(e)), code="bad_scene")
        except Exception as e:  # noqa: BLE001 - out of memory, a bug: the job fails, the server goes on
            log.error("scene job %s failed", job.id, exc_info=e)
            job.status, job.error = "failed", internal_error(e)
        finally:
            self._ended(job)

    def _ended(self, job: SceneJob) -> None:
        if job.uploaded:
            try:
                job.source.unlink()
            except OSError:
                pass
        job.ended = time.time()
        if job.deleted:
            remove(job.folder)
        for loop, fut in job.notify:
            try:
                loop.call_soon_threadsafe(lambda f=fut: f.done() or f.set_result(None))
            except RuntimeError:  # the event loop is gone
                pass
        job.notify.clear()

    # asked by the routes
    def get(self, job_id: str) -> SceneJob | None:
        self.sweep()
        return self.jobs.get(job_id)

    def cancel(self, job: SceneJob) -> None:
        """Stop ``job``: at once if it waits in line, at its next batch if it runs."""
        job.cancel.set()
        with self._cv:
            if job.status == "queued":
                job.status = "cancelled"
                job.error = shutting_down() if self.closing else APIError(409, "the scene job was cancelled",
                                                                         code="scene_cancelled")
                self._ended(job)

    def delete(self, job: SceneJob) -> None:
        """Cancel ``job`` and forget it; its folder goes now, or when it ends if it runs."""
        job.deleted = True
        self.cancel(job)
        self.jobs.pop(job.id, None)
        if job.ended is not None:
            remove(job.folder)

    def sweep(self, now: float | None = None) -> None:
        """Delete the jobs that ended more than ``keep_s`` ago, and the oldest beyond MAX_KEPT."""
        now = time.time() if now is None else now
        ended = sorted((j for j in self.jobs.values() if j.ended is not None), key=lambda j: j.ended)
        extra = max(0, len(ended) - MAX_KEPT)
        for k, job in enumerate(ended):
            if k < extra or now - job.ended > self.limits.keep_s:
                self.jobs.pop(job.id, None)
                remove(job.folder)

    # shutdown
    def begin_shutdown(self) -> None:
        """No new jobs; the queued ones end now (503), the running one at its next batch."""
        self.closing = True
        for job in list(self.jobs.values()):
            if job.ended is None:
                self.cancel(job)
        with self._cv:
            self._cv.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        """After the server stopped: stop, wait for the worker, delete every job folder."""
        if not self.closing:
            self.begin_shutdown()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._root is not None:
            remove(self._root)


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
