"""The API's replies: an answer's text as sent (``shown_answer``, cut at a stop string), the
body of a finished request (``completion``) and the SSE stream of one being answered
(``events``), with the usage of its choices and the boxes of its answers (``message_boxes``)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import AsyncIterator

from remoteglm.serve.api_errors import ClientGone, as_api_error
from remoteglm.serve.api_queue import Job
from remoteglm.serve.api_request import ChatRequest
from remoteglm.serve.engine import strip_control
from remoteglm.serve.generation import Reply
from remoteglm.serve.grounding import box_fields


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """``text`` up to the first of the ``stop`` strings in it, and whether one was there."""
    hits = [text.find(s) for s in stop if s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def shown_answer(text: str) -> str:
    """An answer as the API returns it: the engine's (post-processed like the official chat's)
    without control characters. Removing characters keeps each streamed text a prefix of the next."""
    return strip_control(text)


def message_boxes(engine, image, text: str) -> list[dict] | None:
    """The ``boxes`` of an answer as sent: ``[{"bbox": [x1, y1, x2, y2], "label": ...}]`` in the
    request image's original pixels (empty: none in it); None (no field) when the request has no
    image or the model no box format."""
    if image is None or getattr(engine, "box_codec", None) is None:
        return None
    return box_fields(engine.boxes(text, image)[0])


def _ids() -> tuple[str, int]:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())


def _usage(replies) -> dict:
    """Usage of a request's choices: the prompt once, every choice's answer."""
    done = [r for r in replies if r is not None]
    prompt = done[0].prompt_tokens if done else 0
    answers = sum(r.completion_tokens for r in done)
    return {"prompt_tokens": prompt, "completion_tokens": answers, "total_tokens": prompt + answers}


def completion(model: str, req: ChatRequest, lasts: list, engine=None) -> dict:
    """The response body of a request whose choices ended with the replies ``lasts`` (``engine``
    reads their boxes)."""
    lasts = [r if r is not None else _empty_reply() for r in lasts]
    choices = []
    for k, last in enumerate(lasts):
        text, stopped = cut_at_stop(shown_answer(last.text), req.stop)
        message = {"role": "assistant", "content": text}
        boxes = message_boxes(engine, req.image, text)
        if boxes is not None:
            message["boxes"] = boxes
        choices.append({"index": k, "message": message,
                        "finish_reason": "stop" if stopped else last.finish_reason, "logprobs": None})
    cid, created = _ids()
    return {"id": cid, "object": "chat.completion", "created": created, "model": model, "choices": choices,
            "usage": _usage(lasts)}


def _empty_reply():
    return Reply("", 0, 0, "stop")


def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def events(model: str, job: Job, first, watcher: asyncio.Task, engine=None) -> AsyncIterator[bytes]:
    """The SSE stream of ``job``: per choice a role chunk, content deltas and its finish chunk
    (whose delta carries the answer's ``boxes``, read by ``engine``); usage if asked; ``data: [DONE]``. Failing or cut short (shutdown) after it began: an error
    event, then ``data: [DONE]``. The client gone: nothing more."""
    req = job.req
    cid, created = _ids()

    def chunk(k: int | None, delta: dict | None = None, finish=None, usage=None) -> bytes:
        obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": [{"index": k, "delta": delta, "finish_reason": finish, "logprobs": None}] if k is not None else []}
        if usage is not None:
            obj["usage"] = usage
        return _sse(obj)

    def finish(k: int, reason: str) -> bytes:
        boxes = message_boxes(engine, req.image, sent[k])
        return chunk(k, {} if boxes is None else {"boxes": boxes}, reason)

    hold = max((len(s) for s in req.stop), default=1) - 1  # chars kept back: they may start a stop string
    sent = [""] * job.n
    lasts: list = [None] * job.n
    ended = [False] * job.n

    async def replies():
        if first is not None:
            yield first
        async for r in job.replies():
            yield r

    try:
        for k in range(job.n):
            yield chunk(k, {"role": "assistant", "content": ""})
        async for k, r in replies():
            if ended[k]:
                continue
            lasts[k] = r
            text, stopped = cut_at_stop(shown_answer(r.text), req.stop)
            ready = text if (stopped or r.finish_reason) else text[: max(len(sent[k]), len(text) - hold)]
            if ready.startswith(sent[k]) and len(ready) > len(sent[k]):  # (decoding may rewrite a tail: wait for it)
                yield chunk(k, {"content": ready[len(sent[k]):]})
                sent[k] = ready
            if stopped or r.finish_reason:
                ended[k] = True
                yield finish(k, "stop" if stopped else r.finish_reason)
                if all(ended):
                    break
        for k in range(job.n):
            if not ended[k]:  # (no final reply: the answer ended without one)
                yield finish(k, "stop")
        if req.include_usage and any(r is not None for r in lasts):
            yield chunk(None, usage=_usage(lasts))
        yield b"data: [DONE]\n\n"
    except ClientGone:
        return
    except Exception as e:  # noqa: BLE001 - the status is sent: say it in the stream
        yield _sse(as_api_error(e).body())
        yield b"data: [DONE]\n\n"
    finally:
        job.stop("done")
        watcher.cancel()
