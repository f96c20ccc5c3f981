"""Instruction kinds from the captions (tasks.py): grounded answers, the whole path against the
misbehaving fake LLM, mixing, and a conversation record read by the fine-tune loader.

Chinese captions here come from the fake LLM's own translator (``fake_translate``, told the
project's glossary as a prompt would tell it), so the checks meet text they did not write.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from datahelp import karpathy_from_list, run_cli, ucm_list, write_json
from fake_llm import INVENTED, MOOD_WORDS, REFUSALS, fake_translate

from remoteglm.data.build import build_finetune_records, check_no_leak
from remoteglm.data.datasets import load_captions, scene_class, split_caption
from remoteglm.data.facts import PRESENCE_PER_IMAGE, Fact, Sources, absent_candidates, image_facts, present_terms
from remoteglm.data.glossary import CLASS_NAMES_ZH, GLOSSARY
from remoteglm.data.grounding import fact_problems
from remoteglm.data.kinds import KINDS, mix_records, parse_kinds, parse_mix
from remoteglm.data.llm import LLMConfig
from remoteglm.data.phrasing import check_conversation, conversation_messages, draft_conversation
from remoteglm.data.pipeline import PipelineConfig, run
from remoteglm.data.tasks import TaskConfig, TaskImage, TaskMaker
from remoteglm.data.translate import TranslateConfig
from remoteglm.errors import RemoteGLMError

TERMS = {en: zh for en, zh in GLOSSARY.items()}
NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}


def _src(*pairs: tuple[str, str], cls: str = "") -> Sources:
    return Sources(tuple(en for en, _ in pairs), tuple(zh for _, zh in pairs), cls)


def _facts(src: Sources, cls: str | None = None, stats=None, seed: int = 42) -> list[Fact]:
    return image_facts(src, cls, stats or {}, seed, "x.tif")


def _ucm_images(n_per_class: int = 5) -> list[TaskImage]:
    """UCM fixture images (every class), translated by the fake LLM's own word list + the glossary."""
    out = []
    for i, it in enumerate(ucm_list()):
        if (i % 100) >= n_per_class:
            continue
        en = split_caption(it["caption"])
        cls = scene_class("UCM", it["imged_id"])
        src = Sources(tuple(en), tuple(fake_translate(s, TERMS) for s in en), CLASS_NAMES_ZH["UCM"][cls])
        out.append(TaskImage(it["imged_id"], src, cls, i % 10 < 8))
    return out


# -- what the captions say ---------------------------------------------------------------------

def test_counting_only_where_a_caption_states_a_number():
    src = _src(("There are two white airplanes at the airport", "机场上有两架白色飞机。"),
               ("3 storage tanks are on the lawn", "草坪上有3个储油罐。"),
               ("Several cars are parked beside the road", "道路旁边停着几辆汽车。"),
               ("two or three boats in the harbor", "港口里有两三艘船。"),
               ("two rows of trees along the road", "道路两旁有两排树。"))
    counts = {f.obj: f.answer for f in _facts(src) if f.task == "count"}
    assert counts == {"飞机": "2", "储油罐": "3"}  # not 汽车 ("several"), 船 ("two or three"), 树 ("rows")
    # a caption stating another count for the same thing: no question at all
    other = _src(("There are two white airplanes", "有两架白色飞机。"), ("an airplane at the airport", "机场上有一架飞机。"))
    assert [f for f in _facts(other) if f.task == "count"] == []
    # the translation must say the number too (an approximate 两三 is no count)
    loose = _src(("There are two airplanes", "有两三架飞机。"))
    assert [f for f in _facts(loose) if f.task == "count"] == []


