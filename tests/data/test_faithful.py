"""Faithfulness checks on realistic strings: refusals, filler, invented words, lost content, old caches.

Good data is what the project ships (data/sample: 50 captions with their English) and hand-written
translations / merged paragraphs of real UCM and Sydney captions (faithful_cases.py); bad data is
what real LLMs answer (refusals, chatter, mood words, a paragraph that keeps one source).
"""

from __future__ import annotations

import inspect
import json
import sqlite3
import threading
from pathlib import Path

import pytest
from datahelp import ROOT, run_cli, write_json
from faithful_cases import REAL, SAMPLE_PARAGRAPHS
from scripted_server import ScriptedServer

from remoteglm.data import faithful, faithful_words, glossary, numerals
from remoteglm.data.cache import ResultCache
from remoteglm.data.rewrite import (
    RewriteConfig,
    Rewriter,
    check_rewrite,
    fallback_label,
    source_key,
)
from remoteglm.data.rewrite import validator as rewrite_validator
from remoteglm.data.translate import TranslateConfig, Translator, check_translation
from remoteglm.data.translate import validator as translate_validator

SAMPLE = json.loads((ROOT / "data" / "sample" / "dataset_sample_zh.json").read_text(encoding="utf-8"))
AIRPORT = ["一架白色的飞机停在机场上。", "旁边有一条跑道。", "机场上停着一些汽车。"]
TANKS = ["两个储油罐在道路旁边。", "一些树在储油罐旁边。", "两个储油罐在地面上。"]
REFUSALS = ["抱歉，这个我做不到。", "好的。", "请稍等。", "当然可以！", "对不起，我不能帮助你。",
            "作为一个AI语言模型，我无法查看图像。", "我无法完成这个任务。", "请问您需要什么样的描述？",
            "好的，以下是合并后的段落：", "非常抱歉，我不能为您提供帮助。", "没问题！"]


def _sample_images():
    for im in SAMPLE["images"]:
        yield im["filename"], [(s["raw_en"], s["raw"]) for s in im["sentences"]]


# -- translations ---------------------------------------------------------------------------

def test_real_translations_pass_and_the_same_with_a_refusal_or_mood_words_fail():
    pairs = [p for _, ps in _sample_images() for p in ps] + [p for *_, ps, _ in REAL for p in ps]
    assert len(pairs) == 103
    rejected = [(en, zh, check_translation(en, zh)) for en, zh in pairs if check_translation(en, zh)]
    assert rejected == []  # false-positive rate on the project's own labels and hand translations: 0
    for en, zh in pairs:
        assert check_translation(en, zh.rstrip("。") + "，让人感觉十分宁静祥和。"), zh
        assert check_translation(en, "好的，以下是翻译：" + zh), zh
        assert check_translation(en, zh + "需要我再修改吗？"), zh


@pytest.mark.parametrize("reply", REFUSALS + ["抱歉，我无法翻译这句话。", "同上。", "（无法翻译）", "翻译：一些绿色的植物。"])
def test_refusals_and_chatter_are_not_translations(reply):
    problems = check_translation("some green plants", reply)
    assert any("not only the translation" in p for p in problems), problems


@pytest.mark.parametrize("plain, saying_it, chinese, word", [
    ("a beach", "a quiet and peaceful beach", "一片宁静祥和的海滩。", "宁静"),
    ("lots of boats docked in the harbor", "lots of boats docked in the busy harbor", "港口里停靠着许多船，一派繁忙。", "繁忙"),
    ("a road goes through the farmland", "a road goes through the beautiful farmland scenery", "一条道路穿过农田，景色美丽。",
     "美丽"),
    ("green trees are around the pond", "green trees full of life are around the pond", "绿树环绕着池塘，充满生机。", "生机"),
    ("many buildings are boxes", "many buildings look like boxes", "许多建筑看起来好像盒子。", "好像"),
    ("a pond with green water", "a pond filled with green water", "一个充满绿水的池塘。", "充满"),
    ("a residential area", "a residential area with a relaxed atmosphere", "一个气氛轻松的住宅区。", "气氛"),
])
def test_mood_words_in_a_translation_need_the_english_to_say_them(plain, saying_it, chinese, word):
    (problem,) = check_translation(plain, chinese)
    assert "mood or judgement words the English does not say" in problem and word in problem
    assert check_translation(saying_it, chinese) == []


