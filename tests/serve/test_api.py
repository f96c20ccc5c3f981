"""The OpenAI-compatible API server (FastAPI + uvicorn) as real subprocesses on 127.0.0.1, driven
by the `openai` package and by raw sockets: text + image, streaming, history, bad and bomb images,
size limits and HTTP framing, timeouts, floods, queueing and disconnects, keys, models, errors in
OpenAI's shape on every path and method, signals; plus the app in-process around an engine that
fails like a GPU out of memory, and the project's own translation client talking to it."""

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

from remoteglm.compat import free_port
from remoteglm.serve.api_app import create_app
from remoteglm.serve.api_errors import APIError
from remoteglm.serve.api_request import parse_chat_request
from remoteglm.serve.engine import strip_control
from remoteglm.serve.generation import chat
from remoteglm.serve.sampling import CHAT_DEFAULTS
from remoteglm.serve.visualglm_engine import VisualGLMEngine
from tests.imagetest import png_bomb

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "tests" / "fixtures" / "images"
PNG, TIF = IMAGES / "s2_farmland.png", IMAGES / "OSBS_029.tif"
KEY = "sk-test-remoteglm"
MODEL = "visualglm-tiny"  # the checkpoint directory's name
CAP = 16  # --max_new_tokens of the main server: short answers keep the tests fast
LONG = 1500  # tokens of a long greedy answer (the tiny model never ends "你好" by itself): seconds on a CPU
ORIGIN = "http://localhost:5173"
HEADER_TIMEOUT, BODY_TIMEOUT, MAX_CONNECTIONS = 1.5, 2.0, 24
# Without this process's distributed settings: its rendezvous port is taken.
ENV = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
ENV.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")

SERVERS = {
    # the one most tests use
    "main": ["--api_key", KEY, "--allow_path", str(IMAGES), "--max_request_mb", "1", "--max_new_tokens", str(CAP),
             "--model_alias", "visualglm", "--timeout_header", str(HEADER_TIMEOUT), "--timeout_body", str(BODY_TIMEOUT),
             "--max_connections", str(MAX_CONNECTIONS), "--cors_origin", ORIGIN],
    # long answers, one request may wait behind the running one
    "slow": ["--max_queue", "1"],
    # long answers, several requests wait and start together
    "batch": ["--max_queue", "8"],
    # stopped by a signal mid-generation
    "term": ["--shutdown_grace", "0.5"],
    "int": ["--shutdown_grace", "0.5"],
}


@pytest.fixture(scope="module", autouse=True)
def servers(start_server, tiny_checkpoint):
    """Start every server of the module before its first test (each spends seconds importing, in
    parallel with each other and the in-process tests); `ready` waits for one."""
    started = {}
    for name, extra in SERVERS.items():
        port = free_port()
        cmd = [sys.executable, "-m", "remoteglm.serve.api", "--from_pretrained", str(tiny_checkpoint), "--port", str(port), *extra]
        started[name] = (start_server(cmd, env=ENV, cwd=ROOT, ready_marker="serving "), port)
    yield started
    for srv, _ in started.values():
        srv.stop()


def ready(servers, name):
    srv, port = servers[name]
    srv.wait_ready(f"API server {name!r}")
    return srv, port


@pytest.fixture(scope="module")
def url(servers):
    srv, port = ready(servers, "main")
    assert srv.lines[-1].strip().endswith(f"at http://127.0.0.1:{port}/v1  (POST /chat/completions, GET /models)")
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def port(url):
    return int(url.split(":")[2].split("/")[0])


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def engine(tiny):
    """The server's code path in-process: what its answers must be (``api_text`` of them)."""
    model, tok, _ = tiny
    return VisualGLMEngine(model, tok, name=MODEL, defaults=CHAT_DEFAULTS, max_new_tokens=CAP)


def api_text(reply) -> str:
    """What the API answers for an engine reply: its text without control characters (the tiny
    model emits some, e.g. \x0e)."""
    return strip_control(reply.text)


# ---- helpers ---------------------------------------------------------------------------------------
def data_url(path_or_bytes, mime=None) -> str:
    raw = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    mime = mime or ("image/tiff" if str(path_or_bytes).endswith(".tif") else "image/png")
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def user(text, image_url=None):
    parts = [{"type": "text", "text": text}]
    if image_url:
        parts.append({"type": "image_url", "image_url": {"url": image_url}})
    return {"role": "user", "content": parts}


def chat_body(text="你好", **kw) -> bytes:
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": text}], **kw}).encode()


def post(path, body: bytes, key=KEY, extra=b"") -> bytes:
    """A complete POST request with a Content-Length."""
    auth = b"Authorization: Bearer %s\r\n" % key.encode() if key else b""
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (path.encode(), auth, len(body), extra) + body)


def connect(port, timeout=30) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_response(sock):
    """(status, headers, body) of the next response on ``sock`` (http.client parses it)."""
    r = http.client.HTTPResponse(sock, method="POST")
    r.begin()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


