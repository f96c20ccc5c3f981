"""The fault-injecting test server itself (tests/data/fake_llm.py): it shares no code with the
project, each fault does what it says, rates are seeded, and repeats are counted. Raw HTTP with
urllib, so these tests need neither the openai client nor the project's own client.
"""

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from datahelp import ROOT
from fake_llm import ALT_TERMS, HTML_PAGE, MOOD_WORDS, REFUSALS, FakeLLM, fake_translate

from remoteglm.data.glossary import GLOSSARY, missing_terms


def _post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _content(data: bytes) -> str:
    return json.loads(data)["choices"][0]["message"]["content"]


def _parses(data: bytes) -> bool:
    try:
        json.loads(data)
        return True
    except ValueError:
        return False


def test_fake_llm_shares_no_code_with_the_project():
    code = ("import sys; sys.path.insert(0, 'tests/data'); import fake_llm; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'remoteglm']; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # its own word list renders terms differently from the project glossary, unless the prompt says otherwise
    differ = [t for t, zh in ALT_TERMS.items() if t in GLOSSARY and missing_terms(t, zh)]
    assert len(differ) >= 10
    assert missing_terms("two storage tanks", fake_translate("two storage tanks")) == ["storage tank->储油罐"]
    assert fake_translate("two storage tanks", {"storage tank": "储油罐"}) == "两储油罐。"


@pytest.mark.parametrize("fault, check", [
    ("refuse", lambda st, h, d: st == 200 and _content(d) in REFUSALS),
    ("preamble", lambda st, h, d: _content(d).startswith("好的，以下是翻译：\n```json\n") and _content(d).endswith("```")),
    ("partial", lambda st, h, d: _content(d).startswith('{"1": ') and not _content(d).endswith("}")),
    ("renumber", lambda st, h, d: sorted(json.loads(_content(d))) == ["0", "1"]),
    ("drop_key", lambda st, h, d: len(json.loads(_content(d))) == 1),
    ("english", lambda st, h, d: any(w in _content(d) for w in ("runway", "two"))),
    ("wrong_term", lambda st, h, d: "储罐" in _content(d) or "飞行道" in _content(d)),
    ("mood", lambda st, h, d: any(w in _content(d) for w in MOOD_WORDS)),
    ("html", lambda st, h, d: st == 200 and h["Content-Type"] == "text/html" and d == HTML_PAGE),
    ("bad_body", lambda st, h, d: st == 200 and h["Content-Type"] == "application/json" and not _parses(d)),
    ("empty", lambda st, h, d: st == 200 and _content(d) == ""),
    ("rate_limit", lambda st, h, d: st == 429 and h.get("Retry-After") == "soon"),
    ("server_error", lambda st, h, d: st == 500 and h.get("Retry-After") == "soon"),
    ("unauthorized", lambda st, h, d: st == 401),
    ("echo_auth", lambda st, h, d: st == 400 and b"Bearer sk-echo-me" in d),
])
def test_fake_llm_each_fault_does_what_it_says(fault, check):
    with FakeLLM(counts={fault: 1}, retry_after=["soon"]) as srv:
        body = {"model": "m", "messages": [{"role": "system", "content": "runway = 跑道; storage tank = 储油罐"},
                                           {"role": "user", "content": '{"1": "a runway", "2": "two storage tanks"}'}]}
        st, h, d = _post(srv.base_url, body, {"Authorization": "Bearer sk-echo-me"})
        assert check(st, h, d), (st, h, d[:300])
        assert srv.fault_log == [fault] and srv.log[0].fault == fault
        st, h, d = _post(srv.base_url, body)  # the count is spent: a correct answer follows
        assert st == 200 and json.loads(_content(d)) == {"1": "一跑道。", "2": "两储油罐。"}
        assert srv.requests == 2 and srv.sentence_requests["a runway"] == 2


def test_fake_llm_rewrites_rates_are_seeded_and_repeats_are_counted():
    rw = {"model": "m", "messages": [{"role": "user", "content": 'x {"sentences": ["甲在乙旁边。", "丙。", "丁。"]}'}]}
    with FakeLLM(counts={"keep_one": 1, "rewrite:mood": 1}) as srv:
        assert _content(_post(srv.base_url, rw)[2]) == "甲在乙旁边。"
        moody = _content(_post(srv.base_url, rw)[2])
        assert moody.startswith("甲在乙旁边；丙；丁，") and any(w in moody for w in MOOD_WORDS)
        assert _content(_post(srv.base_url, rw)[2]) == "甲在乙旁边；丙；丁。"
        assert srv.by_kind["rewrite"] == 3 and srv.asked_after_valid() == {}
        _post(srv.base_url, rw)  # asked again after a valid answer: counted
        assert srv.asked_after_valid() == {("rewrite", "甲在乙旁边。\n丙。\n丁。"): 1}

    def faults(seed):
        with FakeLLM(rates={"refuse": 0.2, "html": 0.1, "rate_limit": 0.1}, seed=seed, retry_after=[None]) as srv:
            for i in range(200):
                _post(srv.base_url, {"model": "m", "messages": [{"role": "user", "content": f'{{"1": "road {i}"}}'}]})
            return [c.fault for c in srv.log]

    a, b = faults(1), faults(1)
    assert a == b != faults(2)  # seeded: the same faults in the same order
    assert 25 <= a.count("refuse") <= 55 and 8 <= a.count("html") <= 35 and 8 <= a.count("rate_limit") <= 35
    with pytest.raises(ValueError, match="unknown fault"):
        FakeLLM(rates={"teapot": 0.5})