@pytest.mark.parametrize("plain, saying_it, chinese", [
    ("many buildings", "you can see many buildings", "你可以看到许多建筑。"),
    ("a playground with a red track", "we can see a playground with a red track", "我们可以看到一个有红色跑道的操场。"),
])
def test_first_and_second_person_only_where_the_english_has_them(plain, saying_it, chinese):
    assert any("not only the translation" in p for p in check_translation(plain, chinese))
    assert check_translation(saying_it, chinese) == []


def test_objects_and_numbers_must_match_the_english():
    (p,) = check_translation("many buildings near a road", "道路附近有许多建筑，旁边还有一座教堂。")
    assert "objects the English does not mention: 教堂" in p
    assert check_translation("many boats docked in the harbor", "港口里停靠着许多船。") == []
    assert check_translation("two planes", "三架飞机。") == ["number of the English missing: 2",
                                                          "number the English does not say: 3"]
    assert check_translation("two planes", "飞机。") == ["number of the English missing: 2"]
    # 三 and 3, 两 and 2 are the same number; 十字路口 and 四周 are no numbers; 两侧 may say "both"
    for en, zh in [("three planes", "3架飞机。"), ("3 planes", "三架飞机。"), ("two planes", "2架飞机。"),
                   ("twenty-two cars", "二十二辆汽车。"), ("an intersection with four roads", "一个有四条道路的十字路口。"),
                   ("trees on both sides of the road", "道路两侧有树。"), ("houses surrounded by trees", "房屋四周都是树。"),
                   ("a two-lane road", "一条双车道的道路。"), ("dozens of cars", "几十辆汽车。")]:
        assert check_translation(en, zh) == [], (en, zh)
    long = "There is a white airplane parked on the airport with a runway beside"
    assert "translation far shorter than the English: something was dropped" in check_translation(long, "机场上的飞机。")


# -- rewrites -------------------------------------------------------------------------------

@pytest.mark.parametrize("reply", REFUSALS)
def test_refusals_and_filler_are_not_paragraphs(reply):
    problems = check_rewrite(reply, TANKS)
    assert problems and any("不是描述本身" in p for p in problems), problems


def test_a_paragraph_must_keep_every_source():
    (p,) = check_rewrite("一架飞机。", AIRPORT)  # keeps 1 of 3 sources
    assert p.startswith("漏掉了原句的内容") and "跑道" in p and "汽车" in p
    (p,) = check_rewrite("一架白色的飞机停在机场上，旁边有一条跑道。", AIRPORT)
    assert p == "漏掉了原句的内容：第3句的汽车"
    assert check_rewrite("一架白色的飞机停在机场上，旁边有一条跑道，机场上还停着一些汽车。", AIRPORT) == []
    # numbers: kept as 2 or 两, not dropped, not changed
    assert check_rewrite("地面上有2个储油罐，位于道路旁边，旁边还有一些树。", TANKS) == []
    assert check_rewrite("储油罐在地面上，道路旁边有一些树。", TANKS) == ["漏掉了原句的内容：第1句的两；第3句的两"]
    problems = check_rewrite("三个储油罐在地面上，道路旁边有一些树。", TANKS)
    assert "原句没有这些数量：3" in problems
    assert check_rewrite("几条道路穿过城镇，城镇里有许多建筑。", ["几条道路穿过城镇。", "城镇里有许多建筑。"]) == []
    assert check_rewrite("道路穿过城镇，城镇里有许多建筑。", ["几条道路穿过城镇。", "城镇里有许多建筑。"])
    # glossary terms stay, in a trivial form at least (居民区 for 住宅区; one-character ones too: 树)
    houses = ["一个房屋排列整齐的住宅区。", "旁边有一些树。"]
    assert check_rewrite("一个居民区里房屋排列整齐，旁边有一些树。", houses) == []
    assert check_rewrite("一个居民区里房屋排列整齐，旁边有一些草。", houses) == ["原句没有提到：草", "漏掉了原句的内容：第2句的树"]
    # 储油罐 is not 油罐
    assert check_rewrite("两个油罐在地面上，位于道路旁边，旁边有一些树。", TANKS)
    # much longer than all sources together: something was added
    padded = "两个储油罐在道路旁边，一些树在储油罐旁边，两个储油罐在地面上，" * 2 + "储油罐是灰色的。"
    assert "段落比原句总和还长很多" in check_rewrite(padded, TANKS)