def read_all(sock, timeout=30) -> bytes:
    """Everything until the server closes the connection (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (TimeoutError, socket.timeout):
        pass
    except ConnectionResetError:
        pass
    return out


def error_of(body: bytes) -> dict:
    """The OpenAI error object of a body, asserting its shape."""
    obj = json.loads(body)
    assert set(obj) == {"error"} and set(obj["error"]) == {"message", "type", "param", "code"}, obj
    return obj["error"]


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def start_long_stream(port, text="你好", tokens=LONG) -> tuple[socket.socket, bytes]:
    """A streaming request for a long answer on a raw socket, and what it got once its first
    words arrived."""
    s = connect(port)
    s.sendall(post("/v1/chat/completions", chat_body(text, stream=True, temperature=0, max_tokens=tokens), key=None))
    got = b""
    while b'"delta": {"content": ' not in got:
        chunk = s.recv(65536)
        assert chunk, "the server closed the stream: " + got.decode(errors="replace")
        got += chunk
    return s, got


def sse_events(raw: bytes) -> list[str]:
    """The SSE events of a raw chunked HTTP response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    data = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        data, body = data + body[:n], body[n + 2:]
    return [e for e in data.decode().split("\n\n") if e]


# ---- the engine and request parsing in-process ---------------------------------------------------------
def test_engine_answers_like_the_reference_generation(tiny, engine):
    model, tok, _ = tiny
    ref = chat(model, tok, PNG, "描述这张图片。", do_sample=False, max_new_tokens=CAP, repetition_penalty=1.2)[0]
    r = engine.reply(PNG.read_bytes(), "描述这张图片。", temperature=0)
    assert r.text == ref.rstrip("\ufffd").rstrip() and r.completion_tokens == CAP and r.finish_reason == "length"
    parts = list(engine.stream(PNG.read_bytes(), "描述这张图片。", temperature=0))
    assert len(parts) > 2 and parts[-1].text == r.text and all(p.finish_reason is None for p in parts[:-1])


def test_visualglm_takes_a_system_prompt_before_the_first_question(engine):
    """VisualGLM has no system role: the text goes before the first question, as the API always did
    (the transformers families put it in their template's system role: tests/families)."""
    h = [("这是哪里？", "农田。")]
    assert engine.prompt_tokens("有几块？", h, system="用中文回答。") == engine.prompt_tokens("有几块？", [("用中文回答。\n这是哪里？", "农田。")])
    assert (engine.reply(None, "你好", system="用中文回答。", temperature=0, max_new_tokens=3).text
            == engine.reply(None, "用中文回答。\n你好", temperature=0, max_new_tokens=3).text)


def test_request_parsing(tmp_path):
    req = parse_chat_request({"model": MODEL, "messages": [
        {"role": "system", "content": "用中文回答。"},
        {"role": "user", "content": [{"type": "text", "text": "这是哪里？"}, {"type": "image_url", "image_url": {"url": data_url(PNG)}}]},
        {"role": "assistant", "content": "农田。"},
        {"role": "user", "content": "有几块？"}, {"role": "user", "content": "请数一数。"},
    ], "temperature": 0, "max_tokens": 5, "top_k": 3}, [], 2**20)
    assert req.history == [("这是哪里？", "农田。")] and req.query == "有几块？\n请数一数。" and req.system == "用中文回答。"
    assert req.image == PNG.read_bytes() and req.gen == {"temperature": 0.0, "max_new_tokens": 5, "top_k": 3}
    hi = [{"role": "user", "content": "hi"}]
    for body, status, param, text in [
        ({"model": MODEL, "messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages", "last message must come from the user"),
        ({"model": MODEL, "messages": hi, "n": 200}, 400, "n", "n: Input should be less than or equal to 128"),
        ({"model": MODEL, "messages": hi, "functions": [{"name": "f"}]}, 400, "functions", "is not supported by this server"),
        ({"model": MODEL, "messages": hi, "best_of": 2}, 400, "best_of", "unknown field 'best_of'"),
        ({"model": MODEL, "messages": hi, "temperature": "hot"}, 400, "temperature", "temperature: Input should be a valid number"),
        ({"messages": hi}, 400, "model", "model: Field required"),
        ({"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role", "messages[0].role: Input should be"),
        ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "audio"}]}]}, 400, "messages[0].content[0]",
         "does not match any of the expected tags: 'text', 'image_url'"),
        ({"model": MODEL, "messages": [user("hi", str(tmp_path / "x.png"))]}, 400, "image_url", "reads no local files"),
        ({"model": MODEL, "messages": [user("hi", "ftp://host/x.png")]}, 400, "image_url", "unsupported URL scheme"),
        ({"model": MODEL, "messages": [user("hi", str(IMAGES / ".." / "conftest.py"))]}, 403, "image_url", "outside the directories"),
        ({"model": MODEL, "messages": hi, "stop": ["a", ""]}, 400, "stop", "up to 4 non-empty strings"),
    ]:
        with pytest.raises(APIError) as e:
            parse_chat_request(body, [IMAGES] if status == 403 else [], 2**20)
        assert (e.value.status, e.value.param) == (status, param) and text in e.value.message, e.value.message


