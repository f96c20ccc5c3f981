"""The API's transport under real uvicorn in a thread on 127.0.0.1, driven by raw sockets: idle
and half-sent connections must not crowd out requests, the in-flight cap, the exact header limit,
the Content-Type of a chat body, timestamped access-log lines."""

import http.client
import json
import logging
import re
import select
import socket
import time

import pytest

from remoteglm.serve.api_app import create_app
from remoteglm.serve.sampling import CHAT_DEFAULTS
from remoteglm.serve.visualglm_engine import VisualGLMEngine

KEY = "sk-transport"
MODEL = "visualglm-tiny"
GET = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n" % KEY.encode()


@pytest.fixture(scope="module")
def engine(tiny):
    model, tok, _ = tiny
    return VisualGLMEngine(model, tok, name=MODEL, defaults=CHAT_DEFAULTS, max_new_tokens=4)


@pytest.fixture
def serve(engine, in_thread):
    """``serve(**make_server_kwargs) -> port``: the app (with an API key) under uvicorn in a thread."""
    return lambda **kw: in_thread(create_app(engine, api_key=KEY), **kw).sock.getsockname()[1]


def connect(port) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def exchange(port, request: bytes) -> tuple[int, dict, bytes]:
    """(status, lower-cased headers, body) of ``request`` sent on a new connection."""
    s = connect(port)
    try:
        s.sendall(request)
        r = http.client.HTTPResponse(s, method="GET")
        r.begin()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        s.close()


def closed(socks: list[socket.socket], wait: float) -> list[bool]:
    """Which of ``socks`` the server closed (EOF or reset) within ``wait`` seconds."""
    end = time.monotonic() + wait
    gone = [False] * len(socks)
    while (left := end - time.monotonic()) > 0:
        readable, _, _ = select.select([s for s, g in zip(socks, gone) if not g], [], [], left)
        if not readable:
            break
        for s in readable:
            try:
                eof = s.recv(1) == b""
            except ConnectionResetError:
                eof = True
            gone[socks.index(s)] = gone[socks.index(s)] or eof
    return gone


# ---- connections that never send a request -------------------------------------------------------
def test_idle_and_half_sent_connections_do_not_lock_out_requests(serve):
    port = serve(max_connections=4)
    idle = [connect(port) for _ in range(8)]  # twice --max_connections, never a byte
    half = [connect(port) for _ in range(4)]
    for s in half:  # unauthenticated heads that never end
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    time.sleep(0.2)
    try:
        for _ in range(5):
            status, _, body = exchange(port, GET)
            assert status == 200 and json.loads(body)["data"][0]["id"] == MODEL, (status, body)
    finally:
        for s in idle + half:
            s.close()


def test_idle_connections_beyond_the_cap_are_closed_oldest_first(serve):
    port = serve(max_connections=4, max_idle=6)
    old = [connect(port) for _ in range(4)]
    time.sleep(0.1)
    new = [connect(port) for _ in range(6)]  # 10 idle, 6 kept: the 4 oldest go
    try:
        assert closed(old + new, 0.5) == [True] * 4 + [False] * 6
        status, _, _ = exchange(port, GET)  # one more: served, and it evicted one more of the idle
        assert status == 200
        assert closed(new, 0.5).count(True) == 1
    finally:
        for s in old + new:
            s.close()


def test_requests_being_answered_are_capped_by_max_connections(serve):
    port = serve(max_connections=3)
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: 20\r\n\r\n{\"model\":" % KEY.encode())
    busy = [connect(port) for _ in range(3)]
    for s in busy:  # three requests whose bodies are still coming: all three are being answered
        s.sendall(head)
    time.sleep(0.3)
    try:
        status, headers, body = exchange(port, GET)
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(body)["error"]["code"] == "too_many_connections"
        busy[0].sendall(b' "x"}' + b" " * 6)  # one body completes (refused: no messages): a place frees up
        r = http.client.HTTPResponse(busy[0], method="POST")
        r.begin()
        assert r.status == 400
        r.read()
        time.sleep(0.1)
        assert exchange(port, GET)[0] == 200
    finally:
        for s in busy:
            s.close()


# ---- the request head ----------------------------------------------------------------------------------
def head_of(size: int) -> bytes:
    """An authenticated GET /v1/models whose request line + headers are exactly ``size`` bytes."""
    pad = b"X-Pad: "
    head = GET[:-2] + pad + b"\r\n\r\n"
    return GET[:-2] + pad + b"a" * (size - len(head)) + b"\r\n\r\n"


