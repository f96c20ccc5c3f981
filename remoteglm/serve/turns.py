"""The engine's lock, first come first served (``FairLock``): the model is lent one holder at a
time, and a thread that lets go and asks again at once waits behind those already waiting.

Why: a long job that takes the model batch by batch (a scene's tiles, ``serve.scene_run``) lets
go between its batches, and a plain ``threading.Lock`` gives no order, so the job's thread, asking
again microseconds later, may win every time and a chat request waiting for the model could wait
for the whole scene. With this lock a waiting chat batch goes next, then the job's next batch:
they take turns, and a request waits at most one of the job's batches.

Same use as ``threading.Lock``: ``with lock:``, ``acquire(blocking=True, timeout=-1)``,
``release()``, ``locked()``. Not re-entrant. Release hands the lock straight to the oldest waiter
(it stays held throughout), so no late thread can slip in between.
"""

from __future__ import annotations

import threading
from collections import deque


class FairLock:
    """A FIFO lock (module doc)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Event] = deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        with self._mutex:
            if not self._held and not self._waiters:
                self._held = True
                return True
            if not blocking:
                return False
            turn = threading.Event()
            self._waiters.append(turn)
        if turn.wait(None if timeout is None or timeout < 0 else timeout):
            return True
        with self._mutex:
            if turn.is_set():  # handed over just as the wait ran out: it is ours
                return True
            self._waiters.remove(turn)
            return False

    def release(self) -> None:
        with self._mutex:
            if not self._held:
                raise RuntimeError("release unlocked lock")
            if self._waiters:
                self._waiters.popleft().set()  # handed over: still held, by the oldest waiter now
            else:
                self._held = False

    def locked(self) -> bool:
        return self._held

    def waiting(self) -> int:
        """Threads waiting for the lock."""
        return len(self._waiters)

    def __enter__(self) -> "FairLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
