"""The LLM client against endpoints that misbehave, and where keys go.

Everything runs against real HTTP servers on 127.0.0.1 (tests/data/fake_llm.py) with the real
openai client: no mocks.
"""

import json
import time

import pytest
from datahelp import ROOT, closed_port, run_cli, ucm_list, write_json
from fake_llm import GARBAGE_DATE, REFUSALS, mixed_faults

from remoteglm.data.cache import ResultCache
from remoteglm.data.datasets import load_captions
from remoteglm.data.llm import LLMClient, LLMConfig, LLMUnavailable, parallel
from remoteglm.data.llm_keys import api_key_for, is_openai_host, origin, redact
from remoteglm.data.translate import TranslateConfig, Translator, check_translation, distinct_sentences
from remoteglm.errors import RemoteGLMError

ASK = [{"role": "user", "content": 'Translate.\n{"1": "a runway beside a road"}'}]


def client(url, **kw):
    return LLMClient(LLMConfig(base_url=url, model="fake", backoff=0.01, **kw))


# -- endpoints that misbehave: one line and the right kind ---------------------------------------
@pytest.mark.parametrize("fault, kind, words", [
    ("html", "not_json", "HTML page (502 Bad Gateway)"),
    ("bad_body", "not_json", "broken JSON body"),
    ("empty", "empty", "empty content"),
])
def test_replies_that_are_no_completion_are_retried_then_one_kind(fake_llm, fault, kind, words):
    srv = fake_llm(counts={fault: 2})
    c = client(srv.base_url, max_retries=3)
    assert json.loads(c.chat(ASK))["1"].endswith("。")  # two bad replies, then a good one
    assert (c.usage.calls, c.usage.retries, c.usage.replies) == (3, 2, 1)
    srv.counts[fault] = 99
    with pytest.raises(LLMUnavailable) as e:
        c.chat(ASK)
    assert e.value.kind == kind and not e.value.rerun_helps and words in str(e.value)
    assert "after 4 tries" in str(e.value) and "\n" not in str(e.value) and srv.requests == 3 + 4


def test_malformed_retry_after_is_retried_and_succeeds(fake_llm):
    srv = fake_llm(counts={"rate_limit": 2, "server_error": 1}, retry_after=["soon", "-5", GARBAGE_DATE])
    c = client(srv.base_url, max_retries=3)
    t = time.monotonic()
    out = c.chat(ASK)  # the SDK's backoff (0.5 s, 1 s, 2 s) stands in for the unreadable hints
    assert json.loads(out)["1"].endswith("。") and time.monotonic() - t < 15
    assert (c.usage.calls, c.usage.retries) == (4, 3) and srv.fault_log == ["rate_limit"] * 2 + ["server_error"]
    # bounded concurrency holds while retrying
    srv.counts.update({"rate_limit": 4})
    srv.retry_after = [{"retry-after-ms": "50"}]
    results = []
    parallel(lambda job: c.chat(ASK), list(range(8)), 2, lambda job, out: results.append(out))
    assert len(results) == 8 and srv.max_in_flight <= 2


def test_long_retry_after_and_persistent_429_are_rate_limited(fake_llm):
    srv = fake_llm(counts={"rate_limit": 1}, retry_after=["3600"])
    c = client(srv.base_url)
    t = time.monotonic()
    with pytest.raises(LLMUnavailable) as e:
        c.chat(ASK)  # asked to wait an hour: no point sleeping it here
    assert e.value.kind == "rate_limited" and e.value.rerun_helps and time.monotonic() - t < 5
    assert srv.requests == 1 and "Retry-After 3600" in str(e.value) and "lower --concurrency" in str(e.value)
    srv.counts["rate_limit"] = 99
    srv.retry_after = [{"retry-after-ms": "20"}]
    with pytest.raises(LLMUnavailable) as e:
        client(srv.base_url, max_retries=2).chat(ASK)
    assert e.value.kind == "rate_limited" and "HTTP 429" in str(e.value) and srv.requests == 1 + 3


def test_timeouts_are_kind_timeout(fake_llm):
    srv = fake_llm(counts={"slow": 2}, slow_seconds=1.0)
    with pytest.raises(LLMUnavailable) as e:
        client(srv.base_url, timeout=0.3, max_retries=1).chat(ASK)
    assert e.value.kind == "timeout" and "--timeout" in str(e.value) and srv.requests == 2


