"""A re-ask goes out while other first asks are still out: no round of re-asks waits for the
slowest request of the round before (with faults, one slow request held every re-ask back).

A scripted endpoint on 127.0.0.1, the real openai client: one sentence's answer takes a second,
another's first answer names no category, so it is asked again.
"""

from __future__ import annotations

import json
import threading
import time

from remoteglm.data.cache import ResultCache
from remoteglm.data.llm import LLMClient, LLMConfig
from remoteglm.data.translate import TranslateConfig, Translator
from scripted_server import ScriptedServer

SLOW, BAD, GOOD = "the storage tank on the left", "the car in the middle", "the bridge on the right"
ANSWERS = {SLOW: ["左侧的储油罐。"], BAD: ["中间的东西。", "中间的汽车。"], GOOD: ["右侧的桥梁。"]}
OBJECTS = {SLOW: ("storagetank", "储油罐"), BAD: ("vehicle", "车辆"), GOOD: ("bridge", "桥梁")}


class Endpoint(ScriptedServer):
    def __init__(self):
        self.log: list[tuple[str, float, float]] = []  # (sentence, asked at, answered at)
        self.lock = threading.Lock()
        super().__init__(self.answer)

    def answer(self, body: dict, items: dict) -> str:
        t = time.monotonic()
        (en,) = items.values()
        with self.lock:
            n = sum(1 for e, _, _ in self.log if e == en)
        if en == SLOW:
            time.sleep(1.0)
        with self.lock:
            self.log.append((en, t, time.monotonic()))
        return json.dumps({k: ANSWERS[en][min(n, len(ANSWERS[en]) - 1)] for k in items}, ensure_ascii=False)


def test_a_reask_does_not_wait_for_the_slowest_first_ask(tmp_path):
    srv = Endpoint()
    try:
        with ResultCache(tmp_path / "c.sqlite") as cache:
            tr = Translator(LLMClient(LLMConfig(base_url=srv.base_url, model="m", max_retries=0)), cache,
                            TranslateConfig(batch_size=1, concurrency=2), "m", objects=OBJECTS)
            res = tr.run([SLOW, BAD, GOOD], progress=False)
    finally:
        srv.close()
    assert res.translations == {SLOW: "左侧的储油罐。", BAD: "中间的汽车。", GOOD: "右侧的桥梁。"} and not res.failed
    assert [e for e, _, _ in srv.log].count(BAD) == 2 and len(srv.log) == 4  # only the bad answer asked again
    slow_done = next(done for e, _, done in srv.log if e == SLOW)
    reask = [asked for e, asked, _ in srv.log if e == BAD][1]
    assert reask < slow_done - 0.5  # asked again while the slow one was still out


PLAIN = {"a long runway": "一条长跑道。", "a beach": "一片海滩。", "many trees": "许多树。", "a river": "一条河流。",
         "a bridge": "一座桥。", "some houses": "一些房屋。", "a parking lot": "一个停车场。", "a pond": "一个池塘。"}


def test_a_short_batch_of_reasks_goes_out_once_the_last_asks_are_out(tmp_path):
    """--batch_size 4, --concurrency 4, 8 sentences: two first asks, one of them slow (1 s). The
    other's bad answer is asked again at once, alone, not after the slow one: a slot was free."""
    asked: list[tuple[list[str], float]] = []
    slow_done: list[float] = []

    def answer(body, items):
        asked.append((list(items.values()), time.monotonic()))
        if "a long runway" in items.values():
            time.sleep(1.0)
            slow_done.append(time.monotonic())
        first = sum(1 for batch, _ in asked if "a pond" in batch) == 1
        return json.dumps({k: "一个东西。" if en == "a pond" and first else PLAIN[en] for k, en in items.items()},
                          ensure_ascii=False)

    srv = ScriptedServer(answer)
    try:
        with ResultCache(tmp_path / "c.sqlite") as cache:
            client = LLMClient(LLMConfig(base_url=srv.base_url, model="m", max_retries=0))
            res = Translator(client, cache, TranslateConfig(batch_size=4, concurrency=4), "m").run(
                list(PLAIN), progress=False)
    finally:
        srv.close()
    assert res.translations == PLAIN and len(asked) == 3
    (reask,) = [t for batch, t in asked if batch == ["a pond"]]
    assert reask < slow_done[0] - 0.5


