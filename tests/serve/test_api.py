"""The OpenAI-compatible API server as a real subprocess on 127.0.0.1, driven by the `openai`
package: text + image, streaming, history, a bad image, an oversized request, a wrong key,
queued generations, and the project's own translation client talking to it."""

import base64
import http.client
import json
import os
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

from remoteglm.compat import free_port
from remoteglm.serve.api import APIError, Engine, parse_chat_request
from remoteglm.serve.generation import CHAT_DEFAULTS, chat

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "tests" / "fixtures" / "images"
PNG, TIF = IMAGES / "s2_farmland.png", IMAGES / "OSBS_029.tif"
KEY = "sk-test-remoteglm"
CAP = 16  # --max_new_tokens of the server: short answers keep the tests fast
# Without this process's distributed settings: its rendezvous port is taken.
ENV = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
ENV.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def data_url(path: Path) -> str:
    mime = "image/png" if path.suffix == ".png" else "image/tiff"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def user(text, image_url=None):
    parts = [{"type": "text", "text": text}]
    if image_url:
        parts.append({"type": "image_url", "image_url": {"url": image_url}})
    return {"role": "user", "content": parts}


@pytest.fixture(scope="module", autouse=True)
def server(start_server, tiny_checkpoint):
    """Start the server before the module's first test (it spends seconds importing, in parallel
    with the in-process tests); `url` waits for it."""
    port = free_port()
    srv = start_server(
        [sys.executable, "-m", "remoteglm.serve.api", "--from_pretrained", str(tiny_checkpoint), "--port", str(port),
         "--api-key", KEY, "--allow-path", str(IMAGES), "--max-request-mb", "1", "--max_new_tokens", str(CAP)],
        env=ENV, cwd=ROOT, ready_marker="serving ")
    yield srv, port
    srv.stop()


@pytest.fixture(scope="module")
def url(server):
    srv, port = server
    srv.wait_ready("API server")
    lines = srv.lines
    assert lines[-1].strip().endswith(f"at http://127.0.0.1:{port}/v1  (POST /chat/completions, GET /models)")
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def engine(tiny):
    """The server's code path in-process: what its answers must be."""
    model, tok, _ = tiny
    return Engine(model, tok, name="visualglm-tiny", defaults=CHAT_DEFAULTS, max_new_tokens=CAP)


def test_engine_answers_like_the_reference_generation(tiny, engine):
    model, tok, _ = tiny
    ref = chat(model, tok, PNG, "描述这张图片。", do_sample=False, max_new_tokens=CAP, repetition_penalty=1.2)[0]
    r = engine.reply(PNG.read_bytes(), "描述这张图片。", temperature=0)
    assert r.text == ref.rstrip("\ufffd").rstrip() and r.completion_tokens == CAP and r.finish_reason == "length"
    parts = list(engine.stream(PNG.read_bytes(), "描述这张图片。", temperature=0))
    assert len(parts) > 2 and parts[-1].text == r.text and all(p.finish_reason is None for p in parts[:-1])


def test_request_parsing(tmp_path):
    req = parse_chat_request({"messages": [
        {"role": "system", "content": "用中文回答。"},
        {"role": "user", "content": [{"type": "text", "text": "这是哪里？"}, {"type": "image_url", "image_url": {"url": data_url(PNG)}}]},
        {"role": "assistant", "content": "农田。"},
        {"role": "user", "content": "有几块？"}, {"role": "user", "content": "请数一数。"},
    ], "temperature": 0, "max_tokens": 5, "top_k": 3}, [], 2**20)
    assert req.history == [("用中文回答。\n这是哪里？", "农田。")] and req.query == "有几块？\n请数一数。"
    assert req.image == PNG.read_bytes() and req.gen == {"temperature": 0.0, "max_new_tokens": 5, "top_k": 3}
    for body, status, text in [
        ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "last message must come from the user"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n must be 1"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, "temperature must be a number"),
        ({"messages": [user("hi", str(tmp_path / "x.png"))]}, 400, "reads no local files"),
        ({"messages": [user("hi", "ftp://host/x.png")]}, 400, "unsupported URL scheme"),
        ({"messages": [user("hi", str(IMAGES / ".." / "conftest.py"))]}, 403, "outside the directories"),
    ]:
        with pytest.raises(APIError) as e:
            parse_chat_request(body, [IMAGES] if status == 403 else [], 2**20)
        assert e.value.status == status and text in e.value.message


def test_models_and_a_text_and_image_completion(client, engine):
    assert [m.id for m in client.models.list().data] == ["visualglm-tiny"]
    expected = engine.reply(PNG.read_bytes(), "描述这张图片。", temperature=0)
    r = client.chat.completions.create(model="visualglm-tiny", messages=[user("描述这张图片。", data_url(PNG))],
                                       temperature=0, max_tokens=64)
    assert r.object == "chat.completion" and r.model == "visualglm-tiny"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == expected.text
    assert r.choices[0].finish_reason == "length"  # the server caps answers at 16 tokens
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (expected.prompt_tokens, CAP)