def test_closed_port_is_unreachable_at_once():
    c = LLMClient(LLMConfig(base_url=f"http://127.0.0.1:{closed_port()}/v1", model="m"))  # default retries, 1 s backoff
    t = time.monotonic()
    with pytest.raises(LLMUnavailable) as e:
        c.chat(ASK)
    assert e.value.kind == "unreachable" and not e.value.rerun_helps and time.monotonic() - t < 5
    assert "Connection refused" in str(e.value) and "--base_url" in str(e.value) and c.usage.calls == 1


def _cli_args(url, tmp_path, *more):
    src = write_json(tmp_path / "UCM-en.json", ucm_list(3))
    return ["--input", str(src), "--out_dir", str(tmp_path / "out"), "--base_url", url, "--model", "fake",
            "--cache", str(tmp_path / "cache.sqlite"), *more]


def _error_line(r) -> str:
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0] == r.stderr.strip().splitlines()[-1], r.stderr
    return errors[0]


@pytest.mark.parametrize("fault, words", [("html", "HTML page"), ("empty", "empty content")])
def test_cli_endpoint_that_never_answers_properly_is_one_line(fake_llm, tmp_path, fault, words):
    srv = fake_llm(rates={fault: 1.0})
    r = run_cli(*_cli_args(srv.base_url, tmp_path, "--retries", "1"))
    line = _error_line(r)
    assert words in line and srv.base_url in line
    assert ("--base_url" if fault == "html" else "--model") in line


def test_cli_closed_port_is_one_quick_line(tmp_path):
    t = time.monotonic()
    r = run_cli(*_cli_args(f"http://127.0.0.1:{closed_port()}/v1", tmp_path))  # default --retries 6
    line = _error_line(r)
    assert "cannot connect" in line and "Connection refused" in line and time.monotonic() - t < 30