def test_real_paragraphs_pass_and_lose_content_when_cut():
    cases = [(SAMPLE_PARAGRAPHS[name], [zh for _, zh in pairs]) for name, pairs in _sample_images()]
    cases += [(paragraph, [zh for _, zh in pairs]) for *_, pairs, paragraph in REAL]
    assert len(cases) == 22
    for paragraph, sources in cases:
        sources = source_key(sources).split("\n")
        assert check_rewrite(paragraph, sources) == [], paragraph  # hand-merged: accepted
        assert check_rewrite(fallback_label(sources), sources) == []  # the joined sentences: accepted
        first = paragraph.replace("；", "，").split("，")[0] + "。"  # the first clause only
        assert check_rewrite(first, sources), first
    assert check_rewrite("这是一片灌木丛，黄土地上散布着许多植物，其中有些植物呈灰色。",  # re-worded, still all there
                         ["这是一片灌木丛。", "地面上散布着许多植物。", "一些灰色的植物散布在黄土地上。"]) == []


def test_mood_words_only_from_sources_and_sources_are_checked_translations():
    assert check_rewrite("两个储油罐在地面上，道路旁边有一些树，让人感觉十分宁静。", TANKS) == [
        "加入了原句没有的词：感觉、宁静、让人"]
    beach = ["一片宁静祥和的海滩。", "海浪拍打着海滩。"]
    assert check_rewrite("一片宁静祥和的海滩，海浪拍打着海滩。", beach) == []  # the source says it ...
    # ... but such a source only exists if its English said it: the translation is rejected first
    assert check_translation("a beach", beach[0]) and check_translation("a quiet and peaceful beach", beach[0]) == []


# -- through the Translator / Rewriter, and cached answers of an older validator ---------------

class ScriptedLLM:
    """An LLM client whose answers are given per request; records what it was asked."""

    def __init__(self, answer):
        self.answer, self.asked, self.lock = answer, [], threading.Lock()

    def chat(self, messages):
        with self.lock:
            self.asked.append(messages[-1]["content"])
            return self.answer(messages[-1]["content"], len(self.asked))


def test_refusing_rewrites_are_reasked_with_the_problem_then_fall_back(tmp_path):
    good = "地面上有两个储油罐，位于道路旁边，旁边还有一些树。"
    llm = ScriptedLLM(lambda user, n: "抱歉，这个我做不到。" if "储油罐" in user and n == 1 else
                      good if "储油罐" in user else "好的。")
    images = [TANKS, AIRPORT]
    with ResultCache(tmp_path / "c.sqlite") as cache:
        res = Rewriter(llm, cache, RewriteConfig(concurrency=1, rounds=3), "m").run(images, progress=False)
    assert res.labels[source_key(TANKS)] == good
    assert res.labels[source_key(AIRPORT)] == fallback_label(AIRPORT)  # refused every time
    assert res.rewritten == 1 and res.fallbacks == 1 and res.rejected == 4
    reasks = [u for u in llm.asked if u.startswith("上一次的段落有问题")]
    assert len(reasks) == 3 and all("不是描述本身" in u for u in reasks)  # each re-ask names the problem