def test_streaming(client, url, engine):
    expected = engine.reply(TIF.read_bytes(), "图中有什么？", temperature=0)
    chunks = list(client.chat.completions.create(
        model="visualglm-tiny", messages=[user("图中有什么？", data_url(TIF))], temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 2 and "".join(pieces) == expected.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == CAP and not chunks[-1].choices
    # a stop string ends the answer before it, streamed or not
    stop = expected.text[4:6]
    want = expected.text[: expected.text.find(stop)]
    r = client.chat.completions.create(model="m", messages=[user("图中有什么？", data_url(TIF))], temperature=0, stop=[stop])
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == (want, "stop")
    chunks = list(client.chat.completions.create(model="m", messages=[user("图中有什么？", data_url(TIF))], temperature=0,
                                                 stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want and chunks[-1].choices[0].finish_reason == "stop"
    # the wire format itself: SSE events, then data: [DONE]
    conn = http.client.HTTPConnection("127.0.0.1", int(url.split(":")[2].split("/")[0]), timeout=60)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "你好"}], "stream": True, "max_tokens": 4})
    conn.request("POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
    events = [e for e in resp.read().decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_history_and_an_allowed_local_path(client, engine):
    first = engine.reply(str(TIF), "描述这张图片。", temperature=0).text
    expected = engine.reply(str(TIF), "有几条道路？", [("描述这张图片。", first)], temperature=0).text
    r = client.chat.completions.create(model="m", temperature=0, messages=[
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
            client.chat.completions.create(model="m", messages=[user("描述这张图片。", image_url)], max_tokens=4)
        assert e.value.status_code == status and text in e.value.body["message"], e.value.body
        assert e.value.body["param"] == "image_url"
    assert client.chat.completions.create(model="m", messages=[user("你好")], max_tokens=2).choices[0].message.content is not None


def test_oversized_request_gets_413(client):
    big = "data:image/png;base64," + "A" * (1_200_000)  # the server's limit is 1 MB
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="m", messages=[user("hi", big)], max_tokens=2)
    assert e.value.status_code == 413 and e.value.body["code"] == "request_too_large"
    assert client.models.list().data  # a new connection works


def test_wrong_or_missing_key_gets_401(url):
    c = openai.OpenAI(base_url=url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        c.chat.completions.create(model="m", messages=[user("hi")], max_tokens=2)
    assert e.value.status_code == 401
    assert e.value.body == {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None,
                            "code": "invalid_api_key"}
    with pytest.raises(openai.AuthenticationError):
        c.models.list()
    # no Authorization header at all, and the connection stays usable after the refusal
    conn = http.client.HTTPConnection("127.0.0.1", int(url.split(":")[2].split("/")[0]), timeout=30)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    for headers, status in [({}, 401), ({"Authorization": f"Bearer {KEY}"}, 200)]:
        conn.request("GET", "/v1/models", headers=headers) if status == 200 else conn.request(
            "POST", "/v1/chat/completions", body, {"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        payload = json.loads(resp.read())
        assert resp.status == status and (status == 200 or payload["error"]["code"] == "invalid_api_key")
        assert resp.getheader("WWW-Authenticate") == ("Bearer" if status == 401 else None)


def test_concurrent_requests_queue_instead_of_interleaving(client, engine):
    expected = engine.reply(None, "你好", temperature=0).text
    times: dict[int, list[float]] = {0: [], 1: []}
    texts: dict[int, str] = {}

    def run(i):
        out = []
        for c in client.chat.completions.create(model="m", messages=[user("你好")], temperature=0, stream=True):
            if c.choices and c.choices[0].delta.content:
                out.append(c.choices[0].delta.content)
                times[i].append(time.monotonic())
        texts[i] = "".join(out)

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert texts == {0: expected, 1: expected}
    a, b = sorted(times.values(), key=lambda t: t[0])
    assert a[-1] <= b[0], "the two generations interleaved"


def test_the_projects_translation_client_talks_to_it(url, monkeypatch):
    from remoteglm.data.llm import LLMClient, LLMConfig

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    c = LLMClient(LLMConfig(base_url=url, model="visualglm-tiny", max_retries=0, api_key_env="OPENAI_API_KEY"))
    text = c.chat([{"role": "system", "content": "把英文翻译成中文。"}, {"role": "user", "content": "a river"}], max_tokens=8)
    assert isinstance(text, str) and c.usage.replies == 1 and 0 < c.usage.tokens_out <= 8


def test_api_listens_only_where_asked(server, url):
    from conftest import listening_addresses

    srv, port = server
    addrs = listening_addresses(srv.proc.pid)
    assert ("127.0.0.1", port) in addrs and all(host == "127.0.0.1" for host, _ in addrs), addrs
