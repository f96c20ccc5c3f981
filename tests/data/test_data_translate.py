"""The translate step against a real HTTP server: batching, validation, retries, cache."""

import json
import re
import sqlite3
import time

import pytest
from datahelp import FIXTURES

from remoteglm.data.cache import ResultCache
from remoteglm.data.datasets import load_captions
from remoteglm.data.glossary import GLOSSARY, find_terms, missing_terms, write_jieba_userdict, tokenize_zh
from remoteglm.data.llm import LLMClient, LLMConfig, LLMUnavailable
from remoteglm.data.translate import (
    ReplyError, TranslateConfig, Translator, check_translation, distinct_sentences, estimate, normalise, parse_reply,
)
from remoteglm.errors import RemoteGLMError

SENTS = ["There is a piece of farmland .", "Many storage tanks are beside a road .", "there is a piece of farmland",
         "Two baseball diamonds with some trees", "A runway with airplanes parked"]


def client(url, **kw):
    return LLMClient(LLMConfig(base_url=url, model="fake", backoff=0.01, **kw))


def test_normalise_and_dedupe_real_ucm():
    cs = load_captions(FIXTURES / "UCM-en.json")
    sents = cs.sentences()
    distinct = distinct_sentences(sents)
    assert len(sents) == 10500 and 1900 <= len(distinct) <= 2100
    assert normalise("  There is a  piece of farmland .  ") == "there is a piece of farmland"
    assert normalise("BIG river.") == "BIG river"
    assert distinct_sentences(SENTS)[0] == "there is a piece of farmland" and len(distinct_sentences(SENTS)) == 4


def test_glossary_matching():
    terms = find_terms("Many storage tanks and a mobile home park near the baseball diamonds")
    assert terms == {"storage tank": "储油罐", "mobile home park": "移动房屋区", "baseball diamond": "棒球场"}
    assert find_terms("an airplane") == {"airplane": "飞机"}  # not "plane" inside it
    assert missing_terms("two storage tanks", "两个油箱。") == ["storage tank->储油罐"]
    assert missing_terms("some roads", "一些路。") == []  # generic word: short form accepted
    assert {"storage tank", "runway", "baseball diamond", "tennis court", "overpass"} <= set(GLOSSARY)


def test_parse_and_check_reply():
    assert parse_reply('```json\n{"1": "甲。", "2": "乙。"}\n```', 2) == ["甲。", "乙。"]
    with pytest.raises(ReplyError, match="malformed"):
        parse_reply('{"1": "甲。",}', 1)
    with pytest.raises(ReplyError, match="numbers its 2 items differently"):
        parse_reply('{"0": "甲。", "1": "乙。"}', 2)  # renumbered: which is which?
    # a dropped item is asked again alone; the others are kept
    assert parse_reply('{"1": "甲。", "3": "丙。"}', 3) == ["甲。", None, "丙。"]
    with pytest.raises(ReplyError):
        parse_reply("sorry, I cannot", 1)
    assert check_translation("a runway", "一条跑道。") == []
    assert "English left" in check_translation("a runway", "一条跑道 with cars。")[0]
    assert "no Chinese" in check_translation("a runway", "a runway")[0]
    assert "glossary term missing: runway->跑道" in check_translation("a runway", "一条道路。")
    assert check_translation("a T-junction with an L shaped road", "一个丁字路口旁有一条L形的道路。") == []
    assert check_translation("an L shaped building", "一座L形的建筑。") == []  # capital shape letters allowed