def _old_cache(path: Path, rows: list[tuple[str, str, str, str, str]]) -> None:
    """A cache as written before answers recorded their validator (the old schema)."""
    with sqlite3.connect(path) as db:
        db.execute("""CREATE TABLE results (kind TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
            source TEXT NOT NULL, result TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'ok',
            created REAL NOT NULL DEFAULT (julianday('now')), PRIMARY KEY (kind, model, version, source))""")
        db.executemany("INSERT INTO results (kind, model, version, source, result, status) VALUES (?,?,?,?,?,?)",
                       [(kind, "m", version, src, res, st) for kind, version, src, res, st in rows])


def test_old_cache_refusals_are_asked_again_and_good_answers_reused(tmp_path):
    db = tmp_path / "old.sqlite"
    good_tanks = "地面上有两个储油罐，位于道路旁边，旁边还有一些树。"
    _old_cache(db, [
        ("translate", "translate-v1", "a beach", "一片宁静祥和的海滩。", "ok"),  # invented mood words
        ("translate", "translate-v1", "some green plants", "抱歉，我无法翻译这句话。", "ok"),  # a refusal
        ("translate", "translate-v1", "two storage tanks", "两个储油罐。", "ok"),  # good
        ("rewrite", "rewrite-v1", source_key(AIRPORT), "抱歉，这个我做不到。", "ok"),  # a refusal
        ("rewrite", "rewrite-v1", source_key(TANKS), good_tanks, "ok"),  # good
    ])
    # a dry run (read-only, old schema) already sees only the good ones and changes nothing
    with ResultCache(db, readonly=True) as ro:
        assert Translator(None, ro, TranslateConfig(), "m").cached(["a beach", "some green plants",
                                                                    "two storage tanks"]) == {"two storage tanks": "两个储油罐。"}
    translations = {"a beach": "一片海滩。", "some green plants": "一些绿色的植物。"}
    tr_llm = ScriptedLLM(lambda user, n: json.dumps(
        {k: translations[v] for k, v in json.loads(user[user.index("{"):]).items()}, ensure_ascii=False))
    rw_llm = ScriptedLLM(lambda user, n: "一架白色的飞机停在机场上，旁边有一条跑道，机场上还停着一些汽车。")
    with ResultCache(db) as cache:
        tr = Translator(tr_llm, cache, TranslateConfig(batch_size=5), "m").run(
            ["a beach", "some green plants", "two storage tanks"], progress=False)
        rw = Rewriter(rw_llm, cache, RewriteConfig(concurrency=1), "m").run([TANKS, AIRPORT], progress=False)
    assert tr.cache_hits == 1 and tr.new == 2 and tr.translations["two storage tanks"] == "两个储油罐。"
    assert tr.translations["a beach"] == "一片海滩。" and "抱歉" not in tr.translations["some green plants"]
    assert len(tr_llm.asked) == 1 and "two storage tanks" not in tr_llm.asked[0]  # the good one: no call
    assert rw.cache_hits == 1 and rw.rewritten == 1 and len(rw_llm.asked) == 1 and "汽车" in rw_llm.asked[0]
    assert rw.labels[source_key(TANKS)] == good_tanks and "抱歉" not in rw.labels[source_key(AIRPORT)]
    # every stored answer now carries today's validator: the next read checks nothing again
    with sqlite3.connect(db) as con:
        stamps = dict(con.execute("SELECT kind || ':' || source, validator FROM results").fetchall())
    assert set(stamps.values()) == {translate_validator(), rewrite_validator()} and len(stamps) == 5
    with ResultCache(db) as cache:
        assert Rewriter(None, cache, RewriteConfig(), "m").run([TANKS, AIRPORT], progress=False).cache_hits == 2