# ---- OpenAI client: answers ---------------------------------------------------------------------------
def test_models_and_a_text_and_image_completion(client, engine):
    assert [m.id for m in client.models.list().data] == [MODEL, "visualglm"]
    assert client.models.retrieve("visualglm").id == "visualglm"
    expected = engine.reply(PNG.read_bytes(), "描述这张图片。", temperature=0)
    r = client.chat.completions.create(model=MODEL, messages=[user("描述这张图片。", data_url(PNG))], temperature=0, max_tokens=64)
    assert r.object == "chat.completion" and r.model == MODEL
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == api_text(expected)
    assert r.choices[0].finish_reason == "length"  # the server caps answers at 16 tokens
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (expected.prompt_tokens, CAP)
    # the alias is the same model
    r2 = client.chat.completions.create(model="visualglm", messages=[user("描述这张图片。", data_url(PNG))], temperature=0)
    assert r2.choices[0].message.content == api_text(expected)


def test_streaming(client, port, engine):
    expected = api_text(engine.reply(TIF.read_bytes(), "图中有什么？", temperature=0))
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[user("图中有什么？", data_url(TIF))], temperature=0, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 2 and "".join(pieces) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == CAP and not chunks[-1].choices
    # a stop string ends the answer before it, streamed or not
    stop = expected[4:6]
    want = expected[: expected.find(stop)]
    r = client.chat.completions.create(model=MODEL, messages=[user("图中有什么？", data_url(TIF))], temperature=0, stop=[stop])
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == (want, "stop")
    chunks = list(client.chat.completions.create(model=MODEL, messages=[user("图中有什么？", data_url(TIF))], temperature=0,
                                                 stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want and chunks[-1].choices[0].finish_reason == "stop"
    # the wire format itself: SSE events, then data: [DONE]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/chat/completions", chat_body(stream=True, max_tokens=4),
                 {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
    events = [e for e in resp.read().decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_history_and_an_allowed_local_path(client, engine):
    first = api_text(engine.reply(str(TIF), "描述这张图片。", temperature=0))
    expected = api_text(engine.reply(str(TIF), "有几条道路？", [("描述这张图片。", first)], temperature=0))
    r = client.chat.completions.create(model=MODEL, temperature=0, messages=[
        user("描述这张图片。", TIF.as_uri()), {"role": "assistant", "content": first}, user("有几条道路？")])
    assert r.choices[0].message.content == expected


def test_bad_images_get_400_and_the_server_carries_on(client):
    corrupt = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()
    for image_url, status, text in [
        (corrupt, 400, "bad image: cannot read image"),
        ("data:image/png;base64,!!not base64!!", 400, "not valid base64"),
        ("https://example.com/a.png", 400, "remote image URLs are not fetched"),
        ("/etc/passwd", 403, "outside the directories"),
        (str(IMAGES / "missing.png"), 400, "no such file"),
    ]:
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model=MODEL, messages=[user("描述这张图片。", image_url)], max_tokens=4)
        assert e.value.status_code == status and text in e.value.body["message"], e.value.body
        assert e.value.body["param"] == "image_url"
    assert client.chat.completions.create(model=MODEL, messages=[user("你好")], max_tokens=2).choices[0].message.content is not None


def test_a_decompression_bomb_gets_400_with_the_bilingual_message(client, servers):
    bomb = png_bomb(20000, 20000)  # 400 MP in ~50 KB: gigabytes if decoded
    assert len(bomb) < 200_000
    srv, _ = ready(servers, "main")
    before = rss_kib(srv.proc.pid)
    for stream in (False, True):
        t = time.monotonic()
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=MODEL, messages=[user("描述这张图片。", data_url(bomb))], max_tokens=4, stream=stream)
        assert time.monotonic() - t < 5
        assert e.value.body["message"].startswith("bad image: 图片太大 / image too large") and e.value.body["param"] == "image_url"
        assert "400,000,000 pixels" in e.value.body["message"] and "REMOTEGLM_MAX_PIXELS" in e.value.body["message"]
    assert rss_kib(srv.proc.pid) - before < 100_000  # KiB: nothing was decoded
    assert client.chat.completions.create(model=MODEL, messages=[user("你好")], max_tokens=2).choices[0].message.content is not None


# ---- models, tokens, keys -------------------------------------------------------------------------------
def test_an_unknown_model_gets_404_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[user("你好")], max_tokens=2)
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    assert "`gpt-4o` does not exist" in e.value.body["message"] and MODEL in e.value.body["message"]
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-4o")
    assert e.value.body["code"] == "model_not_found"


def test_max_tokens_beyond_the_context_gets_400(client):
    for field in ("max_tokens", "max_completion_tokens"):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=MODEL, messages=[user("你好")], **{field: 5000})
        assert e.value.body["param"] == field and e.value.body["code"] == "context_length_exceeded", e.value.body
        assert "context is 2048 tokens" in e.value.body["message"]
    # what fits is accepted (and capped at the server's 16)
    r = client.chat.completions.create(model=MODEL, messages=[user("你好")], max_tokens=2000)
    assert r.usage.completion_tokens <= CAP
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[user("你好 " * 3000)], max_tokens=2)
    assert e.value.body["param"] == "messages" and e.value.body["code"] == "context_length_exceeded"


