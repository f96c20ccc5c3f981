"""One generation at a time, a bounded queue behind it: ``Generations`` runs the engine's
generations one by one in worker threads, ``Job`` is one request's (its wait, its replies on the
event loop, its stop), ``Reservation`` a request's place in the queue before its body is read."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from typing import AsyncIterator

from remoteglm.errors import RemoteGLMError
from remoteglm.serve.api_log import log
from remoteglm.serve.openai_schema import APIError, ChatRequest, ClientGone, internal_error, shutting_down

_END, _STOPPED = object(), object()


class Job:
    """One request's generation: waits for its turn, then runs ``engine.stream`` in a thread
    whose replies arrive on the event loop. ``stop`` (client gone, shutdown) ends the wait at
    once and wakes the request's reader at once; the thread sees it at the engine's next reply
    (the next token that adds to the answer) and closes the engine's iterator, which stops the
    engine's worker before its following token."""

    def __init__(self, gens: "Generations", req: ChatRequest):
        self.gens, self.req = gens, req
        self.cancel = threading.Event()
        self.reason: str | None = None  # why it was stopped: "client", "shutdown", "done"
        self.turn_future: asyncio.Future | None = None  # while waiting
        self.items: asyncio.Queue = asyncio.Queue()
        self.thread: threading.Thread | None = None
        self.started = 0.0

    def stop(self, reason: str) -> None:
        """Called on the event loop."""
        if self.reason is None:
            self.reason = reason
        self.cancel.set()
        if self.turn_future is not None and not self.turn_future.done():
            self.gens.leave(self)
            self.turn_future.set_result(None)
        self.items.put_nowait(_STOPPED)  # wake a reader now, not at the next token

    def _error(self) -> APIError:
        if self.reason == "shutdown":
            return shutting_down(cut=self.thread is not None)
        return ClientGone()

    async def turn(self) -> None:
        """Wait until this job's generation has started (it may start at once)."""
        if self.turn_future is not None:
            await self.turn_future
        if self.reason is not None:
            raise self._error()

    async def replies(self) -> AsyncIterator:
        while True:
            item = await self.items.get()
            if item is _END:
                return
            if item is _STOPPED or self.reason is not None:
                raise self._error()
            if isinstance(item, BaseException):
                raise _engine_error(item)
            yield item

    async def first(self):
        """The first reply (None if there was none)."""
        async for r in self.replies():
            return r
        return None

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        """The generation thread."""

        def post(item) -> None:
            try:
                loop.call_soon_threadsafe(self.items.put_nowait, item)
            except RuntimeError:  # the event loop is gone (forced exit): nobody is listening
                pass

        r = self.req
        try:
            replies = self.gens.engine.stream(r.image, r.query, r.history, **r.gen)
            try:
                for reply in replies:
                    if self.cancel.is_set():
                        break
                    post(reply)
            finally:
                replies.close()  # stops the engine's worker at its next token
        except BaseException as e:  # noqa: BLE001 - handed to the event loop
            post(e)
        finally:
            post(_END)
            try:
                loop.call_soon_threadsafe(self.gens.finished, self)
            except RuntimeError:
                pass


def _engine_error(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, RemoteGLMError):  # the user's input: e.g. an image that does not decode
        return APIError(400, str(exc))
    log.error("generation failed", exc_info=exc)
    return internal_error(exc)


class Generations:
    """The engine's one-at-a-time generations and the bounded queue of requests waiting for it."""

    def __init__(self, engine, max_waiting: int):
        self.engine, self.max_waiting = engine, max_waiting
        self.waiting: deque[Job] = deque()
        self.running: Job | None = None
        self.closing = False
        self.threads: set[threading.Thread] = set()
        self.seconds: float | None = None  # moving average of a generation's duration
        self.reserved = 0

    def load(self) -> int:
        """Requests holding a place: the one running, the waiting ones, the ones being read and
        checked (reserved)."""
        return (self.running is not None) + len(self.waiting) + self.reserved

    def retry_after(self) -> int:
        return max(1, min(60, math.ceil((self.seconds or 1.0) * self.load())))

    def reserve(self) -> "Reservation":
        """A place for a new request, taken before its body is read; APIError (503 shutting
        down, 429 no place left) now, so a full server spends nothing on the rest."""
        if self.closing:
            raise shutting_down()
        if self.load() >= 1 + self.max_waiting:
            s = self.retry_after()
            raise APIError(429, f"the server is busy: one answer is being generated and {self.load() - 1} requests are "
                                f"waiting, the most it queues (--max-queue {self.max_waiting}); retry in {s} s",
                           type_="rate_limit_error", code="queue_full", headers={"Retry-After": str(s)})
        self.reserved += 1
        return Reservation(self)

    def admit(self, req: ChatRequest, place: "Reservation") -> Job:
        """A job for ``req`` in the place reserved for it: started now if the model is free,
        else queued."""
        place.release()
        if self.closing:
            raise shutting_down()
        job = Job(self, req)
        if self.running is None and not self.waiting:
            self._start(job)
        else:
            job.turn_future = asyncio.get_running_loop().create_future()
            self.waiting.append(job)
        return job

    def _start(self, job: Job) -> None:
        self.running = job
        job.started = time.monotonic()
        job.thread = threading.Thread(target=job._run, args=(asyncio.get_running_loop(),), name="remoteglm-api-job", daemon=True)
        self.threads.add(job.thread)
        job.thread.start()

    def leave(self, job: Job) -> None:
        try:
            self.waiting.remove(job)
        except ValueError:
            pass

    def finished(self, job: Job) -> None:
        """On the event loop, when a job's thread is done: the next waiting job starts."""
        self.threads.discard(job.thread)
        if self.running is job:
            self.running = None
            if job.reason is None:
                took = time.monotonic() - job.started
                self.seconds = took if self.seconds is None else 0.7 * self.seconds + 0.3 * took
        while self.running is None and self.waiting and not self.closing:
            nxt = self.waiting.popleft()
            self._start(nxt)
            nxt.turn_future.set_result(None)

    def begin_shutdown(self, grace: float) -> None:
        """On the event loop: refuse new requests, send the waiting ones away (503), give the
        running one ``grace`` seconds."""
        self.closing = True
        for job in list(self.waiting):
            job.stop("shutdown")
        if self.running is not None:
            running = self.running
            asyncio.get_running_loop().call_later(grace, lambda: running.thread is not None and running.thread.is_alive()
                                                  and running.stop("shutdown"))

    def stop_all(self, timeout: float) -> None:
        """From any thread, after the server stopped: stop what still runs and wait for the
        threads (the engine's worker included) to end."""
        for job in [self.running, *self.waiting]:
            if job is not None:
                job.cancel.set()
        end = time.monotonic() + timeout
        for t in list(self.threads):
            t.join(max(0.0, end - time.monotonic()))
        lock = getattr(self.engine, "lock", None)
        if lock is not None and lock.acquire(timeout=max(0.1, end - time.monotonic())):
            lock.release()


class Reservation:
    """A request's place in the queue until its job takes it over (``Generations.admit``) or the
    request ends without one; ``release`` is idempotent."""

    def __init__(self, gens: Generations):
        self.gens, self.held = gens, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.gens.reserved -= 1
