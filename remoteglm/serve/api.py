"""An OpenAI-compatible HTTP API for VisualGLM (``python -m remoteglm.serve.api``).

    POST /v1/chat/completions   OpenAI chat format, streaming (SSE) or not
    GET  /v1/models             the one model served

A message's ``content`` is a string or a list of ``{"type": "text"}`` / ``{"type": "image_url"}``
parts; the image is a ``data:image/...;base64,`` URL or a local path (``file://`` or plain) under
one of the ``--allow-path`` directories. VisualGLM talks about one image per conversation: the
last image in the messages is used. Earlier user/assistant turns become the history; a system
message is put in front of the first question (VisualGLM has no system role). Extra sampling
fields beside the OpenAI ones: ``top_k``, ``repetition_penalty``.

Built on the standard library's ThreadingHTTPServer: requests are served concurrently, but
generations run one at a time (``Engine`` holds a lock), so concurrent users queue instead of
interleaving on the model. Binds 127.0.0.1 unless told otherwise; ``--api-key`` (or
``REMOTEGLM_API_KEY``) makes every route require ``Authorization: Bearer KEY``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import itertools
import json
import os
import queue
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import unquote, urlparse

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.serve.options import add_host_arg, add_model_args

DEFAULT_MAX_REQUEST_MB = 20.0
DRAIN_CAP = 256 * 2**20  # largest oversized body still read (and dropped) so the 413 reaches the client
API_KEY_ENV = "REMOTEGLM_API_KEY"
PUBLIC_HOSTS_WARNING = (
    "warning: --host {host} makes the server reachable from other machines; anyone who can reach "
    "port {port} can use the model{key}. Bind 127.0.0.1 unless you mean it."
)


# ---- the model behind a lock -------------------------------------------------------------------
@dataclass
class Reply:
    """A (partial or final) answer. ``finish_reason`` is set on the final one: "stop" (the model
    ended its answer) or "length" (max_new_tokens / max_length reached)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None


class Engine:
    """One model shared by many users: generations run one at a time in a worker thread, image
    embeddings are cached (a client that resends the same image each turn pays for it once).

    ``stream`` yields growing ``Reply`` objects; abandoning the iterator (a client that went
    away) stops the worker at its next token and frees the model for the next in line.
    """

    def __init__(self, model, tokenizer, *, name: str = "visualglm-6b", quant: str = "", defaults: dict | None = None,
                 max_new_tokens: int | None = None, cache_images: int = 8):
        from remoteglm.serve.generation import CHAT_DEFAULTS

        self.model, self.tokenizer = model, tokenizer
        self.name, self.quant = name, quant
        self.defaults = dict(defaults or CHAT_DEFAULTS)
        self.max_new_tokens = max_new_tokens
        self.lock = threading.Lock()
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache_images

    # image embeddings, cached by content (bytes) or by file identity (path, mtime, size)
    def _key(self, image) -> tuple | None:
        if image is None:
            return None
        if isinstance(image, (bytes, bytearray)):
            return ("bytes", hashlib.sha256(image).hexdigest())
        p = Path(image)
        st = p.stat()
        return ("path", str(p.resolve()), st.st_mtime_ns, st.st_size)

    def _embeddings(self, image):
        from remoteglm.serve.generation import image_embeddings

        if image is None:
            return None
        try:
            key = self._key(image)
        except OSError as e:
            raise RemoteGLMError(f"cannot read image {image}: {e.strerror or e}") from None
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        emb = image_embeddings(self.model, bytes(image) if isinstance(image, bytearray) else image)
        self._cache[key] = emb
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return emb

    def check_image(self, image) -> None:
        """Decode ``image`` fully (no model): RemoteGLMError with the reason if it is not usable."""
        from remoteglm.model.image import load_image

        if image is not None:
            load_image(bytes(image) if isinstance(image, bytearray) else image)

    def config(self, **gen):
        from remoteglm.serve.generation import GenerationConfig

        if self.max_new_tokens is not None:
            asked = gen.get("max_new_tokens")
            gen["max_new_tokens"] = min(asked, self.max_new_tokens) if asked else self.max_new_tokens
        return GenerationConfig.make(self.defaults, **gen)

    def stream(self, image, query: str, history: Sequence[tuple[str, str]] | None = None, **gen) -> Iterator[Reply]:
        """Yield growing replies for ``query`` about ``image`` (path, bytes, PIL or None); the
        last one carries ``finish_reason``. ``gen``: GenerationConfig fields."""
        import torch

        from remoteglm.serve.generation import banned_ids, encode_prompt, generate_tokens

        cfg = self.config(**gen)  # bad options fail here, in the caller's thread
        history = list(history or [])
        out: queue.Queue = queue.Queue()
        stop = threading.Event()
        model, tok = self.model, self.tokenizer

        def work() -> None:
            try:
                with self.lock:
                    if stop.is_set():
                        return
                    emb = self._embeddings(image)
                    ids, pre = encode_prompt(tok, query, history, cfg.english, model.image_length if emb is not None else None)
                    banned = banned_ids(tok, model.config.vocab_size, cfg.english, next(model.parameters()).device)
                    answer: list[int] = []
                    shown, finish = "", "length"
                    for t, _ in generate_tokens(model, torch.tensor([ids]), [0], cfg, tok.eos_token_id,
                                                image_embeds=emb, pre_image=pre, banned=banned):
                        if stop.is_set():
                            return
                        t = int(t[0])
                        if t == tok.eos_token_id:
                            finish = "stop"
                            break
                        answer.append(t)
                        text = tok.decode(answer).strip()
                        if text != shown and not text.endswith("\ufffd"):  # wait for the rest of a multi-byte char
                            shown = text
                            out.put(Reply(text, len(ids), len(answer)))
                    final = tok.decode(answer).strip()
                    if finish == "length":  # cut inside a multi-byte character: drop the broken tail
                        final = final.rstrip("\ufffd").rstrip()
                    out.put(Reply(final, len(ids), len(answer), finish))
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                out.put(e)
            finally:
                out.put(None)

        worker = threading.Thread(target=work, name="remoteglm-generate", daemon=True)
        worker.start()
        try:
            while True:
                item = out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    def reply(self, image, query: str, history=None, **gen) -> Reply:
        last = Reply("", 0, 0, "stop")
        for last in self.stream(image, query, history, **gen):
            pass
        return last