def test_a_request_waiting_to_be_retried_leaves_its_slot_to_the_others(tmp_path, fake_llm):
    """--concurrency 2: the first two requests get 429 with Retry-After: 1; while their retries
    wait, other sentences go out, two at a time at most (the client never has three out)."""
    srv = fake_llm(latency=0.05, counts={"rate_limit": 2}, retry_after=["1"])
    sentences = ["there are many cars on the road", "a river runs through the forest",
                 "some white houses are next to a lawn", "a long bridge is over the river",
                 "many trees are around the pond", "a red roof is beside the road"]
    with ResultCache(tmp_path / "c.sqlite") as cache:
        client = LLMClient(LLMConfig(base_url=srv.base_url, model="m", max_retries=2), in_flight=2)
        res = Translator(client, cache, TranslateConfig(batch_size=1, concurrency=2), "m").run(sentences,
                                                                                              progress=False)
    assert len(res.translations) == 6 and not res.failed
    assert srv.max_in_flight <= 2 and srv.requests == 8
    limited = {srv.log[0].items[0], srv.log[1].items[0]}
    assert srv.log[0].status == srv.log[1].status == 429
    assert {c.items[0] for c in srv.log[2:6]}.isdisjoint(limited)  # others meanwhile, not the retries
    assert {c.items[0] for c in srv.log[-2:]} == limited  # the retries, once their second was up


def test_replies_unusable_as_a_whole_do_not_use_up_a_sentences_rounds(tmp_path, fake_llm):
    """--rounds 2: two refusals say nothing about the sentence, so a third ask gets its answer; an
    endpoint that only refuses is given up after rounds + SPARE asks; answers that fail the checks
    still count: one that keeps an English word is asked rounds times."""
    from remoteglm.data.translate import SPARE

    for counts, asked, done in (({"refuse": 2}, 3, True), ({"refuse": 99}, 2 + SPARE, False),
                                ({"english": 99}, 2, False)):
        srv = fake_llm(counts=counts)
        with ResultCache(tmp_path / f"{len(srv.base_url)}-{asked}-{done}.sqlite") as cache:
            client = LLMClient(LLMConfig(base_url=srv.base_url, model="m", max_retries=0))
            res = Translator(client, cache, TranslateConfig(batch_size=1, concurrency=1, rounds=2), "m").run(
                ["a long runway"], progress=False)
        assert srv.sentence_requests["a long runway"] == asked, counts
        assert bool(res.translations) is done and bool(res.failed) is not done


def test_the_rule_built_tasks_are_made_while_the_expressions_are_translated(tmp_path, capsys, monkeypatch):
    """The detection importer: grounding_tasks runs in a thread of its own during the translation,
    which only waits on the endpoint (here 1 s per request), not after it."""
    from PIL import Image

    import remoteglm.data.grounding_records as gr
    from remoteglm.data.importers import main

    made, rule = [], gr.grounding_tasks
    monkeypatch.setattr(gr, "grounding_tasks", lambda a, names: made.append(
        (time.monotonic(), threading.current_thread() is threading.main_thread())) or rule(a, names))
    answered = []

    def answer(body, items):
        time.sleep(1.0)
        answered.append(time.monotonic())
        return json.dumps({k: ANSWERS[en][-1] for k, en in items.items()}, ensure_ascii=False)

    ann, images = tmp_path / "Annotations", tmp_path / "JPEGImages"
    ann.mkdir(), images.mkdir()
    for i, (en, (cat, _)) in enumerate(OBJECTS.items()):
        Image.new("RGB", (800, 800), (i, 0, 0)).save(images / f"{i}.png")
        (ann / f"{i}.xml").write_text(
            f"<annotation><filename>{i}.png</filename><size><width>800</width><height>800</height></size><object>"
            f"<name>{cat}</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>90</xmax><ymax>90</ymax></bndbox>"
            f"<description>{en}</description></object></annotation>")
    (tmp_path / "train.txt").write_text("0\n1\n2\n")
    srv = ScriptedServer(answer)
    try:
        rc = main(["detection", "--format", "voc", "--name", "r", "--annotations", str(ann), "--images", str(images),
                   "--out_dir", str(tmp_path / "out"), "--cache", str(tmp_path / "c.sqlite"), "--model", "m",
                   "--base_url", srv.base_url, "--no_progress"])
    finally:
        srv.close()
    assert rc == 0, capsys.readouterr().err
    assert len(made) == 3 and not any(main_thread for _, main_thread in made)
    assert max(t for t, _ in made) < min(answered)  # all made before the endpoint's first answer