def test_attributes_only_where_a_caption_states_them():
    src = _src(("some buildings with orange roofs", "一些建筑有橙色屋顶。"),
               ("a storage tank is on the lawn", "一个储油罐在草坪上。"),
               ("there are some cars", "有一些汽车。"))
    facts = {f.what: f for f in _facts(src) if f.task == "attribute"}
    assert facts["colour"].obj == "屋顶" and facts["colour"].answer == "橙色"
    assert facts["position"].obj == "储油罐" and facts["position"].answer == "一个储油罐在草坪上。"
    # two colours for the same thing, or a colour the translation does not say: no question
    clash = _src(("red roofs", "红色屋顶。"), ("grey roofs", "灰色屋顶。"), ("a blue-green sea", "蓝绿色的海。"))
    assert [f for f in _facts(clash) if f.what == "colour"] == []
    plain = _src(("a road goes through the farmland", "一条道路穿过农田。"), ("some houses", "一些房屋。"))
    assert {f.what for f in _facts(plain)} - {"yes", "no"} == {"position"}  # "through": a position, no colour


def _ucm_sources(name: str) -> Sources:
    """One real UCM image's captions, translated by the fake LLM's own word list + the glossary."""
    en = split_caption(next(it["caption"] for it in ucm_list() if it["imged_id"] == name))
    return Sources(tuple(en), tuple(fake_translate(s, TERMS) for s in en))


def _colour_words(text: str) -> set[str]:
    return set(re.findall(r"[白灰绿红蓝黑棕橙黄紫]色", text))


@pytest.mark.parametrize("src, obj, colours", [
    # real UCM captions: "buildings with white and red roofs", "white orange and grey roofs" (no comma),
    # "white and black roofs" beside "black and white roofs" (one fact, said twice)
    ("402.tif", "屋顶", {"白色", "红色"}), ("455.tif", "屋顶", {"白色", "黑色"}), ("464.tif", "屋顶", {"白色", "橙色"}),
    ("465.tif", "屋顶", {"白色", "橙色", "灰色"}), ("471.tif", "屋顶", {"灰色", "黑色"}), ("486.tif", "屋顶", {"棕色", "黑色"}),
    (("red, white and blue cars are parked", "停着红色、白色和蓝色的汽车。"), "汽车", {"红色", "白色", "蓝色"}),
    (("some dark green trees", "一些深绿色的树。"), "树", {"绿色"}),  # "dark": the shade of one colour
], ids=["402", "455", "464", "465", "471", "486", "commas", "shade"])
def test_coordinated_colours_are_all_in_the_answer(src, obj, colours):
    """A list of colours before one noun is one fact with every colour in it, never one of them."""
    src = _ucm_sources(src) if isinstance(src, str) else _src(src)
    (f,) = [f for f in _facts(src) if f.what == "colour"]
    assert f.obj == obj and _colour_words(f.answer) == colours, f
    assert fact_problems(f, f.question, f.answer, src) == []
    assert fact_problems(f, f.question, f"{obj}是{'和'.join(sorted(colours))}的。", src) == []
    if len(colours) > 1:  # an answer that names one of them has lost a fact
        for c in colours:
            assert fact_problems(f, f.question, f"{obj}是{c}的。", src), c


def test_colour_lists_that_are_not_one_answer_are_not_asked():
    for src in (_src(("green or brown farmland", "绿色或棕色的农田。")),  # "or": the captions are not sure
                _src(("white and orange roofs", "白色屋顶。")),  # the translation lost a colour
                _src(("white and orange roofs", "白色和橙色屋顶。"), ("white roofs", "白色屋顶。"))):  # another fact
        assert [f for f in _facts(src) if f.what == "colour"] == [], src