def test_a_complete_head_over_16_kib_gets_431_like_an_incomplete_one(serve):
    port = serve()
    assert len(head_of(16384)) == 16384
    status, _, body = exchange(port, head_of(16384))  # the limit itself: served
    assert status == 200, body
    for size in (16385, 20 * 1024):  # sent in one piece, so it arrives complete
        status, headers, body = exchange(port, head_of(size))
        err = json.loads(body)["error"]
        assert status == 431 and err["code"] == "invalid_http_request" and headers["connection"] == "close", (size, body)
        assert f"{size} bytes" in err["message"] and "16384" in err["message"], err
    s = connect(port)  # and pipelined behind a small request: the first is answered, the big one refused
    try:
        s.sendall(GET + head_of(20 * 1024))
        s.settimeout(10)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        assert got.startswith(b"HTTP/1.1 200 ") and got.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 431 " in got, got[:300]
    finally:
        s.close()


# ---- the body's content type --------------------------------------------------------------------------
def chat_post(content_type: bytes | None, body: bytes) -> bytes:
    ct = b"Content-Type: %s\r\n" % content_type if content_type is not None else b""
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n%s"
            b"Content-Length: %d\r\n\r\n" % (KEY.encode(), ct, len(body)) + body)


def test_a_chat_body_sent_as_another_content_type_is_told_to_use_json(serve):
    port = serve()
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "你好"}], "max_tokens": 1}).encode()
    # curl -d sends form encoding unless told otherwise; others send text/plain
    for ct in (b"application/x-www-form-urlencoded", b"text/plain; charset=utf-8", b"multipart/form-data; boundary=x", None):
        status, _, raw = exchange(port, chat_post(ct, body))
        err = json.loads(raw)["error"]
        assert status == 400 and err["code"] == "unsupported_content_type", (ct, raw)
        said = f"'{ct.split(b';')[0].decode()}'" if ct else "none"
        assert f"must be JSON sent with 'Content-Type: application/json' (Content-Type: {said})" in err["message"], err
    for ct in (b"application/json", b"Application/JSON; charset=utf-8", b"application/vnd.api+json"):
        status, _, raw = exchange(port, chat_post(ct, body))
        assert status == 200 and json.loads(raw)["object"] == "chat.completion", (ct, raw)


# ---- the access log -----------------------------------------------------------------------------------
@pytest.fixture
def cli_logging(monkeypatch):
    """The command line's log set-up, writing to the buffer it yields (its stderr), undone afterwards."""
    import io
    import sys

    from remoteglm.serve.api import _setup_logging

    names = ("remoteglm.api", "uvicorn")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate) for n in names}
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    _setup_logging()
    yield err
    for n, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(n)
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def test_access_log_lines_start_with_an_iso_timestamp(serve, cli_logging):
    from datetime import datetime, timezone

    port = serve(max_connections=1)
    before = datetime.now(timezone.utc)
    assert exchange(port, GET)[0] == 200
    s = connect(port)
    s.sendall(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad header\r\n\r\n")  # refused by the transport
    s.settimeout(5)
    assert s.recv(65536).startswith(b"HTTP/1.1 400 ")
    s.close()
    time.sleep(0.2)
    lines = cli_logging.getvalue().splitlines()
    stamp = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d) "
    app = [m for ln in lines if (m := re.fullmatch(stamp + r'127\.0\.0\.1:\d+ "GET /v1/models HTTP/1\.1" 200 \d+\.\d{3}s', ln))]
    transport = [m for ln in lines if (m := re.fullmatch(stamp + r'127\.0\.0\.1:\d+ "\(invalid HTTP request\)" 400', ln))]
    assert len(app) == 1 and len(transport) == 1, "\n".join(lines)
    for m in app + transport:
        when = datetime.fromisoformat(m.group(1))
        assert before.replace(microsecond=0) <= when <= datetime.now(timezone.utc), (m.group(1), before)


# ---- the transport alone ----------------------------------------------------------------------------------
def test_the_transport_takes_its_limits_and_shutdown_callback_as_arguments():
    """Any ASGI app behind the transport, without the API's state: the body limit and the shutdown
    callback are arguments of make_server; the callback runs once when the server stops."""
    import threading

    from remoteglm.serve.api_transport import make_server

    async def app(scope, receive, send):  # plain ASGI: 200 "ok"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    calls = []
    server = make_server(app, "127.0.0.1", 0, max_request_bytes=1000, shutdown_grace=0.0,
                         on_shutdown=lambda: calls.append("shutdown"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    end = time.monotonic() + 10
    while not server.started and time.monotonic() < end:
        time.sleep(0.02)
    try:
        status, _, body = exchange(server.sock.getsockname()[1], b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (status, body, calls) == (200, b"ok", [])
    finally:
        server.should_exit = True
        th.join(10)
    assert not th.is_alive() and calls == ["shutdown"]