# ---- requests -------------------------------------------------------------------------------------
class APIError(Exception):
    """An HTTP error in OpenAI's JSON shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class ChatRequest:
    image: bytes | str | None
    query: str
    history: list[tuple[str, str]]
    stream: bool
    include_usage: bool
    gen: dict
    stop: list[str]


def _text_of(content, role: str, index: int) -> tuple[str, list]:
    """(text, image parts) of a message's content."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise APIError(400, f"messages[{index}].content must be a string or a list of parts", param=f"messages[{index}].content")
    texts, images = [], []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            if role != "user":
                raise APIError(400, f"messages[{index}]: images are only accepted in user messages", param=f"messages[{index}].content[{j}]")
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str) or not url:
                raise APIError(400, f"messages[{index}].content[{j}].image_url.url is missing", param=f"messages[{index}].content[{j}]")
            images.append(url)
        else:
            raise APIError(400, f"messages[{index}].content[{j}]: unsupported part {kind!r} (use 'text' or 'image_url')",
                           param=f"messages[{index}].content[{j}]")
    return "\n".join(texts), images


def resolve_image(url: str, allowed: Sequence[Path], max_bytes: int) -> bytes | str:
    """A data URL -> its bytes; a local path (plain or file://) under an allowed dir -> the path."""
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        if not sep or ";base64" not in head:
            raise APIError(400, "bad image: a data URL must look like data:image/png;base64,<data>", param="image_url")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, "bad image: the data URL is not valid base64", param="image_url") from None
        if not raw:
            raise APIError(400, "bad image: the data URL is empty", param="image_url")
        return raw
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        raise APIError(400, "bad image: remote image URLs are not fetched; send the image as a base64 data URL", param="image_url")
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise APIError(400, f"bad image: file URL with host {parsed.netloc!r}", param="image_url")
        path = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:  # ("c:" would be a Windows drive)
        raise APIError(400, f"bad image: unsupported URL scheme {parsed.scheme!r}; use a data URL or a local path", param="image_url")
    else:
        path = url
    if not allowed:
        raise APIError(400, "bad image: this server reads no local files (start it with --allow-path DIR); send a base64 data URL",
                       param="image_url")
    p = Path(path).expanduser()
    if not p.is_absolute():
        raise APIError(400, f"bad image: local image paths must be absolute: {path}", param="image_url")
    real = p.resolve()  # symlinks and .. resolved before the check
    if not any(real.is_relative_to(d) for d in allowed):
        raise APIError(403, f"image path {path} is outside the directories this server may read", type_="permission_error",
                       param="image_url")
    if not real.is_file():
        raise APIError(400, f"bad image: no such file: {path}", param="image_url")
    if real.stat().st_size > max_bytes:
        raise APIError(413, f"image {path} is larger than the {max_bytes / 2**20:g} MB limit", code="request_too_large")
    return str(real)