def test_presence_is_balanced_and_no_only_for_objects_no_caption_names():
    images = _ucm_images(5)
    maker = TaskMaker(None, None, TaskConfig(seed=42), "m")
    facts = maker.facts(images)
    assert facts == maker.facts(images)  # deterministic
    other_seed = TaskMaker(None, None, TaskConfig(seed=7), "m").facts(images)
    assert [f.obj for fs in other_seed.values() for f in fs] != [f.obj for fs in facts.values() for f in fs]
    per_class: dict[str, list[TaskImage]] = {}
    for im in images:
        per_class.setdefault(im.cls, []).append(im)
    yes = no = 0
    for im in images:
        kinds = Counter(f.what for f in facts[im.key])
        assert kinds["yes"] == kinds["no"] <= PRESENCE_PER_IMAGE, (im.key, kinds)
        yes, no = yes + kinds["yes"], no + kinds["no"]
        for f in facts[im.key]:
            if f.what == "yes":
                assert any(f.obj in z for z in im.src.zh), f
            elif f.what == "no":
                english = {en for en, zh in GLOSSARY.items() if zh == f.obj}
                assert not any(f.obj in z for z in im.src.zh), f  # no caption names it, in Chinese ...
                assert not any(re.search(rf"\b{e}", s.lower()) for e in english for s in im.src.en), f  # ... or English
                # typical of another class (in some form: 海 says 海洋), never said in this one
                forms = {f.obj} | {v for v in GLOSSARY.values() if v in f.obj or f.obj in v}
                assert not any(f.obj in z for other in per_class[im.cls] for z in other.src.zh)
                assert any(sum(any(v in z for v in forms for z in o.src.zh) for o in ims) >= 0.2 * len(ims)
                           for c, ims in per_class.items() if c != im.cls), f
    assert yes == no > 0.8 * len(images)  # balanced over the set, and nearly every image asked


def test_every_draft_passes_its_own_checks():
    """What the LLM is given, given back unchanged, is accepted: every item and every draft
    conversation of real UCM captions (a check that rejects its own draft drops good data)."""
    images = _ucm_images(5)
    maker = TaskMaker(None, None, TaskConfig(seed=3), "m")
    all_facts, drafts = maker.facts(images), 0
    for im in images:
        facts = all_facts[im.key]
        for f in facts:
            assert fact_problems(f, f.question, f.answer, im.src) == [], (im.key, f)
        turns = draft_conversation(im.src, facts, 3, im.key)
        if len(turns) >= 2:
            drafts += 1
            user = conversation_messages(im.src, turns)[1]["content"]
            items = json.loads(user.splitlines()[1])
            assert check_conversation(im.src, turns, [items[str(k + 1)] for k in range(len(items))]) == [], im.key
    assert drafts > 0.9 * len(images)


def test_negated_objects_are_never_asked():
    src = _src(("there are no boats in the harbor", "港口里没有船。"), ("a harbor without boats", "一个没有船的港口。"))
    assert "船" not in present_terms(src)
    assert "船" not in absent_candidates(src, "beach", {"beach": {"海滩": 1.0}, "harbor": {"船": 1.0}})


# -- the grounding check -----------------------------------------------------------------------

SRC = _src(("There are two white airplanes at the airport", "机场上停着两架白色飞机。"),
           ("two airplanes are stopped beside the runway", "两架飞机停在跑道旁边。"), cls="飞机")


def _fact(what: str) -> Fact:
    return next(f for f in _facts(SRC, "airplane", {"airplane": {"飞机": 1.0}, "tenniscourt": {"网球场": 1.0}})
                if f.what == what)


@pytest.mark.parametrize("what, answer", [
    ("number", "3"),                               # a wrong count
    ("number", "图中有三架飞机。"),
    ("yes", "是，旁边还有一座教堂。"),                 # an invented object
    ("yes", "是，让人感觉十分宁静。"),                 # mood
    ("yes", "否，图中没有飞机。"),                     # the wrong polarity
    ("colour", "红色"),                             # a colour no caption says
    ("colour", "白色的飞机停在机场，景色非常美丽。"),
    ("position", "飞机停在机场左侧。"),                 # a position no caption says
    ("no", "是，图中有网球场。"),
] + [("yes", r) for r in REFUSALS])
def test_grounding_rejects_what_the_captions_do_not_say(what, answer):
    f = _fact(what)
    assert fact_problems(f, f.question, f.answer, SRC) == []  # the deterministic item itself passes
    assert fact_problems(f, f.question, answer, SRC), answer


