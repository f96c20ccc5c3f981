"""The rewrite step: faithful paragraphs, re-asks, fallback, and the count of rejects."""

from fake_llm import MOOD_WORDS

from remoteglm.data.cache import ResultCache
from remoteglm.data.llm import LLMClient, LLMConfig
from remoteglm.data.rewrite import RewriteConfig, Rewriter, check_rewrite, fallback_label, source_key

SRC = ["两个储油罐在道路旁边。", "一些树在储油罐旁边。", "两个储油罐在地面上。"]
SRC2 = ["一片美丽的海滩和白色的沙子。", "海浪拍打着海滩。"]


def test_check_rewrite_catches_invented_content():
    assert check_rewrite("两个储油罐在地面上，道路旁边有一些树。", SRC) == []
    (p,) = check_rewrite("两个储油罐在地面上，道路旁边有一些树，让人感觉十分宁静。", SRC)
    assert "感觉" in p and "宁静" in p
    problems = check_rewrite("两个储油罐在道路旁边，旁边还有一座教堂和一辆卡车。", SRC)
    assert any("教堂" in x and "卡车" in x for x in problems)
    assert check_rewrite("Two storage tanks。", SRC)  # English / no Chinese
    # a word the source itself says is not "invented"
    assert check_rewrite("一片美丽的海滩，白色的沙子，海浪拍打着海滩。", SRC2) == []
    assert check_rewrite("", SRC)


def test_fallback_and_key():
    assert source_key(["甲。", "乙。", "甲。"]) == "甲。\n乙。"
    assert fallback_label(["甲。", "乙", "甲。"]) == "甲。乙。"


def _rewriter(srv, cache, rounds=3):
    client = LLMClient(LLMConfig(base_url=srv.base_url, model="fake", backoff=0.01))
    return Rewriter(client, cache, RewriteConfig(concurrency=2, rounds=rounds), "fake")


def test_mood_word_is_reasked_then_accepted(fake_llm, tmp_path):
    srv = fake_llm(counts={"mood": 1})
    with ResultCache(tmp_path / "c.sqlite") as cache:
        res = _rewriter(srv, cache).run([SRC, SRC, ["只有一句。"]], progress=False)
    assert res.rejected == 1 and res.fallbacks == 0 and res.rewritten == 1
    label = res.labels[source_key(SRC)]
    assert not [w for w in MOOD_WORDS if w in label] and "储油罐" in label
    assert res.labels["只有一句。"] == "只有一句。"  # single sentence: no call
    assert srv.by_kind["rewrite"] == 2  # the first reply rejected, one re-ask; identical images asked once


def test_persistent_invention_falls_back_and_is_cached(fake_llm, tmp_path):
    srv = fake_llm(counts={"mood": 10})
    with ResultCache(tmp_path / "c.sqlite") as cache:
        res = _rewriter(srv, cache, rounds=2).run([SRC, SRC2], progress=False)
        assert res.rejected == 4 and res.fallbacks == 2 and res.rewritten == 0
        assert res.labels[source_key(SRC)] == "".join(SRC) and any(w in res.examples[0] for w in MOOD_WORDS)
        again = _rewriter(srv, cache).run([SRC, SRC2], progress=False)  # rerun: nothing asked again
    assert srv.by_kind["rewrite"] == 4 and again.cache_hits == 2 and again.labels == res.labels