def _number(body: dict, key: str, kind, lo=None, hi=None):
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and float(v) != int(v)):
        raise APIError(400, f"{key} must be a{'n integer' if kind is int else ' number'}", param=key)
    v = kind(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise APIError(400, f"{key} {v} is out of range [{lo}, {hi}]", param=key)
    return v


def parse_chat_request(body, allowed: Sequence[Path], max_bytes: int) -> ChatRequest:
    """OpenAI chat request JSON -> what the engine needs; APIError (400/403/413) on bad input."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise APIError(400, "messages must be a non-empty list", param="messages")
    if (body.get("n") or 1) != 1:
        raise APIError(400, "n must be 1", param="n")
    system: list[str] = []
    turns: list[list] = []  # [role, text]
    image_url = None
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
            raise APIError(400, f"messages[{i}] needs a role of system, user or assistant", param=f"messages[{i}]")
        role = m["role"]
        text, images = _text_of(m.get("content"), role, i)
        if images:
            image_url = images[-1]  # one image per conversation: the latest wins
        if role in ("system", "developer"):
            system.append(text)
        elif turns and turns[-1][0] == role:  # two user (or assistant) messages in a row: one turn
            turns[-1][1] += "\n" + text
        else:
            turns.append([role, text])
    if not turns or turns[-1][0] != "user":
        raise APIError(400, "the last message must come from the user", param="messages")
    if turns[0][0] == "assistant":
        turns.insert(0, ["user", ""])
    history = [(turns[k][1], turns[k + 1][1]) for k in range(0, len(turns) - 1, 2)]
    query = turns[-1][1]
    if system:
        sys_text = "\n".join(s for s in system if s)
        if history:
            history[0] = (f"{sys_text}\n{history[0][0]}", history[0][1])
        else:
            query = f"{sys_text}\n{query}"
    if not query.strip():
        raise APIError(400, "the last user message has no text", param="messages")
    gen: dict = {}
    temperature = _number(body, "temperature", float, 0, 2)
    if temperature is not None:
        gen["temperature"] = temperature  # 0 -> greedy (GenerationConfig.make)
    top_p = _number(body, "top_p", float, 0, 1)
    if top_p is not None:
        if top_p == 0:
            gen["do_sample"] = False
        else:
            gen["top_p"] = top_p
    top_k = _number(body, "top_k", int, 0, None)
    if top_k is not None:
        gen["top_k"] = top_k
    rp = _number(body, "repetition_penalty", float, 0.01, 10)
    if rp is not None:
        gen["repetition_penalty"] = rp
    mt = _number(body, "max_completion_tokens", int, 1, None) or _number(body, "max_tokens", int, 1, None)
    if mt is not None:
        gen["max_new_tokens"] = mt
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else list(stop or [])
    if not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise APIError(400, "stop must be a string or a list of up to 4 non-empty strings", param="stop")
    opts = body.get("stream_options") or {}
    image = resolve_image(image_url, allowed, max_bytes) if image_url else None
    return ChatRequest(image, query, history, bool(body.get("stream")), bool(isinstance(opts, dict) and opts.get("include_usage")), gen, stop)


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    hits = [text.find(s) for s in stop if s in text]
    return (text[: min(hits)], True) if hits else (text, False)


# ---- HTTP -------------------------------------------------------------------------------------------
class APIServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, engine: Engine, *, api_key: str | None = None, allowed: Sequence[Path] = (),
                 max_request_bytes: int = int(DEFAULT_MAX_REQUEST_MB * 2**20)):
        super().__init__(address, Handler)
        self.engine, self.api_key = engine, api_key
        self.allowed = [Path(d).expanduser().resolve() for d in allowed]
        self.max_request_bytes = max_request_bytes
        self.created = int(time.time())

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for the SDKs' connection pools
    server_version = "remoteglm-api"
    server: APIServer

    def setup(self) -> None:
        super().setup()
        # Small SSE chunks must leave at once, not wait for Nagle's algorithm.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    # responses
    def _send_json(self, status: int, obj: dict, extra_headers: dict | None = None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, err: APIError) -> None:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        if err.status in (413, 411):  # a body may be left unread: do not parse it as the next request
            self.close_connection = True
            headers = {**(headers or {}), "Connection": "close"}
        self._send_json(err.status, err.body(), headers)

    def _authorized(self) -> bool:
        key = self.server.api_key
        if not key:
            return True
        got = self.headers.get("Authorization", "")
        token = got[7:].strip() if got[:7].lower() == "bearer " else ""
        return hmac.compare_digest(token.encode(), key.encode())

    def _check_auth(self) -> None:
        if not self._authorized():
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

    # routes
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        try:
            self._check_auth()
            path = urlparse(self.path).path.rstrip("/")
            e = self.server.engine
            card = {"id": e.name, "object": "model", "created": self.server.created, "owned_by": "remoteglm"}
            if path == "/v1/models":
                self._send_json(200, {"object": "list", "data": [card]})
            elif path == f"/v1/models/{e.name}":
                self._send_json(200, card)
            else:
                raise APIError(404, f"no route GET {path or '/'}; this server has GET /v1/models and POST /v1/chat/completions",
                               code="not_found")
        except APIError as err:
            self._send_error(err)

    def do_POST(self) -> None:  # noqa: N802
        self._body_read = False
        try:
            self._check_auth()
            path = urlparse(self.path).path.rstrip("/")
            if path != "/v1/chat/completions":
                raise APIError(404, f"no route POST {path}; use POST /v1/chat/completions", code="not_found")
            req = parse_chat_request(self._read_json(), self.server.allowed, self.server.max_request_bytes)
            try:
                self.server.engine.check_image(req.image)
            except RemoteGLMError as err:
                raise APIError(400, f"bad image: {err}", param="image_url") from None
            try:
                self.server.engine.config(**req.gen)
            except RemoteGLMError as err:
                raise APIError(400, str(err)) from None
            if req.stream:
                self._stream(req)
            else:
                self._complete(req)
        except APIError as err:
            if not self._body_read:
                self._drain()
            self._send_error(err)

    def _drain(self) -> None:
        """Read and drop the body before an error reply: closing a socket with unread data makes
        the kernel reset the connection, and the client would see that instead of our answer.
        Past a hard cap the connection is closed anyway."""
        self._body_read = True
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        if n > max(4 * self.server.max_request_bytes, DRAIN_CAP):
            self.close_connection = True
            return
        while n > 0:
            got = self.rfile.read(min(n, 1 << 20))
            if not got:
                break
            n -= len(got)

    def _read_json(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise APIError(411, "send the request with a Content-Length (chunked bodies are not accepted)")
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise APIError(400, "bad Content-Length") from None
        limit = self.server.max_request_bytes
        if n > limit:
            self._drain()
            raise APIError(413, f"request body is {n / 2**20:.1f} MB, over this server's {limit / 2**20:g} MB limit "
                                "(--max-request-mb); send a smaller image", code="request_too_large")
        raw = self.rfile.read(n) if n else b""
        self._body_read = True
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON ({e})") from None

    def _ids(self) -> tuple[str, int]:
        return f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def _run(self, req: ChatRequest) -> Iterator[Reply]:
        try:
            yield from self.server.engine.stream(req.image, req.query, req.history, **req.gen)
        except RemoteGLMError as err:  # e.g. the conversation outgrew max_length
            raise APIError(400, str(err)) from None

    def _complete(self, req: ChatRequest) -> None:
        last = None
        for last in self._run(req):
            pass
        text, stopped = _cut_at_stop(last.text, req.stop)
        cid, created = self._ids()
        self._send_json(200, {
            "id": cid, "object": "chat.completion", "created": created, "model": self.server.engine.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop" if stopped else last.finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens,
                      "total_tokens": last.prompt_tokens + last.completion_tokens},
        })

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream(self, req: ChatRequest) -> None:
        cid, created = self._ids()
        name = self.server.engine.name
        replies = self._run(req)
        try:
            first = next(replies)  # errors before any output still get a proper status code
        except StopIteration:
            first = None
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(delta: dict, finish=None, usage=None, choices=True) -> None:
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}] if choices else []}
            if usage is not None:
                obj["usage"] = usage
            self._chunk(b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n")

        hold = max((len(s) for s in req.stop), default=1) - 1  # chars kept back: they may start a stop string
        sent, last, stopped = "", first, False
        try:
            event({"role": "assistant", "content": ""})
            for r in itertools.chain([first] if first else [], replies):
                last = r
                text, stopped = _cut_at_stop(r.text, req.stop)
                ready = text if (stopped or r.finish_reason) else text[: max(len(sent), len(text) - hold)]
                if ready.startswith(sent) and len(ready) > len(sent):  # (decoding may rewrite a tail: wait for it)
                    event({"content": ready[len(sent):]})
                    sent = ready
                if stopped:
                    break
            finish = "stop" if stopped else (last.finish_reason if last else "stop")
            event({}, finish)
            if req.include_usage and last is not None:
                event({}, usage={"prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens,
                                 "total_tokens": last.prompt_tokens + last.completion_tokens}, choices=False)
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left: closing the iterator frees the model
        except APIError as err:  # failed mid-stream: the status is already sent, say it in the stream
            self._chunk(b"data: " + json.dumps(err.body(), ensure_ascii=False).encode("utf-8") + b"\n\n")
            self._chunk(b"")
        finally:
            replies.close()


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8000, **kw) -> APIServer:
    """Bind (port 0: any free port) and return the server; call ``serve_forever()`` on it."""
    try:
        return APIServer((host, port), engine, **kw)
    except OSError as e:
        raise RemoteGLMError(f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port") from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m remoteglm.serve.api", description="OpenAI-compatible API for VisualGLM: POST /v1/chat/completions, GET /v1/models.")
    add_model_args(ap)
    add_host_arg(ap)
    ap.add_argument("--port", type=int, default=8000, help="port (0: any free port; the URL is printed)")
    ap.add_argument("--api-key", dest="api_key", default=None,
                    help=f"require 'Authorization: Bearer KEY' (or set {API_KEY_ENV}, which keeps the key out of the process list)")
    ap.add_argument("--allow-path", dest="allow_path", action="append", default=[], metavar="DIR",
                    help="directory whose images requests may name by local path (repeatable; default: none)")
    ap.add_argument("--max-request-mb", dest="max_request_mb", type=float, default=DEFAULT_MAX_REQUEST_MB,
                    help=f"largest request body (base64 images included), MB (default {DEFAULT_MAX_REQUEST_MB:g})")
    ap.add_argument("--max_new_tokens", type=int, default=None, help="cap on answer tokens per request (default: none)")
    ap.add_argument("--model-name", dest="model_name", default=None, help="model id reported by /v1/models (default: the directory name)")
    return ap


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_request_mb <= 0:
        raise RemoteGLMError("--max-request-mb must be positive")
    allowed = []
    for d in args.allow_path:
        p = Path(d).expanduser()
        if not p.is_dir():
            raise RemoteGLMError(f"--allow-path {d}: not a directory")
        allowed.append(p.resolve())
    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    import torch

    from remoteglm.compat import single_process_env
    from remoteglm.model.checkpoint import trust_checkpoints
    from remoteglm.model.quant import describe_quant, load_model_quantized, memory_summary
    from remoteglm.serve.generation import CHAT_DEFAULTS

    single_process_env()
    trust_checkpoints(args.trust_checkpoint)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"loading {args.from_pretrained} on {device} ...", file=sys.stderr, flush=True)
    model, tok, _ = load_model_quantized(args.from_pretrained, args.quant, tokenizer=args.tokenizer, device=device, dtype=args.dtype)
    name = args.model_name or Path(args.from_pretrained).expanduser().resolve().name
    print(f"{name}: {describe_quant(model)}, {memory_summary(model)}", file=sys.stderr, flush=True)
    engine = Engine(model, tok, name=name, quant=describe_quant(model), defaults=CHAT_DEFAULTS, max_new_tokens=args.max_new_tokens)
    server = serve(engine, args.host, args.port, api_key=key, allowed=allowed, max_request_bytes=int(args.max_request_mb * 2**20))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(PUBLIC_HOSTS_WARNING.format(host=args.host, port=server.server_address[1],
                                          key="" if key else " (no --api-key is set)"), file=sys.stderr, flush=True)
    print(f"serving {name} ({engine.quant}) at {server.url}  (POST /chat/completions, GET /models)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
