"""The instruction step: presence, count, attribute and conversation items for each image whose
captions are translated, every answer grounded in its own captions.

The facts come from the captions with no LLM call (``facts.py``); every deterministic item must
pass ``fact_problems`` (``grounding.py``) or it is dropped. The LLM, through the translate step's
client, cache and resume, phrases the questions (``--phrase_questions``, optional) and one
conversation per image (``phrasing.py``); a reply that fails the checks is asked again with the
problems named, and after the last round the conversation is dropped (the question keeps its
template). Every count is reported (``TasksResult``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from .cache import ResultCache
from .facts import Fact, Sources, class_objects, image_facts
from .grounding import fact_problems
from .kinds import KINDS
from .llm import LLMClient, LLMUnavailable, parallel
from .phrasing import (
    CONVERSATION_KIND,
    CONVERSATION_VERSION,
    QUESTION_KIND,
    QUESTION_PROMPT,
    QUESTION_VERSION,
    check_conversation,
    check_question,
    clean_reply,
    conversation_key,
    conversation_messages,
    conversation_still_valid,
    conversation_validator,
    draft_conversation,
    parse_conversation,
    question_key,
    question_still_valid,
    question_validator,
)
from .translate import ReplyError, parse_reply


@dataclass
class TaskConfig:
    kinds: tuple[str, ...] = KINDS
    seed: int = 42
    concurrency: int = 8
    batch_size: int = 20  # questions per phrasing request
    rounds: int = 3
    phrase_questions: bool = False


@dataclass
class TaskImage:
    key: str  # file name
    src: Sources
    cls: str | None
    train: bool


@dataclass
class TasksResult:
    instructions: dict[str, list[dict]] = field(default_factory=dict)  # image -> its items (dataset JSON)
    made: Counter = field(default_factory=Counter)  # kind -> items made
    dropped: Counter = field(default_factory=Counter)  # kind -> items dropped by the checks
    rejected: Counter = field(default_factory=Counter)  # kind -> LLM replies that failed the checks
    answers: Counter = field(default_factory=Counter)  # 是 / 否 of the presence items
    cached: Counter = field(default_factory=Counter)  # "question" / "conversation" answers from the cache
    new: Counter = field(default_factory=Counter)  # ... accepted this run
    fallbacks: int = 0  # phrased questions that kept their template
    failed: dict[str, str] = field(default_factory=dict)  # image -> why its conversation is missing (endpoint
    # error, or replies that could not be read: a rerun asks again)
    unphrased: dict[str, str] = field(default_factory=dict)  # question key -> why (unreadable replies; asked again)
    examples: list[str] = field(default_factory=list)  # a few reasons a reply was rejected
    aborted: str = ""
    aborted_kind: str = ""
    calls: int = 0  # HTTP requests the step sent (set by the pipeline)

    def _abort(self, e) -> None:
        if not self.aborted:
            self.aborted, self.aborted_kind = str(e), getattr(e, "kind", "")

    def _example(self, why: str) -> None:
        if len(self.examples) < 5 and why not in self.examples:
            self.examples.append(why)


class TaskMaker:
    """Instruction items for images whose captions are translated; LLM through ``client``, cache-first."""

    def __init__(self, client: LLMClient | None, cache: ResultCache, cfg: TaskConfig, model: str):
        self.client, self.cache, self.cfg, self.model = client, cache, cfg, model

    def facts(self, images: list[TaskImage], population: list[tuple[str | None, str]] | None = None
              ) -> dict[str, list[Fact]]:
        """Each image's facts; class statistics from ``population`` ((class, English) of the train
        images), else from the train images given, else from all of them."""
        stats = class_objects(population or [(im.cls, im.src.english) for im in images if im.train]
                              or [(im.cls, im.src.english) for im in images])
        kinds = set(self.cfg.kinds)
        out = {}
        for im in images:
            facts = image_facts(im.src, im.cls, stats, self.cfg.seed, im.key)
            out[im.key] = [f for f in facts if f.task in kinds or "conversation" in kinds]
        return out

    # -- questions
    def _phrase(self, facts: list[Fact], res: TasksResult, progress: bool) -> dict[str, str]:
        keys = list(dict.fromkeys(question_key(f) for f in facts))
        hits = self.cache.get_checked(QUESTION_KIND, self.model, QUESTION_VERSION, keys, question_validator(),
                                      question_still_valid)
        phrased = {k: v for k, (v, _) in hits.items()}
        res.cached["question"] += len(hits)
        todo = [k for k in keys if k not in hits]
        problems: dict[str, str] = {}
        bar = tqdm(total=len(todo), unit="q", desc="questions", disable=not progress or not todo, dynamic_ncols=True,
                   mininterval=1.0)
        size = self.cfg.batch_size
        judged: set[str] = set()  # keys whose phrasing was read and failed the checks at least once
        for rnd in range(self.cfg.rounds):
            if not todo or res.aborted:
                break
            jobs = [todo[i : i + size] for i in range(0, len(todo), size)]
            failed: dict[str, str] = {}

            def ask(batch, problems=problems):
                if res.aborted:
                    return {}, {}, None, False
                items = {str(i + 1): json.loads(k)[2] for i, k in enumerate(batch)}
                notes = "; ".join(f"{i + 1}: {problems[k]}" for i, k in enumerate(batch) if k in problems)
                user = "改写这些问题。" + (f"上一次的回答有问题，请改正：{notes}。" if notes else "") + "\n" + json.dumps(
                    items, ensure_ascii=False)
                try:
                    reply = self.client.chat([{"role": "system", "content": QUESTION_PROMPT},
                                              {"role": "user", "content": user}])
                except LLMUnavailable as e:
                    return {}, {}, e, False
                try:
                    outs = parse_reply(reply, len(batch))
                except ReplyError as e:
                    return {}, {k: str(e) for k in batch}, None, True
                ok, bad = {}, {}
                for k, out in zip(batch, outs):
                    text = clean_reply(out, question=True) if out is not None else ""
                    why = check_question(k, text) if text else ["回答里缺少这一项"]
                    if why:
                        bad[k] = "；".join(why)
                    else:
                        ok[k] = text
                self.cache.put_many(QUESTION_KIND, self.model, QUESTION_VERSION, ok, validator=question_validator())
                return ok, bad, None, False

            def done(batch, result, failed=failed):
                ok, bad, err, unreadable = result
                phrased.update(ok)
                res.new["question"] += len(ok)
                if not unreadable:
                    judged.update(bad)
                for k, why in bad.items():
                    failed[k] = why
                    res.rejected[_TASK_OF[json.loads(k)[0]]] += 1
                    res._example(why)
                if err is not None:
                    res._abort(err)
                bar.update(len(ok))

            parallel(ask, jobs, self.cfg.concurrency, done)
            problems = failed
            todo = [k for k in todo if k in failed]
            size = max(1, size // 2)
        bar.close()
        if todo and not res.aborted:  # failed every round: the template stays, and is not asked again -
            # unless no reply could be read: a working endpoint may phrase it, so it is unfinished work
            keep = {k: json.loads(k)[2] for k in todo if k in judged}
            self.cache.put_many(QUESTION_KIND, self.model, QUESTION_VERSION, keep, status="fallback",
                                validator=question_validator())
            phrased.update(keep)
            res.fallbacks += len(keep)
            res.unphrased.update({k: problems[k] for k in todo if k not in judged})
        return phrased

    # -- conversations
    def _converse(self, src: Sources, turns: list[Fact]) -> tuple[list[str] | None, str, int, object]:
        """(items or None, status ok|dropped|unread|failed, rejected replies, last problem or error).

        Dropped (cached, with its problems) when a reply was read and failed the checks; when no reply
        could be read the endpoint is at fault, not the draft: the conversation stays unfinished."""
        problems: list[str] = []
        rejected, judged = 0, False
        key = conversation_key(src, turns)
        for _ in range(self.cfg.rounds):
            try:
                reply = self.client.chat(conversation_messages(src, turns, problems))
            except LLMUnavailable as e:
                return None, "failed", rejected, e
            try:
                items = parse_conversation(reply, turns)
                problems, judged = check_conversation(src, turns, items), True
            except ReplyError as e:
                items, problems = None, [str(e)]
            if not problems:
                self.cache.put_many(CONVERSATION_KIND, self.model, CONVERSATION_VERSION,
                                    {key: json.dumps(items, ensure_ascii=False)}, validator=conversation_validator())
                return items, "ok", rejected, ""
            rejected += 1
        if not judged:
            return None, "unread", rejected, "；".join(problems)
        self.cache.put_many(CONVERSATION_KIND, self.model, CONVERSATION_VERSION,
                            {key: json.dumps(problems, ensure_ascii=False)}, status="dropped",
                            validator=conversation_validator())
        return None, "dropped", rejected, "；".join(problems)

    def run(self, images: list[TaskImage], progress: bool = True,
            population: list[tuple[str | None, str]] | None = None) -> TasksResult:
        res = TasksResult()
        kinds = set(self.cfg.kinds)
        facts = self.facts(images, population)
        src_of = {im.key: im.src for im in images}
        # deterministic items: checked, then (optionally) with the LLM's phrasing of their question
        keep: dict[str, list[Fact]] = {}
        for key, fs in facts.items():
            keep[key] = []
            for f in fs:
                if fact_problems(f, f.question, f.answer, src_of[key]):
                    res.dropped[f.task] += 1
                else:
                    keep[key].append(f)
        asked = [f for fs in keep.values() for f in fs if f.task in kinds]
        phrased = self._phrase(asked, res, progress) if self.cfg.phrase_questions and asked else {}
        for key, fs in keep.items():
            items = []
            for f in fs:
                if f.task not in kinds:
                    continue
                q = phrased.get(question_key(f), f.question)
                if q != f.question and fact_problems(f, q, f.answer, src_of[key]):
                    q = f.question
                items.append({"task": f.task, "question": q, "answer": f.answer, "evidence": list(f.evidence)})
                res.made[f.task] += 1
                if f.task == "presence":
                    res.answers[f.answer] += 1
            res.instructions[key] = items
        if "conversation" in kinds and not res.aborted:
            self._conversations(images, keep, res, progress)
        return res

    def _conversations(self, images: list[TaskImage], keep: dict[str, list[Fact]], res: TasksResult,
                       progress: bool) -> None:
        drafts = {im.key: draft_conversation(im.src, keep[im.key], self.cfg.seed, im.key) for im in images}
        drafts = {k: t for k, t in drafts.items() if len(t) >= 2}
        src_of = {im.key: im.src for im in images}
        keys = {k: conversation_key(src_of[k], t) for k, t in drafts.items()}
        hits = self.cache.get_checked(CONVERSATION_KIND, self.model, CONVERSATION_VERSION, list(keys.values()),
                                      conversation_validator(), conversation_still_valid)
        res.cached["conversation"] += len(hits)

        def add(key: str, items: list[str] | None):
            if items:
                turns = [[items[i], items[i + 1]] for i in range(0, len(items), 2)]
                res.instructions.setdefault(key, []).append({"task": "conversation", "turns": turns})
                res.made["conversation"] += 1
            else:
                res.dropped["conversation"] += 1

        todo = []
        for key in drafts:
            hit = hits.get(keys[key])
            if hit is None:
                todo.append(key)
            else:
                add(key, json.loads(hit[0]) if hit[1] == "ok" else None)
        bar = tqdm(total=len(todo), unit="img", desc="conversations", disable=not progress or not todo,
                   dynamic_ncols=True, mininterval=1.0)

        def one(key):
            if res.aborted:
                return None, "failed", 0, res.aborted
            return self._converse(src_of[key], drafts[key])

        def done(key, out):
            items, status, rejected, why = out
            res.rejected["conversation"] += rejected
            if status in ("failed", "unread"):
                res.failed[key] = str(why)
                if status == "failed":
                    res._abort(why)
                else:
                    res._example(str(why))
            else:
                add(key, items)
                res.new["conversation"] += status == "ok"
                if status == "dropped":
                    res._example(str(why))
            bar.update(1)

        parallel(one, todo, self.cfg.concurrency, done)
        bar.close()


_TASK_OF = {"yes": "presence", "no": "presence", "number": "count", "colour": "attribute", "shape": "attribute",
            "position": "attribute"}


def estimate_calls(images: int, kinds: tuple[str, ...], phrase_questions: bool, batch_size: int) -> dict[str, int]:
    """Rough LLM calls of this step before anything is cached: one per conversation, and the
    distinct questions (at most 6 per image, far fewer distinct) in batches."""
    out = {}
    if "conversation" in kinds:
        out["conversation_calls"] = images
    if phrase_questions and set(kinds) & {"presence", "count", "attribute"}:
        out["question_calls"] = -(-min(images * 6, 4000) // batch_size)
    return out