def test_no_is_only_for_objects_no_caption_names():
    f = _fact("no")
    assert f.obj == "网球场" and f.answer == "否"
    said = _src(*zip(SRC.en, SRC.zh), ("a tennis court beside the runway", "跑道旁边有一个网球场。"), cls="飞机")
    assert any("不能回答“否”" in p for p in fact_problems(f, f.question, f.answer, said))
    only_chinese = Sources(SRC.en, SRC.zh[:1] + ("跑道旁边有网球场。",), "飞机")  # named in the Chinese only
    assert fact_problems(f, f.question, f.answer, only_chinese)


def test_a_good_conversation_passes_and_a_miscount_fails():
    turns = [_fact("number"), _fact("colour")]
    items = ["图中一共有几架飞机？", "图中有两架飞机。", "它们是什么颜色的？", "飞机是白色的。"]
    assert check_conversation(SRC, turns, items) == []
    assert check_conversation(SRC, turns, ["图中一共有几架飞机？", "图中有三架飞机。"] + items[2:])
    assert check_conversation(SRC, turns, items[:3] + [None])


# -- the whole path against the fake LLM ---------------------------------------------------------

def _cfg(src: Path, out: Path, cache: Path, base_url: str, **kw) -> PipelineConfig:
    return PipelineConfig(input=src, name="UCM", out_dir=out, cache=cache, progress=False,
                          llm=LLMConfig(base_url=base_url, model="fake", max_retries=3, backoff=0.01),
                          translate=TranslateConfig(concurrency=4), **kw)


def _instructions(out: Path) -> dict[str, list[dict]]:
    zh = json.loads((out / "dataset_UCM_zh.json").read_text(encoding="utf-8"))
    return {im["filename"]: im["instructions"] for im in zh["images"]}


def test_whole_path_catches_refusals_invented_objects_and_wrong_counts(fake_llm, tmp_path):
    src = write_json(tmp_path / "UCM-en.json", ucm_list(42, step=50))
    clean = fake_llm()
    # translations and paragraphs first, from a well-behaved LLM (the cache is shared below)
    run(_cfg(src, tmp_path / "base", tmp_path / "cache.sqlite", clean.base_url, rewrite=True))
    shutil.copy(tmp_path / "cache.sqlite", tmp_path / "cache-clean.sqlite")
    kinds = parse_kinds("all")
    ref = run(_cfg(src, tmp_path / "ref", tmp_path / "cache-clean.sqlite", clean.base_url, tasks=kinds,
                   phrase_questions=True))
    assert ref.tasks.rejected.total() == 0 and ref.tasks.dropped.total() == 0
    reference = _instructions(tmp_path / "ref")

    faults = {"refuse": 3, "invent": 4, "miscount": 3, "mood": 2, "drop_key": 1, "partial": 1, "html": 1}
    bad = fake_llm(counts=faults, rates={"invent": 0.1, "miscount": 0.1, "refuse": 0.05}, seed=2)
    s = None
    for runs in range(1, 4):  # an item none of whose replies could be read is unfinished: a user reruns
        before = len(bad.fault_log)
        try:
            s = run(_cfg(src, tmp_path / "out", tmp_path / "cache.sqlite", bad.base_url, tasks=kinds,
                         phrase_questions=True))
            break
        except RemoteGLMError as e:
            assert "still not done" in str(e) and "a rerun asks only for these" in str(e), e
    assert s is not None
    served, last = Counter(bad.fault_log), Counter(bad.fault_log[before:])
    assert served["invent"] >= 4 and served["miscount"] >= 3 and served["refuse"] >= 3, served
    tk = s.tasks
    assert tk.rejected.total() >= last.total() - last["html"] and (tk.rejected["conversation"] > 0 or runs > 1)
    got = _instructions(tmp_path / "out")
    # every fault was caught: what was kept is exactly what the well-behaved LLM gave, no more
    for img, items in got.items():
        conv = [i for i in items if i["task"] == "conversation"]
        ref_conv = [i for i in reference[img] if i["task"] == "conversation"]
        assert conv == ref_conv or (conv == [] and ref_conv), (img, conv, ref_conv)
        assert [i for i in items if i["task"] != "conversation"] == \
               [i for i in reference[img] if i["task"] != "conversation"], img
    made = tk.made["conversation"]
    assert made + tk.dropped["conversation"] == ref.tasks.made["conversation"]
    texts = [t for items in got.values() for i in items for t in
             ([i["question"], i["answer"]] if "answer" in i else [x for turn in i["turns"] for x in turn])]
    assert not [t for t in texts if any(w in t for w in MOOD_WORDS) or any(p.strip("，") in t for p, _ in INVENTED)
                or any(r.strip("。！") in t for r in REFUSALS if len(r) > 3)]
    # count answers are the numbers the English states
    english = {im.filename: " ".join(im.sentences).lower() for im in load_captions(src, "UCM").images}
    for img, items in got.items():
        for i in items:
            if i["task"] == "count":
                stated = {NUMBER_WORDS.get(w, int(w) if w.isdigit() else 0) for w in re.findall(r"\w+", english[img])}
                assert int(i["answer"]) in stated, (img, i)
    # the records of every kind, no val/test image in train
    files = {sp: json.loads((tmp_path / "out" / f"UCM_{sp}.json").read_text(encoding="utf-8"))
             for sp in ("train", "val", "test")}
    check_no_leak(files)
    assert {r["task"] for r in files["train"]} == set(kinds)
    conv = [r for r in files["train"] if r["task"] == "conversation"]
    assert conv and all(1 <= len(r["history"]) <= 3 and all(len(t) == 2 for t in r["history"]) for r in conv)
    # a rerun asks nothing and rebuilds nothing
    asked = bad.requests
    again = run(_cfg(src, tmp_path / "out", tmp_path / "cache.sqlite", bad.base_url, tasks=kinds, phrase_questions=True))
    assert bad.requests == asked and again.usage.calls == 0 and again.up_to_date
    assert again.tasks.made == tk.made and again.tasks.cached["conversation"] == made + tk.dropped["conversation"]