def test_answers_stamped_by_todays_validator_are_not_checked_again(tmp_path, monkeypatch):
    with ResultCache(tmp_path / "c.sqlite") as cache:
        cache.put_many("rewrite", "m", "rewrite-v1", {source_key(TANKS): "一段文字。"}, validator=rewrite_validator())
        cache.put_many("rewrite", "m", "rewrite-v1", {source_key(AIRPORT): "一段文字。"}, validator="older")
        monkeypatch.setattr("remoteglm.data.rewrite.check_rewrite", lambda *a: pytest.fail("re-checked"))
        hits = cache.get_checked("rewrite", "m", "rewrite-v1", [source_key(TANKS)], rewrite_validator(),
                                 lambda *a: pytest.fail("re-checked"))
        assert list(hits) == [source_key(TANKS)]
        assert cache.get_checked("rewrite", "m", "rewrite-v1", [source_key(AIRPORT)], rewrite_validator(),
                                 lambda *a: False) == {}
    assert faithful.validator_version(check_rewrite) != faithful.validator_version(check_translation)


@pytest.mark.parametrize("module", [faithful, faithful_words, numerals, glossary], ids=lambda m: m.__name__)
def test_an_edit_to_any_module_the_checks_read_rechecks_cached_answers(monkeypatch, module):
    """The checks read their word lists, numbers and glossary from other modules: an edit to any of
    them changes the validator digest, so answers cached under the old code are checked again."""
    before = faithful.validator_version(check_translation)
    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: real(obj) + ("\n# edited" if obj is module else ""))
    assert faithful.validator_version(check_translation) != before


# -- the whole CLI against an LLM that refuses -------------------------------------------------

class RefusingLLM(ScriptedServer):
    """127.0.0.1 server: hand translations of REAL, and a refusal as the first answer to every rewrite."""

    def __init__(self):
        self.table = {en.rstrip(". ").lower(): zh for ds, _, pairs, _ in REAL if ds == "UCM" for en, zh in pairs}
        self.paragraphs = {source_key([zh for _, zh in pairs]): p for ds, _, pairs, p in REAL if ds == "UCM"}
        self.rewrites, self.translations = [], 0
        super().__init__(self._answer)

    def _answer(self, body: dict, items: dict) -> str:
        if "sentences" in items:
            key = source_key(items["sentences"])
            self.rewrites.append(key)
            first = self.rewrites.count(key) == 1
            return "抱歉，这个我做不到。" if first else self.paragraphs.get(key, "".join(items["sentences"]))
        self.translations += 1
        return "好的，以下是翻译：\n" + json.dumps({k: self.table[v.lower()] for k, v in items.items()}, ensure_ascii=False)


def test_cli_rewrite_with_refusals_keeps_none_and_reruns_without_calls(tmp_path):
    llm = RefusingLLM()
    try:
        items = [{"imged_id": img, "caption": "  ".join(en + " ." for en, _ in pairs)} for ds, img, pairs, _ in REAL
                 if ds == "UCM"]
        src = write_json(tmp_path / "UCM-en.json", items)
        args = ["--input", str(src), "--rewrite", "--out_dir", str(tmp_path / "out"), "--base_url", llm.base_url,
                "--model", "m", "--cache", str(tmp_path / "cache.sqlite")]
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
        zh = json.loads((tmp_path / "out" / "dataset_UCM_zh.json").read_text(encoding="utf-8"))
        labels = {im["filename"]: im["label"] for im in zh["images"]}
        expected = {img: p for ds, img, _, p in REAL if ds == "UCM"}
        assert labels == expected  # every refusal rejected, re-asked, and the real paragraph kept
        assert len(llm.rewrites) == 2 * len(expected)
        calls = (llm.translations, len(llm.rewrites))
        r = run_cli(*args)  # the rerun takes everything from the cache
        assert r.returncode == 0 and (llm.translations, len(llm.rewrites)) == calls, r.stderr
    finally:
        llm.close()
