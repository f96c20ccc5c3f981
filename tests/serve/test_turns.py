"""remoteglm/serve/turns.py: the engine's lock is first come first served, so a thread that lets
go and asks again at once (a scene job between its batches of tiles) waits behind a thread already
waiting (a chat request), where a plain ``threading.Lock`` lets it win again and again."""

import threading
import time

import pytest

from remoteglm.serve.turns import FairLock


def _greedy_vs_waiter(lock, rounds=200):
    """A thread takes the lock ``rounds`` times, asking again right after each release; another
    waits for it once. Returns how many rounds the greedy thread began after the waiter asked."""
    state = {"greedy": 0, "asked_at": None, "waiter_at": None}
    started = threading.Event()

    def greedy():
        for _ in range(rounds):
            with lock:
                state["greedy"] += 1
                if state["greedy"] == 1:
                    started.set()
                time.sleep(0.002)  # the batch

    def waiter():
        started.wait()
        time.sleep(0.001)
        state["asked_at"] = state["greedy"]
        with lock:
            state["waiter_at"] = state["greedy"]

    threads = [threading.Thread(target=greedy), threading.Thread(target=waiter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return state["waiter_at"] - state["asked_at"]


def test_a_waiting_thread_goes_before_one_asking_again():
    assert _greedy_vs_waiter(FairLock()) <= 1  # it waits for the batch running when it asked, no more


def test_waiters_are_served_in_arrival_order_and_the_lock_is_handed_over():
    lock = FairLock()
    order = []
    lock.acquire()
    threads = []
    for k in range(5):
        t = threading.Thread(target=lambda k=k: (lock.acquire(), order.append(k), lock.release()))
        t.start()
        threads.append(t)
        while lock.waiting() < k + 1:
            time.sleep(0.001)
    assert lock.locked() and not lock.acquire(blocking=False)
    lock.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4] and not lock.locked()


def test_timeouts_and_misuse():
    lock = FairLock()
    assert lock.acquire(timeout=0.01)
    t0 = time.monotonic()
    assert lock.acquire(timeout=0.05) is False and time.monotonic() - t0 >= 0.04
    assert lock.waiting() == 0  # the timed-out waiter left the line
    lock.release()
    assert lock.acquire(blocking=False)
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def test_the_engine_uses_it(tiny):
    from remoteglm.serve.visualglm_engine import VisualGLMEngine

    model, tok, _ = tiny
    assert isinstance(VisualGLMEngine(model, tok).lock, FairLock)