# -- keys -----------------------------------------------------------------------------------------
def test_key_selection(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-deepseek-secret")
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    assert api_key_for("https://api.openai.com/v1") == "sk-openai-secret"
    assert api_key_for("https://API.OpenAI.com./v1") == "sk-openai-secret"
    assert api_key_for("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY") == "sk-deepseek-secret"
    assert api_key_for("https://api.openai.com/v1", "DEEPSEEK_API_KEY") == "sk-deepseek-secret"  # named wins
    assert api_key_for("http://127.0.0.1:8000/v1", "OPENAI_API_KEY") == "sk-openai-secret"  # only when named
    for url in ("http://127.0.0.1:8000/v1", "http://localhost:11434/v1", "http://[::1]:8000/v1",
                "http://192.168.1.20:8000/v1", "http://gpu-box:8000/v1", "http://vllm.internal/v1"):
        assert api_key_for(url) == "not-needed", url  # local servers: a placeholder, never OPENAI_API_KEY
    for url in ("https://api.deepseek.com/v1", "https://dashscope.aliyuncs.com/compatible-mode/v1",
                "https://api.openai.com.evil.example/v1", "https://8.8.8.8/v1"):
        with pytest.raises(RemoteGLMError) as e:
            api_key_for(url)
        assert "--api_key_env" in str(e.value) and "secret" not in str(e.value), url
    with pytest.raises(RemoteGLMError, match="never sent over plain http"):
        api_key_for("http://api.openai.com/v1")
    with pytest.raises(RemoteGLMError, match=r"\$UNSET_KEY_VAR \(named by --api_key_env\) is not set"):
        api_key_for("https://api.deepseek.com/v1", "UNSET_KEY_VAR")
    with pytest.raises(RemoteGLMError, match="NAME of an environment variable") as e:
        api_key_for("https://api.deepseek.com/v1", "sk-pasted-the-key-itself")
    assert "sk-pasted" not in str(e.value)
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(RemoteGLMError, match="OPENAI_API_KEY is not set"):
        api_key_for("https://api.openai.com/v1")
    with pytest.raises(RemoteGLMError, match="--base_url must look like"):
        api_key_for("api.deepseek.com/v1", "DEEPSEEK_API_KEY")


def test_redact(monkeypatch):
    monkeypatch.setenv("REDACT_TEST_KEY", "dskey-0123456789")
    assert redact("value dskey-0123456789 echoed") == "value dskey-0123456789 echoed"  # not a key of ours yet
    api_key_for("https://api.deepseek.com/v1", "REDACT_TEST_KEY")  # now it is the key this process sends
    assert redact("value dskey-0123456789 echoed") == "value *** echoed"
    assert redact("Authorization: Bearer abc.def-123 rest") == "Authorization: Bearer *** rest"
    assert redact("{'auth': 'bearer sk-x'}") == "{'auth': 'bearer ***'}"
    assert redact("nothing secret here") == "nothing secret here"


def test_cli_sends_openai_key_only_where_named(fake_llm, tmp_path):
    srv = fake_llm()
    openai_key, local_key = "sk-openai-must-stay-home", "local-key-123"
    env = {"OPENAI_API_KEY": openai_key, "OPENAI_ORG_ID": "org-private", "MY_VLLM_KEY": local_key}
    r = run_cli(*_cli_args(srv.base_url, tmp_path), env=env)
    assert r.returncode == 0, r.stderr
    assert srv.requests > 0 and set(srv.auths) == {"Bearer not-needed"}  # not the OpenAI key
    assert not [c for c in srv.log if "openai-organization" in c.headers]
    (tmp_path / "cache.sqlite").unlink()
    srv.reset()
    r = run_cli(*_cli_args(srv.base_url, tmp_path, "--api_key_env", "MY_VLLM_KEY"), env=env)
    assert r.returncode == 0 and set(srv.auths) == {f"Bearer {local_key}"}, r.stderr
    (tmp_path / "cache.sqlite").unlink()
    srv.reset()
    r = run_cli(*_cli_args(srv.base_url, tmp_path, "--api_key_env", "OPENAI_API_KEY"), env=env)
    assert r.returncode == 0 and set(srv.auths) == {f"Bearer {openai_key}"}, r.stderr  # named: the user's choice
    assert openai_key not in r.stderr + r.stdout


def test_a_redirect_to_another_origin_gets_no_key(fake_llm, monkeypatch):
    """The key goes to the base URL's origin only: a 307 to another port of the same host (or
    another scheme) is followed without it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    srv = fake_llm()

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(307)
            self.send_header("Location", srv.base_url + "/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()

    hop = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=hop.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("REDIRECT_TEST_KEY", "sk-stays-on-its-port")
        c = LLMClient(LLMConfig(base_url=f"http://127.0.0.1:{hop.server_address[1]}/v1", model="fake",
                                api_key_env="REDIRECT_TEST_KEY", backoff=0.01))
        assert json.loads(c.chat(ASK))["1"].endswith("。")  # the redirect was followed ...
        assert srv.requests == 1 and srv.last_auth == ""  # ... without the key
    finally:
        hop.shutdown()
        hop.server_close()
    assert origin("https://Example.com./v1") == origin("https://example.com:443/x") == ("https", "example.com", 443)
    assert origin("http://example.com/v1") != origin("https://example.com/v1")  # a downgrade is another origin
    assert origin("http://127.0.0.1:8000/v1") != origin("http://127.0.0.1:8001/v1")
    assert not is_openai_host("https://api.openai.com:8443/v1") and is_openai_host("https://api.openai.com:443/v1")


def test_cli_error_text_that_echoes_the_key_is_redacted(fake_llm, tmp_path):
    srv = fake_llm(counts={"echo_auth": 1})
    key = "sk-echoed-back-by-a-server-0123456789"
    r = run_cli(*_cli_args(srv.base_url, tmp_path, "--api_key_env", "SOME_KEY"), env={"SOME_KEY": key})
    line = _error_line(r)
    assert srv.last_auth == f"Bearer {key}" and srv.fault_log == ["echo_auth"]  # the server did get it ...
    assert "rejected the request (HTTP 400)" in line and "Bearer ***" in line  # ... and we print it masked
    assert key not in r.stderr + r.stdout and key[:12] not in r.stderr


# -- the translate step under a mix of faults ----------------------------------------------------
def test_translator_under_many_faults_loses_nothing_and_asks_no_valid_answer_twice(fake_llm, tmp_path):
    faults = ("refuse", "preamble", "partial", "renumber", "english", "wrong_term", "html", "bad_body", "empty",
              "rate_limit", "server_error")
    srv = fake_llm(rates={f"translate:{k}": v for k, v in mixed_faults(0.5, faults).items()}, seed=3,
                   retry_after=[{"retry-after-ms": "5"}, None])
    sents = distinct_sentences(load_captions(ROOT / "tests/fixtures/captions/UCM-en.json").sentences())[::10][:200]
    with ResultCache(tmp_path / "c.sqlite") as cache:
        res = Translator(client(srv.base_url), cache, TranslateConfig(batch_size=5, concurrency=2, rounds=8),
                         "fake").run(sents, progress=False)
    assert res.failed == {} and set(res.translations) == set(sents)
    assert all(check_translation(s, zh) == [] for s, zh in res.translations.items())
    assert not [zh for zh in res.translations.values() if zh in REFUSALS or "储罐" in zh.replace("储油罐", "")]
    assert len(srv.fault_log) >= 20 and len(set(srv.fault_log)) >= 8 and srv.asked_after_valid() == {}