def test_missing_and_wrong_keys_get_their_own_401(url, port):
    c = openai.OpenAI(base_url=url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        c.chat.completions.create(model=MODEL, messages=[user("hi")], max_tokens=2)
    assert e.value.status_code == 401
    assert e.value.body == {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None,
                            "code": "invalid_api_key"}
    with pytest.raises(openai.AuthenticationError):
        c.models.list()
    # no Authorization header at all, another scheme, then the right key: the connection stays usable
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for headers, status, code in [({}, 401, "missing_api_key"), ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "missing_api_key"),
                                  ({"Authorization": f"Bearer {KEY}x"}, 401, "invalid_api_key"),
                                  ({"Authorization": f"Bearer {KEY}"}, 200, None)]:
        conn.request("POST", "/v1/chat/completions", chat_body(max_tokens=2), {"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == status
        if status == 401:
            err = error_of(body)
            assert err["code"] == code and resp.getheader("WWW-Authenticate") == "Bearer"
            assert ("didn't provide an API key" in err["message"]) == (code == "missing_api_key" and not headers)
    # the docs need no key: they hold no data
    conn.request("GET", "/docs")
    resp = conn.getresponse()
    assert resp.status == 200 and b"swagger" in resp.read().lower()
    conn.request("GET", "/openapi.json")
    resp = conn.getresponse()
    spec = json.loads(resp.read())
    assert resp.status == 200 and {"/v1/chat/completions", "/v1/models"} <= set(spec["paths"])
    assert "ChatCompletionRequest" in json.dumps(spec["components"])


# ---- every error is OpenAI's JSON ------------------------------------------------------------------------------
def test_every_path_and_method_answers_in_openai_error_json(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    auth = {"Authorization": f"Bearer {KEY}"}
    for method, path, body, headers, status, code in [
        ("PUT", "/v1/models", None, auth, 405, "method_not_allowed"),
        ("DELETE", "/v1/chat/completions", None, auth, 405, "method_not_allowed"),
        ("OPTIONS", "/v1/chat/completions", None, auth, 405, "method_not_allowed"),  # not a CORS preflight
        ("PATCH", "/v1/models", b"{}", auth, 405, "method_not_allowed"),
        ("GET", "/v1/chat/completions", None, auth, 405, "method_not_allowed"),
        ("POST", "/v1/models", b"{}", auth, 405, "method_not_allowed"),
        ("GET", "/", None, auth, 404, "unknown_url"),
        ("GET", "/v1/engines", None, auth, 404, "unknown_url"),
        ("PUT", "/v1/models", None, {}, 401, "missing_api_key"),  # the key comes first
        ("POST", "/v1/chat/completions", b"{bad json", {**auth, "Content-Type": "application/json"}, 400, "invalid_json"),
        ("POST", "/v1/chat/completions", b"[1, 2]", {**auth, "Content-Type": "application/json"}, 400, "invalid_request"),
        ("POST", "/v1/chat/completions", b"hello", {**auth, "Content-Type": "text/plain"}, 400, "unsupported_content_type"),
        ("POST", "/v1/chat/completions", b"", {**auth, "Content-Type": "application/json"}, 400, "invalid_request"),
        ("POST", "/v1/chat/completions", b'{"model": "m", "messages": "hi"}', {**auth, "Content-Type": "application/json"},
         400, "invalid_value"),
    ]:
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        raw = resp.read()
        assert resp.status == status, (method, path, resp.status, raw)
        assert resp.getheader("Content-Type").startswith("application/json"), (method, path)
        err = error_of(raw)
        assert err["code"] == code, (method, path, err)
        if status == 405:
            assert resp.getheader("Allow") and method in err["message"]
    # HEAD: the same status and headers, no body
    conn.request("HEAD", "/v1/models", headers=auth)
    resp = conn.getresponse()
    assert resp.status == 405 and resp.getheader("Content-Type").startswith("application/json") and resp.read() == b""
    # the validation error names the field
    conn.request("POST", "/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": 5}]}',
                 {**auth, "Content-Type": "application/json"})
    err = error_of(conn.getresponse().read())
    assert err["param"] == "messages[0].content" and err["message"].startswith("messages[0].content: ")