def test_endpoint_down_during_conversations_is_unfinished_work_and_a_rerun_finishes(fake_llm, tmp_path):
    src = write_json(tmp_path / "UCM-en.json", ucm_list(21, step=100))
    clean = fake_llm()
    run(_cfg(src, tmp_path / "out", tmp_path / "cache.sqlite", clean.base_url))
    down = fake_llm(rates={"server_error": 1.0})
    cfg = _cfg(src, tmp_path / "out", tmp_path / "cache.sqlite", down.base_url, tasks=("caption", "conversation"))
    cfg.llm.max_retries = 0
    with pytest.raises(RemoteGLMError, match=r"conversations still not done .* rerun the same command later"):
        run(cfg)
    failures = json.loads((tmp_path / "out" / "failures.json").read_text(encoding="utf-8"))
    assert failures and all(f["sentence"] == "(conversation about the image)" for f in failures)
    s = run(_cfg(src, tmp_path / "out", tmp_path / "cache.sqlite", clean.base_url, tasks=("caption", "conversation")))
    assert s.tasks.made["conversation"] > 10 and not (tmp_path / "out" / "failures.json").exists()


def test_unreadable_replies_are_unfinished_work_not_drops(fake_llm, tmp_path):
    """An endpoint whose replies never parse (here: refusals) is no verdict on the conversations or
    questions: they are not cached as dropped or kept-as-template, the job says so like unfinished
    translations (failures.json, non-zero exit) and a rerun against a working endpoint makes them."""
    import sqlite3

    src = write_json(tmp_path / "UCM-en.json", ucm_list(21, step=100))
    clean = fake_llm()
    out, cache = tmp_path / "out", tmp_path / "cache.sqlite"
    run(_cfg(src, out, cache, clean.base_url))
    kinds = ("caption", "presence", "conversation")
    bad = fake_llm(rates={"refuse": 1.0})
    with pytest.raises(RemoteGLMError, match=r"conversations and \d+ question phrasings still not done .*"
                                             r"reply is not a JSON object x\d+\): a rerun asks only for these"):
        run(_cfg(src, out, cache, bad.base_url, tasks=kinds, phrase_questions=True))
    failures = json.loads((out / "failures.json").read_text(encoding="utf-8"))
    kinds_failed = Counter(f["sentence"].split(":")[0] for f in failures)
    assert kinds_failed["(conversation about the image)"] > 10 and kinds_failed["(question phrasing"] > 0, kinds_failed
    assert all("JSON object" in f["problem"] for f in failures)
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*) FROM results WHERE kind != 'translate'").fetchone()[0] == 0
    s = run(_cfg(src, out, cache, clean.base_url, tasks=kinds, phrase_questions=True))
    made = s.tasks.made["conversation"]
    assert made > 10 and s.tasks.dropped["conversation"] == 0 and s.tasks.fallbacks == 0
    assert not (out / "failures.json").exists()
    # a cache from before drops recorded their cause: such a drop is asked again, once
    with sqlite3.connect(cache) as db:
        db.execute("UPDATE results SET status='dropped', result='[]', validator='older' WHERE kind='conversation'")
    asked = clean.requests
    again = run(_cfg(src, out, cache, clean.base_url, tasks=kinds, phrase_questions=True))
    assert again.tasks.made["conversation"] == made and clean.requests - asked == made


