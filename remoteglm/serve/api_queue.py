"""The model's generations and the bounded queue in front of them: ``Generations`` takes the
waiting requests into batches (``Engine.stream_rows``: one forward pass per token for every row),
one batch at a time in a worker thread; ``Job`` is one request's part (its wait, its replies on the
event loop, its stop), ``Reservation`` a request's place in the queue before its body is read.

When the model is free, the first waiting request starts together with the requests behind it
that may share its batch (``Engine.batch_key``: the same sampling settings), up to
``--max_batch`` rows (a request asking for ``n`` choices is ``n`` rows). A request that arrives
while a batch runs waits for the next one."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from typing import AsyncIterator

from remoteglm.errors import RemoteGLMError
from remoteglm.serve.api_log import log
from remoteglm.serve.engine import Row
from remoteglm.serve.api_errors import APIError, ClientGone, internal_error, shutting_down
from remoteglm.serve.api_request import ChatRequest

_END, _STOPPED = object(), object()
# The most a free model waits for requests already arriving (their head read, their body being
# read or checked) to join the batch it starts, instead of starting one alone and making them
# wait for its whole answer.
BATCH_WAIT = 0.05


class Job:
    """One request: waits for its turn, then its ``n`` choices are rows of a batch whose replies
    arrive on the event loop as ``(choice, Reply)``. ``stop`` (client gone, shutdown, done) ends
    the wait at once, frees the request's place at once and wakes its reader; the batch drops its
    rows at their next token."""

    def __init__(self, gens: "Generations", req: ChatRequest):
        self.gens, self.req = gens, req
        self.cfg = gens.engine.config(**req.gen)
        self.key = gens.engine.batch_key(req.image, self.cfg)
        self.n = req.n
        self.cancel = threading.Event()
        self.reason: str | None = None  # why it was stopped: "client", "shutdown", "done"
        self.turn_future: asyncio.Future | None = None  # while waiting
        self.items: asyncio.Queue = asyncio.Queue()
        self.batch: Batch | None = None
        self.queued = time.monotonic()

    def stop(self, reason: str) -> None:
        """Called on the event loop."""
        if self.reason is None:
            self.reason = reason
        self.cancel.set()
        if self.turn_future is not None and not self.turn_future.done():
            self.gens.leave(self)
            self.turn_future.set_result(None)
        self.gens.running.discard(self)
        self.items.put_nowait(_STOPPED)  # wake a reader now, not at the next token

    def _error(self) -> APIError:
        if self.reason == "shutdown":
            return shutting_down(cut=self.batch is not None)
        return ClientGone()

    async def turn(self) -> None:
        """Wait until this job's batch has started."""
        if self.turn_future is not None:
            await self.turn_future
        if self.reason is not None:
            raise self._error()

    async def replies(self) -> AsyncIterator[tuple[int, object]]:
        """``(choice, Reply)`` as the answers grow, until every choice had its final reply."""
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
        """The first ``(choice, Reply)`` (None if there was none)."""
        async for r in self.replies():
            return r
        return None


def _engine_error(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, RemoteGLMError):  # the user's input: e.g. an image that does not decode
        return APIError(400, str(exc))
    log.error("generation failed", exc_info=exc)
    return internal_error(exc)


class Batch:
    """The jobs generated together, in one worker thread; what it knows of its progress (for
    Retry-After) is read on the event loop."""

    def __init__(self, gens: "Generations", jobs: list[Job]):
        self.gens, self.jobs = gens, jobs
        self.started = time.monotonic()
        self.made = 0  # tokens generated so far per row (the rows advance together)
        self.prompts: dict[int, int] = {}  # prompt tokens of each job's rows, once known
        self.thread: threading.Thread | None = None

    def seconds_left(self) -> float:
        """The time until the longest answer still wanted can end, at the pace so far (an upper
        bound: an answer may end earlier)."""
        now = time.monotonic()
        left = 0
        for job in self.jobs:
            if job.cancel.is_set():
                continue
            cap = job.cfg.max_length - self.prompts.get(id(job), 0)
            if job.cfg.max_new_tokens is not None:
                cap = min(cap, job.cfg.max_new_tokens)
            left = max(left, cap - self.made)
        per_token = (now - self.started) / max(1, self.made)  # the prompt's own pass included
        return left * per_token

    def run(self, loop: asyncio.AbstractEventLoop) -> None:
        """The worker thread: every job's rows through ``Engine.stream_rows``."""

        def post(job: Job, item) -> None:
            try:
                loop.call_soon_threadsafe(job.items.put_nowait, item)
            except RuntimeError:  # the event loop is gone (forced exit): nobody is listening
                pass

        rows, owner = [], []
        for job in self.jobs:
            r = job.req
            for k in range(job.n):
                rows.append(Row(r.image, r.query, list(r.history), job.cfg, r.system, job.cancel.is_set, partial=r.stream))
                owner.append((job, k))
        left = {id(job): job.n for job in self.jobs}  # choices still without their final reply
        try:
            replies = self.gens.engine.stream_rows(rows)
            try:
                for i, reply in replies:
                    job, k = owner[i]
                    if job.cancel.is_set() or not left[id(job)]:
                        continue
                    if isinstance(reply, BaseException):  # this request's own input: it fails alone
                        left[id(job)] = 0
                        post(job, reply)
                        post(job, _END)
                        continue
                    self.prompts[id(job)] = reply.prompt_tokens
                    self.made = max(self.made, reply.completion_tokens)
                    post(job, (k, reply))
                    if reply.finish_reason is not None:
                        left[id(job)] -= 1
                        if not left[id(job)]:
                            post(job, _END)
            finally:
                replies.close()  # the engine stops at its next token
        except BaseException as e:  # noqa: BLE001 - the batch itself failed: its requests say so
            for job in self.jobs:
                if left[id(job)]:
                    post(job, e)
        finally:
            for job in self.jobs:
                if left[id(job)]:
                    post(job, _END)
            try:
                loop.call_soon_threadsafe(self.gens.finished, self)
            except RuntimeError:
                pass