def test_cors_is_opt_in(port, servers):
    _, slow = ready(servers, "slow")
    pre = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("OPTIONS", "/v1/chat/completions", headers=pre)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 204 and resp.getheader("Access-Control-Allow-Origin") == ORIGIN
    assert "POST" in resp.getheader("Access-Control-Allow-Methods") and "authorization" in resp.getheader("Access-Control-Allow-Headers")
    conn.request("GET", "/v1/models", headers={"Origin": ORIGIN, "Authorization": f"Bearer {KEY}"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200 and resp.getheader("Access-Control-Allow-Origin") == ORIGIN
    conn.request("OPTIONS", "/v1/chat/completions", headers={**pre, "Origin": "https://evil.example"})
    resp = conn.getresponse()
    assert resp.status == 403 and error_of(resp.read())["code"] == "cors_origin_not_allowed"
    assert resp.getheader("Access-Control-Allow-Origin") is None
    # a server started without --cors_origin sends no CORS headers: browsers keep other sites out
    conn = http.client.HTTPConnection("127.0.0.1", slow, timeout=30)
    conn.request("OPTIONS", "/v1/chat/completions", headers=pre)
    resp = conn.getresponse()
    assert resp.status == 405 and error_of(resp.read())["code"] == "method_not_allowed"
    assert resp.getheader("Access-Control-Allow-Origin") is None


# ---- request size and framing (raw sockets) --------------------------------------------------------------------------
def test_oversized_request_gets_413(client):
    big = "data:image/png;base64," + "A" * (1_200_000)  # the server's limit is 1 MB
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=MODEL, messages=[user("hi", big)], max_tokens=2)
    assert e.value.status_code == 413 and e.value.body["code"] == "request_too_large"
    assert client.models.list().data  # a new connection works


def test_bad_content_lengths_are_refused_and_nothing_is_smuggled(port, servers):
    srv, _ = ready(servers, "main")
    smuggled = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n\r\n"
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n" % KEY.encode()
    for framing in [b"Content-Length: -1\r\n", b"Content-Length: abc\r\n", b"Content-Length: +5\r\n",
                    b"Content-Length: 5\r\nContent-Length: 7\r\n", b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(smuggled)]:
        s = connect(port, timeout=10)
        t = time.monotonic()
        s.sendall(head + framing + b"\r\n" + (b"0\r\n\r\n" if b"chunked" in framing else b"") + smuggled)
        got = read_all(s, timeout=10)
        s.close()
        assert time.monotonic() - t < 5, framing  # answered and closed at once, not read to EOF
        assert got.startswith(b"HTTP/1.1 400 "), (framing, got[:200])
        assert got.count(b"HTTP/1.1 ") == 1, (framing, got)  # the smuggled GET was never answered
        err = error_of(got.split(b"\r\n\r\n", 1)[1])
        assert err["code"] == "invalid_http_request", err
    # Content-Length: -1 followed by 20 MB: refused without reading it (no RSS jump)
    before = rss_kib(srv.proc.pid)
    s = connect(port, timeout=10)
    s.sendall(head + b"Content-Length: -1\r\n\r\n")
    try:
        for _ in range(20):
            s.sendall(b"x" * 2**20)
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.close()
    assert rss_kib(srv.proc.pid) - before < 10_000
    # headers past 16 KiB: 431, closed
    s = connect(port, timeout=10)
    s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000)
    got = read_all(s, timeout=10)
    s.close()
    assert got.startswith(b"HTTP/1.1 431 ") and error_of(got.split(b"\r\n\r\n", 1)[1])["code"] == "invalid_http_request"
    # a declared length over the limit: 413 before any of the body is sent
    s = connect(port, timeout=10)
    s.sendall(head + b"Content-Length: %d\r\n\r\n" % (10**12))
    status, headers, body = read_response(s)
    assert status == 413 and error_of(body)["code"] == "request_too_large" and headers.get("connection") == "close"
    s.close()


def test_a_chunked_body_over_the_limit_gets_413_without_being_buffered(port, servers):
    srv, _ = ready(servers, "main")
    before = rss_kib(srv.proc.pid)
    s = connect(port)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
              b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" % KEY.encode())
    piece = b"x" * 65536
    for _ in range(320):  # 20 MB against a 1 MB limit
        s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
    s.sendall(b"0\r\n\r\n")
    status, _, body = read_response(s)
    assert status == 413 and error_of(body)["code"] == "request_too_large"
    assert rss_kib(srv.proc.pid) - before < 10_000  # KiB: the body was dropped, not kept
    # the rest of the body was read as a body, not as requests: the connection carries on
    s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n" % KEY.encode())
    status, _, body = read_response(s)
    assert status == 200 and json.loads(body)["data"][0]["id"] == MODEL
    s.close()


# ---- slow clients, floods (raw sockets) ------------------------------------------------------------------------
def test_slow_headers_and_bodies_are_closed_by_the_timeouts(port, servers):
    srv, _ = ready(servers, "main")
    threads = threads_of(srv.proc.pid)
    socks = [connect(port) for _ in range(20)]
    for s in socks:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    t = time.monotonic()
    for _ in range(3):  # a header line now and then, never the end of the headers (slowloris)
        time.sleep(0.3)
        for s in socks:
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                pass
    assert threads_of(srv.proc.pid) <= threads + 2  # no thread per connection
    for s in socks:
        got = read_all(s, timeout=HEADER_TIMEOUT + 5)
        assert got.startswith(b"HTTP/1.1 408 "), got[:100]
        assert error_of(got.split(b"\r\n\r\n", 1)[1])["code"] == "request_timeout"
        s.close()
    assert time.monotonic() - t < HEADER_TIMEOUT + 3
    # a body that never completes
    s = connect(port)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
              b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": " % KEY.encode())
    t = time.monotonic()
    got = read_all(s, timeout=BODY_TIMEOUT + 5)
    assert BODY_TIMEOUT - 0.5 < time.monotonic() - t < BODY_TIMEOUT + 3
    assert got.startswith(b"HTTP/1.1 408 ") and b"--timeout_body" in got
    s.close()
    # a connection that sends nothing is closed too
    s = connect(port)
    assert read_all(s, timeout=HEADER_TIMEOUT + 5) == b""
    s.close()