# -- mixing ------------------------------------------------------------------------------------

def _zh_with_tasks(tmp_path, fake_llm, n=42) -> tuple[dict, Path]:
    data = tmp_path / "UCM_captions"
    write_json(data / "dataset.json", karpathy_from_list(ucm_list(n, step=50), ["train", "train", "val", "test"]))
    srv = fake_llm()
    out = tmp_path / "zh"
    run(_cfg(data / "dataset.json", out, tmp_path / "c.sqlite", srv.base_url, tasks=parse_kinds("all")))
    return json.loads((out / "dataset_UCM_zh.json").read_text(encoding="utf-8")), out


def test_mix_weights_the_train_file_seeded_and_keeps_val_test_whole(fake_llm, tmp_path):
    zh, out = _zh_with_tasks(tmp_path, fake_llm)
    kinds = parse_kinds("all")
    full = build_finetune_records(zh, out / "imgs", out, tasks=kinds)
    n = Counter(r["task"] for r in full["train"])
    assert set(n) == set(kinds)
    mix = parse_mix("caption=1,vqa=2,cls=0.5,conv=0.5,description=0")
    mixed = build_finetune_records(zh, out / "imgs", out, tasks=kinds, mix=mix)
    m = Counter(r["task"] for r in mixed["train"])
    assert m["caption"] == n["caption"] and m["description"] == 0
    assert m["presence"] == 2 * n["presence"] and m["count"] == 2 * n["count"] and m["attribute"] == 2 * n["attribute"]
    assert m["classify"] == round(n["classify"] / 2) and m["conversation"] == round(n["conversation"] / 2)
    assert mixed["val"] == full["val"] and mixed["test"] == full["test"]  # evaluation sees every record
    assert build_finetune_records(zh, out / "imgs", out, tasks=kinds, mix=mix) == mixed  # seeded
    other = build_finetune_records(zh, out / "imgs", out, seed=7, tasks=kinds, mix=mix)
    pick = [(r["img"], r["label"]) for r in mixed["train"] if r["task"] == "classify"]
    assert pick != [(r["img"], r["label"]) for r in other["train"] if r["task"] == "classify"]
    train = {r["img"] for r in mixed["train"]}
    assert not train & {r["img"] for sp in ("val", "test") for r in mixed[sp]}  # across all kinds