def test_translator_batches_and_cache(fake_llm, tmp_path):
    srv = fake_llm()
    sents = load_captions(FIXTURES / "UCM-en.json").sentences()[:500]
    distinct = distinct_sentences(sents)
    with ResultCache(tmp_path / "c.sqlite") as cache:
        tr = Translator(client(srv.base_url), cache, TranslateConfig(batch_size=10, concurrency=4), "fake")
        res = tr.run(sents, progress=False)
        assert res.failed == {} and res.new == len(distinct) and set(res.translations) == set(distinct)
        assert srv.requests == -(-len(distinct) // 10)  # ceil: one request per batch, no more
        assert max(srv.sentence_requests.values()) == 1
        assert all(check_translation(s, res.translations[s]) == [] for s in distinct)
        assert tr.client.usage.tokens_in > 0 and tr.client.usage.tokens_out > 0
        # rerun: everything from the cache, zero requests
        res2 = Translator(client(srv.base_url), cache, TranslateConfig(batch_size=10), "fake").run(sents, progress=False)
        assert srv.requests == -(-len(distinct) // 10) and res2.cache_hits == len(distinct) and res2.new == 0
    # another model is another cache key
    with ResultCache(tmp_path / "c.sqlite") as cache:
        assert Translator(None, cache, TranslateConfig(), "other-model").cached(distinct) == {}


def test_reply_faults_are_reasked(fake_llm, tmp_path):
    srv = fake_llm(counts={"partial": 1, "drop_key": 1, "english": 2})
    with ResultCache(tmp_path / "c.sqlite") as cache:
        tr = Translator(client(srv.base_url), cache, TranslateConfig(batch_size=4, concurrency=1), "fake")
        res = tr.run([f"{n} storage tanks beside a road" for n in ("two", "three", "four", "five", "six", "many")] * 2,
                     progress=False)
    assert res.failed == {} and len(res.translations) == 6
    assert sorted(srv.fault_log) == ["drop_key", "english", "english", "partial"]
    assert all(not re.search("[A-Za-z]", zh) and "储油罐" in zh for zh in res.translations.values())
    # items of faulty replies were asked again (and only those): 6 first asks + re-asks
    assert srv.sentence_requests.total() > 6 and srv.requests > 2


def test_items_still_failing_are_reported_not_cached(fake_llm, tmp_path):
    srv = fake_llm(counts={"english": 99})  # one item of each reply keeps an English word
    with ResultCache(tmp_path / "c.sqlite") as cache:
        res = Translator(client(srv.base_url), cache, TranslateConfig(batch_size=2, rounds=2), "fake").run(
            ["a runway", "a beach"], progress=False)
        (bad,) = res.failed
        assert "English left" in res.failed[bad] and srv.sentence_requests[bad] == 2
        assert set(res.translations) == {"a runway", "a beach"} - {bad} and cache.count("translate") == 1


def test_retry_after_is_honoured(fake_llm):
    srv = fake_llm(retry_after=["1"])
    c = client(srv.base_url)
    c.chat([{"role": "user", "content": 'x {"1": "a beach"}'}])  # the SDK's import and first connection
    srv.counts["rate_limit"] = 1
    t = time.monotonic()
    c.chat([{"role": "user", "content": 'x {"1": "a beach"}'}])
    assert 0.95 <= time.monotonic() - t < 5
    assert (c.usage.calls, c.usage.retries, c.usage.replies) == (3, 1, 2) and srv.requests == 3


def test_5xx_timeouts_and_bad_bodies_are_retried(fake_llm):
    srv = fake_llm(counts={"slow": 1, "server_error": 2, "html": 1}, slow_seconds=1.5,
                   retry_after=[{"retry-after-ms": "10"}])
    c = client(srv.base_url, timeout=0.5)
    out = c.chat([{"role": "system", "content": "Terms: beach = 海滩"}, {"role": "user", "content": 'x {"1": "a beach"}'}])
    assert json.loads(out) == {"1": "一海滩。"} and c.usage.calls == 5 and c.usage.retries == 4
    assert srv.fault_log == ["slow", "server_error", "server_error", "html"]


def test_gives_up_after_retries_and_on_auth(fake_llm):
    srv = fake_llm(counts={"server_error": 10}, retry_after=[{"retry-after-ms": "1"}])
    with pytest.raises(LLMUnavailable, match=r"HTTP 500\) after 3 tries") as e:
        client(srv.base_url, max_retries=2).chat([{"role": "user", "content": 'x {"1": "a"}'}])
    assert e.value.kind == "server_error" and e.value.rerun_helps and srv.requests == 3
    with pytest.raises(RemoteGLMError, match="not found"):
        client(srv.base_url.replace("/v1", "/nope")).chat([{"role": "user", "content": "x"}])
    srv = fake_llm(counts={"unauthorized": 1})
    with pytest.raises(RemoteGLMError, match="refused the key") as e:
        client(srv.base_url).chat([{"role": "user", "content": 'x {"1": "a"}'}])
    assert srv.fault_log == ["unauthorized"] and srv.requests == 1  # no retry on a bad key
    assert "not-needed" not in str(e.value) and "--api_key_env" in str(e.value)


def test_estimate_and_cache_schema(tmp_path):
    e = estimate(["a road"] * 45, batch_size=20)
    assert e["calls"] == 3 and e["tokens_in"] > 0 and e["tokens_out"] > 0
    with ResultCache(tmp_path / "c.sqlite") as cache:
        cache.put_many("translate", "m", "v1", {"a": "甲"})
    with sqlite3.connect(tmp_path / "c.sqlite") as db:  # committed: visible to another connection
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT result FROM results").fetchall() == [("甲",)]


def test_jieba_terms(tmp_path):
    assert "储油罐" in tokenize_zh("两个储油罐在道路旁边。")
    path = write_jieba_userdict(tmp_path / "userdict.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert "储油罐 2000 n" in lines and "高尔夫球场 2000 n" in lines


def test_dry_runs_look_each_sentence_up_once(tmp_path, monkeypatch):
    """A dry run reads the cache once per distinct sentence, not once per sentence per sentence
    (RSICD's estimate took minutes): the captions' pipeline and the RSVQA importer alike."""
    from datahelp import ucm_list, write_json
    from test_data_importers import write_rsvqa

    from remoteglm.data.rsvqa import load_rsvqa
    from remoteglm.data.rsvqa_records import RSVQAConfig, import_rsvqa
    from remoteglm.data.pipeline import PipelineConfig, run

    looked_up = []
    real = ResultCache.get_checked

    def spy(self, kind, model, version, sources, *rest):
        looked_up.extend(sources)
        return real(self, kind, model, version, sources, *rest)

    monkeypatch.setattr(ResultCache, "get_checked", spy)
    src = write_json(tmp_path / "UCM-en.json", ucm_list(60, step=35))
    s = run(PipelineConfig(input=src, name="UCM", out_dir=tmp_path / "out", cache=tmp_path / "c.sqlite",
                           dry_run=True, progress=False))
    assert s.distinct > 30 and len(looked_up) == s.distinct and s.estimate["sentences"] == s.distinct
    write_rsvqa(tmp_path / "RSVQA_LR")
    looked_up.clear()
    vs = import_rsvqa(RSVQAConfig(root=tmp_path / "RSVQA_LR", out_dir=tmp_path / "vqa", cache=tmp_path / "c.sqlite",
                                  dry_run=True, progress=False))
    n = len(distinct_sentences(load_rsvqa(tmp_path / "RSVQA_LR").questions()))
    assert n > 3 and vs.distinct == n and len(looked_up) == n
    assert not (tmp_path / "out").exists() and not (tmp_path / "c.sqlite").exists()