def test_a_flood_of_connections_is_bounded_in_count_and_time(port, servers, client):
    srv, _ = ready(servers, "main")
    threads = threads_of(srv.proc.pid)
    t = time.monotonic()
    socks = [connect(port) for _ in range(3 * MAX_CONNECTIONS)]
    request = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n" % KEY.encode()
    for s in socks:
        s.sendall(request)
    statuses = []
    for s in socks:
        status, headers, body = read_response(s)
        statuses.append(status)
        if status == 503:
            assert error_of(body)["code"] == "too_many_connections" and headers["retry-after"] == "1"
    assert time.monotonic() - t < 10
    # --max_connections caps the requests being answered at once (test_api_transport), not sockets
    assert set(statuses) <= {200, 503} and statuses.count(200) >= MAX_CONNECTIONS, statuses
    assert statuses[:MAX_CONNECTIONS // 2].count(200) == MAX_CONNECTIONS // 2  # the first ones are served
    assert threads_of(srv.proc.pid) <= threads + 2
    for s in socks:
        s.close()
    time.sleep(0.3)
    assert client.models.list().data  # served again once they are gone


def test_simultaneous_connects_do_not_wait_for_the_backlog(port):
    waits = []

    def one():
        t = time.monotonic()
        s = connect(port, timeout=10)
        waits.append(time.monotonic() - t)
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n" % KEY.encode())
        assert read_response(s)[0] in (200, 503)
        s.close()

    threads = [threading.Thread(target=one) for _ in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert len(waits) == 20 and max(waits) < 0.5, sorted(waits)[-5:]  # a full backlog of 5 made some wait 1 s (SYN retry)
    try:
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return
    if len(out) >= 3:
        assert int(out[2]) >= 128, out  # Send-Q of a listening socket: its backlog


# ---- the queue, disconnects ------------------------------------------------------------------------------------------
def test_a_client_that_goes_away_frees_the_model(servers):
    _, port = ready(servers, "slow")
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
    t = time.monotonic()
    c.chat.completions.create(model=MODEL, messages=[user("你好")], temperature=0, max_tokens=LONG)
    full = time.monotonic() - t  # one long answer, undisturbed
    assert full > 1.5

    def next_answer_is_fast():
        t = time.monotonic()
        r = c.chat.completions.create(model=MODEL, messages=[user("你好")], temperature=0, max_tokens=8)
        assert r.usage.completion_tokens == 8
        assert time.monotonic() - t < min(1.5, full / 2)  # nobody generated for the abandoned requests

    for i in range(4):  # non-streaming requests abandoned mid-generation
        s = connect(port)
        s.sendall(post("/v1/chat/completions", chat_body(temperature=0, max_tokens=LONG), key=None))
        time.sleep(0.3)
        s.close()
    next_answer_is_fast()
    s, _ = start_long_stream(port)  # a stream abandoned after its first words
    s.close()
    next_answer_is_fast()


def test_a_full_queue_gets_429_with_retry_after(servers):
    _, port = ready(servers, "slow")
    running, _ = start_long_stream(port)
    waiting = connect(port)
    waiting.sendall(post("/v1/chat/completions", chat_body(temperature=0, max_tokens=LONG), key=None))
    time.sleep(0.3)
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
    t = time.monotonic()
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as e:
            c.chat.completions.create(model=MODEL, messages=[user("你好")], max_tokens=2, stream=stream)
        assert e.value.body["code"] == "queue_full" and "--max_queue 1" in e.value.body["message"]
        assert 1 <= int(e.value.response.headers["retry-after"]) <= 60
    assert time.monotonic() - t < 2  # refused at once, not after waiting
    running.close()
    waiting.close()  # leaves the queue: the server is free again
    time.sleep(0.3)
    t = time.monotonic()
    assert c.chat.completions.create(model=MODEL, messages=[user("你好")], max_tokens=2).choices
    assert time.monotonic() - t < 1.5


def test_n_choices_streamed_or_not(client, engine):
    """``n`` asks for n answers (generated together), as OpenAI serves them: n choices with their
    indexes, usage counting the prompt once; streamed, each choice its own deltas and finish."""
    want = api_text(engine.reply(None, "你好", temperature=0))
    r = client.chat.completions.create(model=MODEL, messages=[user("你好")], n=3, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2] and all(c.message.content == want for c in r.choices)
    assert all(c.finish_reason == "length" for c in r.choices)  # (the tiny model never ends this answer: the cap)
    one = client.chat.completions.create(model=MODEL, messages=[user("你好")], temperature=0)
    assert r.usage.prompt_tokens == one.usage.prompt_tokens and r.usage.completion_tokens == 3 * one.usage.completion_tokens
    sampled = client.chat.completions.create(model=MODEL, messages=[user("你好")], n=4, temperature=1.5, top_p=1.0)
    assert len({c.message.content for c in sampled.choices}) > 1
    texts, finishes = {}, {}
    for ch in client.chat.completions.create(model=MODEL, messages=[user("你好")], n=2, temperature=0, stream=True,
                                             stream_options={"include_usage": True}):
        for c in ch.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
        if ch.usage:
            assert ch.usage.completion_tokens == 2 * one.usage.completion_tokens
    assert texts == {0: want, 1: want} and finishes == {0: "length", 1: "length"}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[user("你好")], n=9)
    assert e.value.body["param"] == "n" and "--max_batch 8" in e.value.message


def test_fields_the_server_does_not_act_on_are_refused(client):
    """A request asking for tools, log-probabilities, penalties, a JSON format, a seed or a field
    OpenAI does not have gets 400 naming the field, instead of an answer that silently ignores
    it; fields that change nothing, or sit at their off value, are accepted."""
    tool = {"type": "function", "function": {"name": "count", "parameters": {"type": "object", "properties": {}}}}
    for kw, field in [({"tools": [tool]}, "tools"), ({"logprobs": True}, "logprobs"), ({"frequency_penalty": 0.5}, "frequency_penalty"),
                      ({"response_format": {"type": "json_object"}}, "response_format"), ({"seed": 7}, "seed"),
                      ({"extra_body": {"best_of": 3}}, "best_of")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=MODEL, messages=[user("你好")], max_tokens=1, **kw)
        assert e.value.body["param"] == field and field in e.value.message, (field, e.value.body)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, max_tokens=1, messages=[
            {"role": "assistant", "content": "", "tool_calls": [{"id": "1", "type": "function",
                                                                 "function": {"name": "count", "arguments": "{}"}}]},
            user("你好")])
    assert e.value.body["param"] == "messages[0].tool_calls"
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "你好", "name": "ann"}], max_tokens=1,
                                       user="u-1", metadata={"k": "v"}, store=False, tools=[], tool_choice="none",
                                       logprobs=False, frequency_penalty=0, presence_penalty=0, logit_bias={},
                                       response_format={"type": "text"}, seed=None, parallel_tool_calls=False)
    assert r.choices[0].message.content is not None