class Generations:
    """The engine's batches, one at a time, and the bounded queue of requests waiting for them."""

    def __init__(self, engine, max_waiting: int, max_batch: int = 1):
        self.engine, self.max_waiting, self.max_batch = engine, max_waiting, max(1, max_batch)
        self.waiting: deque[Job] = deque()
        self.running: set[Job] = set()  # jobs of the running batch not yet finished or stopped
        self.batch: Batch | None = None
        self.closing = False
        self.threads: set[threading.Thread] = set()
        self.reserved = 0
        self.timer: asyncio.TimerHandle | None = None

    def load(self) -> int:
        """Requests holding a place: those being answered, the waiting ones, the ones being read
        and checked (reserved)."""
        return len(self.running) + len(self.waiting) + self.reserved

    def retry_after(self) -> int:
        """Seconds until places free up: when the running batch ends, the requests waiting move
        into the next one. From the batch's own progress, not from earlier requests' times."""
        if self.batch is None:
            return 1
        return max(1, min(60, math.ceil(self.batch.seconds_left())))

    def reserve(self) -> "Reservation":
        """A place for a new request, taken before its body is read; APIError (503 shutting
        down, 429 no place left) now, so a full server spends nothing on the rest."""
        if self.closing:
            raise shutting_down()
        queued = len(self.waiting) + self.reserved
        if queued >= self.max_waiting + (0 if self.batch is not None else 1):
            s = self.retry_after()
            raise APIError(429, f"the server is busy: {len(self.running)} answer(s) are being generated and {queued} "
                                f"requests are waiting, the most it queues (--max_queue {self.max_waiting}); retry in {s} s",
                           type_="rate_limit_error", code="queue_full", headers={"Retry-After": str(s)})
        self.reserved += 1
        return Reservation(self)

    def admit(self, req: ChatRequest, place: "Reservation") -> Job:
        """A job for ``req`` in the place reserved for it: in a batch now if the model is free,
        else queued."""
        place.release()
        if self.closing:
            raise shutting_down()
        job = Job(self, req)
        job.turn_future = asyncio.get_running_loop().create_future()
        self.waiting.append(job)
        self._start_next()
        return job

    def _start_next(self) -> None:
        """On the event loop: the next batch, if the model is free: the first waiting job and the
        jobs behind it with the same batch key, up to ``max_batch`` rows."""
        if self.batch is not None or not self.waiting or self.closing:
            return
        head = self.waiting[0]
        jobs, rows = [], 0
        for job in list(self.waiting):
            if job.key == head.key and rows + job.n <= self.max_batch:
                jobs.append(job)
                rows += job.n
        late = head.queued + BATCH_WAIT - time.monotonic()
        if self.reserved and rows < self.max_batch and late > 0:  # more are arriving: wait for them a moment
            if self.timer is None:
                self.timer = asyncio.get_running_loop().call_later(late, self._wake)
            return
        for job in jobs:
            self.waiting.remove(job)
        batch = self.batch = Batch(self, jobs)
        for job in jobs:
            job.batch = batch
            self.running.add(job)
        batch.thread = threading.Thread(target=batch.run, args=(asyncio.get_running_loop(),), name="remoteglm-api-batch",
                                        daemon=True)
        self.threads.add(batch.thread)
        batch.thread.start()
        for job in jobs:
            job.turn_future.set_result(None)

    def _wake(self) -> None:
        self.timer = None
        self._start_next()

    def leave(self, job: Job) -> None:
        try:
            self.waiting.remove(job)
        except ValueError:
            pass

    def finished(self, batch: Batch) -> None:
        """On the event loop, when a batch's thread is done: the next batch starts."""
        self.threads.discard(batch.thread)
        self.running.difference_update(batch.jobs)
        if self.batch is batch:
            self.batch = None
        self._start_next()

    def begin_shutdown(self, grace: float) -> None:
        """On the event loop: refuse new requests, send the waiting ones away (503), give the
        running ones ``grace`` seconds."""
        self.closing = True
        for job in list(self.waiting):
            job.stop("shutdown")
        if self.running:
            running = list(self.running)
            asyncio.get_running_loop().call_later(grace, lambda: [j.stop("shutdown") for j in running if j in self.running])

    def stop_all(self, timeout: float) -> None:
        """From any thread, after the server stopped: stop what still runs and wait for the
        threads (the engine's workers included) to end."""
        for job in [*self.running, *self.waiting]:
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