def test_mix_and_tasks_options():
    assert parse_kinds("all") == KINDS
    assert parse_kinds("conv, vqa,caption") == ("caption", "presence", "count", "attribute", "conversation")
    assert parse_mix("caption=1,vqa=1,cls=0.5,conv=0.5") == {
        "caption": 1.0, "presence": 1.0, "count": 1.0, "attribute": 1.0, "classify": 0.5, "conversation": 0.5}
    for bad in ("caption", "caption=-1", "caption=x", "captions=1", "all=1", ""):
        with pytest.raises(RemoteGLMError, match="--mix"):
            parse_mix(bad)
    with pytest.raises(RemoteGLMError, match="unknown kind 'vqa2'"):
        parse_kinds("caption,vqa2")
    recs = [{"task": "caption", "i": i} for i in range(10)] + [{"task": "classify", "i": i} for i in range(10)]
    assert len(mix_records(recs, {"classify": 0.3}, 1)) == 13
    assert len(mix_records(recs, {"caption": 2.5}, 1)) == 25 + 10


def test_cli_tasks_and_mix(fake_llm, tmp_path):
    srv = fake_llm()
    src = write_json(tmp_path / "UCM-en.json", ucm_list(42, step=50))
    args = ["--input", str(src), "--out_dir", str(tmp_path / "out"), "--base_url", srv.base_url, "--model", "fake",
            "--cache", str(tmp_path / "c.sqlite")]
    r = run_cli(*args, "--mix", "caption=1,vqa=1,cls=0.5,conv=0.5")
    assert r.returncode == 0, r.stderr
    assert re.search(r"instructions: presence \d+, .*conversation \d+ \(是 (\d+) / 否 \1\); \d+ LLM calls", r.stderr), r.stderr
    assert "replies rejected by the grounding check: none" in r.stderr
    train = json.loads((tmp_path / "out" / "UCM_train.json").read_text(encoding="utf-8"))
    assert {r["task"] for r in train} == set(KINDS)  # --mix alone makes every kind
    assert re.search(r"train: \d+ images, \d+ fine-tune records \(caption \d+, description \d+", r.stderr)
    for bad, needle in ((["--mix", "vqa=lots"], "--mix: 'vqa=lots'"), (["--tasks", "captions"], "unknown kind")):
        r = run_cli(*args, *bad)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


# -- training reads a conversation record ----------------------------------------------------------

def test_the_fine_tune_loader_reads_a_conversation_record(tmp_path):
    from remoteglm.model.prompt import encode_prompt
    from remoteglm.model.tiny_tokenizer import train_tiny_tokenizer
    from remoteglm.model.tokenizer import ChatGLMTokenizer
    from remoteglm.data.records import load_records
    from remoteglm.model.sample import IGNORE_INDEX, SampleEncoder

    tok = ChatGLMTokenizer.from_pretrained(train_tiny_tokenizer(tmp_path / "ice_text.model"))
    history = [["这张遥感图像里有什么？", "机场上停着两架白色飞机。"], ["图中有网球场吗？", "否，图中没有网球场。"]]
    recs = [{"img": "a.png", "prompt": "飞机是什么颜色的？", "label": "飞机是白色的。", "history": history,
             "task": "conversation"}, {"img": "a.png", "prompt": "描述这张图片。", "label": "一个机场。"}]
    write_json(tmp_path / "t.json", recs)
    conv, plain = load_records(tmp_path / "t.json")
    assert conv.history == tuple(map(tuple, history)) and plain.history == ()
    enc = SampleEncoder(tok, max_source_length=128)
    e = enc.encode(conv.prompt, conv.label, conv.history)
    prompt = encode_prompt(tok, conv.prompt, conv.history, image_length=32).ids
    assert e.input_ids[: len(prompt)] == prompt and not e.prompt_truncated  # the chat's prompt with its turns
    answer = tok.encode("飞机是白色的。", add_special_tokens=False)
    assert [x for x in e.labels if x != IGNORE_INDEX] == answer + [tok.eos_token_id]  # loss on the last answer only
    short = SampleEncoder(tok, max_source_length=24).encode(conv.prompt, conv.label, conv.history)
    assert short.prompt_truncated and len(short.input_ids) < len(e.input_ids)  # old turns go first
    write_json(tmp_path / "bad.json", [{**recs[0], "history": ["not a pair"]}])
    with pytest.raises(RemoteGLMError, match="item 0 'history' must be a list of"):
        load_records(tmp_path / "bad.json")