def test_retry_after_says_when_the_queue_has_room(servers):
    """A 429's Retry-After comes from the queue as it is (the running answer's progress), not from
    the times of earlier answers: after a long answer, a short one running and one waiting, it
    is no later than the moment a request is taken again (rounded up, +1 s)."""
    import math

    _, port = ready(servers, "slow")
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
    c.chat.completions.create(model=MODEL, messages=[user("你好")], temperature=0, max_tokens=LONG)  # seconds
    running, _ = start_long_stream(port, tokens=400)
    waiting = connect(port)
    waiting.sendall(post("/v1/chat/completions", chat_body(temperature=0, max_tokens=2), key=None))
    time.sleep(0.2)
    t = time.monotonic()
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model=MODEL, messages=[user("你好")], max_tokens=1)
    retry = int(e.value.response.headers["retry-after"])
    while True:  # until a request is taken again
        try:
            c.chat.completions.create(model=MODEL, messages=[user("你好")], max_tokens=1)
            break
        except openai.RateLimitError:
            time.sleep(0.05)
    drained = time.monotonic() - t
    running.close()
    waiting.close()
    assert 1 <= retry <= math.ceil(drained) + 1, (retry, drained)


def read_until_first_words(sock) -> bytes:
    got = b""
    while b'"delta": {"content": ' not in got:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the stream: " + got.decode(errors="replace")
        got += chunk
    return got


def test_waiting_requests_are_generated_together_each_with_its_own_answer(servers, engine):
    """Requests waiting for the model start as one batch: their streams run side by side (each
    gets its first words before the others' last), each carries only its own answer, the
    one-by-one greedy answer; a client that leaves mid-batch takes its row out (the next request
    is answered at once) while the others finish."""
    _, port = ready(servers, "batch")
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
    questions = ["你好", "描述这张图片。", "图中有几条道路？", "有船吗？"]
    want = {q: api_text(engine.reply(None, q, temperature=0, max_new_tokens=CAP)) for q in questions}
    assert len(set(want.values())) == len(questions)
    times: dict[str, list[float]] = {q: [] for q in questions}
    texts: dict[str, str] = {}

    def run(q):
        out = []
        for ch in c.chat.completions.create(model=MODEL, messages=[user(q)], temperature=0, max_tokens=CAP, stream=True):
            if ch.choices and ch.choices[0].delta.content:
                out.append(ch.choices[0].delta.content)
                times[q].append(time.monotonic())
        texts[q] = "".join(out)

    blocker, _ = start_long_stream(port)  # the model is busy: what comes next waits
    leaver = connect(port)
    leaver.sendall(post("/v1/chat/completions", chat_body("你好", stream=True, temperature=0, max_tokens=LONG), key=None))
    threads = [threading.Thread(target=run, args=(q,)) for q in questions]
    for t in threads:
        t.start()
    time.sleep(1.0)
    blocker.close()  # the waiting requests start, as one batch
    read_until_first_words(leaver)
    leaver.close()
    for t in threads:
        t.join(60)
    assert texts == want
    for a in questions:
        for b in questions:
            assert times[a][0] < times[b][-1], f"{a!r} began after {b!r} ended: not generated together"
    t = time.monotonic()
    r = c.chat.completions.create(model=MODEL, messages=[user("你好")], temperature=0, max_tokens=8)
    assert r.usage.completion_tokens == 8 and time.monotonic() - t < 1.5  # nobody generates for the leaver


# ---- errors inside, logs, signals ----------------------------------------------------------------------------------------
class OutOfMemoryEngine(VisualGLMEngine):
    """An engine whose generation fails like a GPU out of memory, before or after its first words."""

    def __init__(self, *a, after: int = 0, **kw):
        super().__init__(*a, **kw)
        self.after, self.calls = after, 0

    def _generate_rows(self, encoded, rows):
        self.calls += 1
        for i, item in enumerate(super()._generate_rows(encoded, rows)):
            if i >= self.after:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total capacity)")
            yield item


@pytest.fixture
def in_process(tiny, in_thread):
    """``start(engine) -> base URL``: the app around ``engine`` under uvicorn in a thread."""
    return lambda engine: in_thread(create_app(engine)).url


def test_an_internal_error_gets_500_json_and_no_retries(tiny, in_process):
    model, tok, _ = tiny
    engine = OutOfMemoryEngine(model, tok, name=MODEL, max_new_tokens=CAP)
    url = in_process(engine)
    c = openai.OpenAI(base_url=url, api_key="none", max_retries=3, timeout=30)
    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.create(model=MODEL, messages=[user("你好")], max_tokens=8)
    assert e.value.status_code == 500 and e.value.response.headers["x-should-retry"] == "false"
    assert e.value.body["type"] == "server_error" and e.value.body["code"] == "internal_error"
    assert "RuntimeError: CUDA out of memory" in e.value.body["message"]
    assert engine.calls == 1  # the SDK obeyed x-should-retry: false instead of trying 3 more times
    # failing once the stream has begun: an error event, then [DONE]; the connection is not just dropped
    engine.after = 2
    port = int(url.split(":")[2].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/chat/completions", chat_body(stream=True, max_tokens=8), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    events = [e for e in resp.read().decode().split("\n\n") if e]
    assert resp.status == 200 and events[-1] == "data: [DONE]"
    err = json.loads(events[-2][6:])["error"]
    assert err["code"] == "internal_error" and "CUDA out of memory" in err["message"]
    with pytest.raises(openai.APIError, match="CUDA out of memory"):
        list(c.chat.completions.create(model=MODEL, messages=[user("你好")], max_tokens=8, stream=True))
    # and the server still answers
    engine.after = 10**6
    assert c.chat.completions.create(model=MODEL, messages=[user("你好")], max_tokens=2).choices


def test_the_access_log_escapes_control_characters(port, servers):
    srv, _ = ready(servers, "main")
    start = len(srv.lines)
    for target in (b"/v1/models%1b[2J%1b[31mred%0dfake", b"/v1/%E4%BD%A0%07"):
        s = connect(port)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n" % (target, KEY.encode()))
        assert read_response(s)[0] == 404
        s.close()
    s = connect(port)
    s.sendall(b"GET /raw\x1b[31m HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # h11 refuses control bytes in the target
    assert read_all(s, timeout=10).startswith(b"HTTP/1.1 400 ")
    s.close()
    time.sleep(0.3)
    out = "".join(srv.lines[start:])
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out, repr(out)
    assert '"GET /v1/models\\x1b[2J\\x1b[31mred\\x0dfake HTTP/1.1" 404' in out, out
    assert '"GET /v1/你\\x07 HTTP/1.1" 404' in out and "(invalid HTTP request)" in out, out


def _stopped(srv, timeout=20) -> int:
    try:
        return srv.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("the server did not exit:\n" + "".join(srv.lines[-20:]))


def test_sigterm_mid_stream_ends_it_with_done_and_exits_0(servers):
    srv, port = ready(servers, "term")
    s, got = start_long_stream(port)
    t = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(ConnectionRefusedError):  # no longer accepting
        connect(port, timeout=2)
    events = sse_events(got + read_all(s, timeout=15))
    s.close()
    assert events[-1] == "data: [DONE]" and len(events) > 3
    err = json.loads(events[-2][6:])["error"]  # after the 0.5 s grace, the answer was cut: the stream says so
    assert err["code"] == "server_shutting_down" and "cut short" in err["message"]
    assert _stopped(srv) == 0 and time.monotonic() - t < 10
    out = "".join(srv.lines)
    assert "terminate called" not in out and "Traceback" not in out, out[-2000:]


def test_sigint_during_a_generation_exits_0(servers):
    srv, port = ready(servers, "int")
    running = connect(port)
    running.sendall(post("/v1/chat/completions", chat_body(temperature=0, max_tokens=LONG), key=None))
    time.sleep(0.5)
    waiting = connect(port)
    waiting.sendall(post("/v1/chat/completions", chat_body(temperature=0, max_tokens=LONG), key=None))
    time.sleep(0.3)
    t = time.monotonic()
    srv.proc.send_signal(signal.SIGINT)  # Ctrl-C
    for s, cut in ((waiting, False), (running, True)):
        status, headers, body = read_response(s)
        err = error_of(body)
        assert status == 503 and err["code"] == "server_shutting_down" and headers["retry-after"]
        assert ("cut short" in err["message"]) == cut
        s.close()
    assert _stopped(srv) == 0 and time.monotonic() - t < 10
    out = "".join(srv.lines)
    assert "terminate called" not in out and "Traceback" not in out and "interrupted" not in out, out[-2000:]


# ---- other clients -------------------------------------------------------------------------------------------
def test_the_projects_translation_client_talks_to_it(url, monkeypatch):
    from remoteglm.data.llm import LLMClient, LLMConfig

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    c = LLMClient(LLMConfig(base_url=url, model=MODEL, max_retries=0, api_key_env="OPENAI_API_KEY"))
    text = c.chat([{"role": "system", "content": "把英文翻译成中文。"}, {"role": "user", "content": "a river"}], max_tokens=8)
    assert isinstance(text, str) and c.usage.replies == 1 and 0 < c.usage.tokens_out <= 8


def test_api_listens_only_where_asked(servers, url):
    from tests.serve.conftest import listening_addresses

    srv, port = ready(servers, "main")
    addrs = listening_addresses(srv.proc.pid)
    assert ("127.0.0.1", port) in addrs and all(host == "127.0.0.1" for host, _ in addrs), addrs
