"""Instruction kinds from each image's five captions, every answer grounded in them.

Kinds (the ``task`` field of a fine-tune record)::

    caption       one sentence                     (build.py: one record per distinct sentence)
    description   the checked paragraph            (the rewrite step)
    classify      the scene class                  (build.py, instructions.CLASSIFY_PROMPT)
    presence      是/否 questions                   (here, no LLM call)
    count         how many, where a caption states a number (here, no LLM call)
    attribute     colour / shape / position, where a caption states it (here, no LLM call)
    conversation  2-4 turns built from the above, phrased by the LLM (here)

What a caption "says" is read from the English and checked in its translation:

* presence "是": a glossary term an English caption names (not after "no" / "without"), present in
  the Chinese; "否": a distinctive object (``faithful.OBJECT_CUES``) typical of another scene class
  (named in at least ``TYPICAL_SHARE`` of that class's train images), named in no train image of
  this image's class, and named by none of this image's captions, English (its stems) or Chinese
  (its forms). Each image gets as many 否 as 是 (at most ``PRESENCE_PER_IMAGE`` of each), so the
  set is balanced by construction.
* count: "two white airplanes", "3 buildings" - a number (not "several", not "two or three") at
  most two words before a term, the same number in the Chinese, and no caption stating another
  count ("a storage tank" against "two storage tanks": no question).
* attribute: the colour or shape words right before a term ("white airplanes", "round tanks"; all of
  a list: "orange and white roofs" is 白色和橙色, "green or brown fields" no question), said in the
  Chinese too, and no other colours for it elsewhere; a position word between two terms
  ("a storage tank on the lawn with containers beside") - the answer is that caption's translation.

Every question and answer passes ``grounding_problems`` against the image's own captions (no
refusal or chatter, no mood word, no object, noun, number, colour, shape or position that no
caption says, and no colour said of an object the captions give another colour (``colours.py``);
the 否 object is the one allowed exception, and only behind a negation) and ``fact_problems`` (the
answer keeps the fact it was built from: the polarity, the number bound to its caption, the
colours). A deterministic item that fails is dropped; an LLM reply that fails is asked again with the problems named, and after the last round the conversation is dropped (the
question keeps its template). Every count is reported (``TasksResult``).

The LLM is asked in numbered JSON like the translate step (same client, cache and resume): each
distinct template question once (``--phrase-questions``, optional) and one conversation per image.
Cached answers are re-checked on read when the checks change, like translations.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field

from tqdm import tqdm

from ..errors import RemoteGLMError
from . import colours, faithful
from .cache import ResultCache
from .glossary import CLASS_NAMES_ZH, GLOSSARY, _term_regex  # _term_regex: the glossary's own matcher
from .instructions import SENTENCE_PROMPTS
from .llm import LLMClient, LLMUnavailable, parallel
from .translate import ReplyError, parse_reply

KINDS = ("caption", "description", "classify", "presence", "count", "attribute", "conversation")
LEGACY = ("caption", "classify")  # what the fine-tune files hold without --tasks
MADE_HERE = ("presence", "count", "attribute", "conversation")
GROUPS = {"vqa": ("presence", "count", "attribute"), "cls": ("classify",), "conv": ("conversation",),
          "desc": ("description",), "all": KINDS}

PRESENCE_PER_IMAGE = 2  # 是 questions per image, and as many 否
COUNT_PER_IMAGE = 2
TYPICAL_SHARE = 0.2  # an object is typical of a class named in this share of its train images
YES, NO = "是", "否"

PRESENCE_Q = ("图中有{obj}吗？", "这张遥感图像里有{obj}吗？", "图像中能看到{obj}吗？", "这幅影像中是否有{obj}？")
COUNT_Q = ("图中有多少{obj}？", "图中{obj}的数量是多少？", "这张遥感图像里一共有多少{obj}？")
COLOUR_Q = ("图中的{obj}是什么颜色的？", "这张图像里的{obj}是什么颜色？")
SHAPE_Q = ("图中的{obj}是什么形状的？", "这张图像里的{obj}是什么形状？")
POSITION_Q = ("图中的{obj}在什么位置？", "{obj}位于图中的什么地方？", "图中的{obj}在哪里？")
TEMPLATES = {"yes": PRESENCE_Q, "no": PRESENCE_Q, "number": COUNT_Q, "colour": COLOUR_Q, "shape": SHAPE_Q,
             "position": POSITION_Q}
# What a question of each kind must still ask after the LLM phrased it.
ASKS = {"yes": ("吗", "是否", "有没有", "有无"), "no": ("吗", "是否", "有没有", "有无"), "number": ("多少", "几"),
        "colour": ("颜色", "什么色"), "shape": ("形状", "什么样"), "position": ("位置", "哪", "什么地方", "何处"),
        "describe": ()}
# Nouns a question about the image may use besides the generic ones (faithful.GENERIC_NOUNS).
QA_WORDS = ("图", "幅", "张", "图中", "话", "航拍", "卫星", "内容", "地物", "物体", "东西")

QUESTION_KIND, QUESTION_VERSION = "question", "question-v1"
CONVERSATION_KIND, CONVERSATION_VERSION = "conversation", "conversation-v1"


# -- options ---------------------------------------------------------------------------------

def parse_kinds(text: str) -> tuple[str, ...]:
    """``all`` or a comma list of kinds and groups (vqa, cls, conv, desc) -> kinds in KINDS order."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise RemoteGLMError(f"--tasks needs kinds, e.g. --tasks all or --tasks caption,vqa,conv (got {text!r})")
    chosen: set[str] = set()
    for n in names:
        if n in GROUPS:
            chosen.update(GROUPS[n])
        elif n in KINDS:
            chosen.add(n)
        else:
            raise RemoteGLMError(f"--tasks: unknown kind {n!r}; kinds: {', '.join(KINDS)}; groups: "
                                 + ", ".join(f"{g} = {'+'.join(k)}" for g, k in GROUPS.items() if g != "all") + ", all")
    return tuple(k for k in KINDS if k in chosen)


def parse_mix(text: str) -> dict[str, float]:
    """``caption=1,vqa=1,cls=0.5,conv=0.5`` -> {kind: weight} (groups spread over their kinds)."""
    weights: dict[str, float] = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        try:
            w = float(value)
        except ValueError:
            w = -1.0
        if not eq or not math.isfinite(w) or w < 0:
            raise RemoteGLMError(f"--mix: {part!r} is not KIND=WEIGHT with a weight >= 0 "
                                 "(e.g. --mix caption=1,vqa=1,cls=0.5,conv=0.5)")
        kinds = GROUPS.get(name) or ((name,) if name in KINDS else None)
        if kinds is None or name == "all":
            raise RemoteGLMError(f"--mix: unknown kind {name!r}; kinds: {', '.join(KINDS)}; groups: vqa, cls, conv, desc")
        for k in kinds:
            weights[k] = w
    if not weights:
        raise RemoteGLMError(f"--mix needs KIND=WEIGHT pairs, e.g. --mix caption=1,vqa=1,cls=0.5,conv=0.5 (got {text!r})")
    return weights


def mix_records(records: list[dict], weights: dict[str, float], seed: int) -> list[dict]:
    """The train records with each kind weighted: weight w keeps every record int(w) times and a
    seeded round(frac(w) * n) of them once more (0.5 = a seeded half, 2 = each twice, 0 = none).
    Kinds without a weight keep 1. Same records and seed -> the same file."""
    by_kind: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_kind.setdefault(r.get("task", "caption"), []).append(i)
    copies = [1] * len(records)
    for kind, idx in by_kind.items():
        w = weights.get(kind, 1.0)
        whole, frac = int(w), w - int(w)
        extra = set(random.Random(f"{seed}|mix|{kind}").sample(idx, round(frac * len(idx)))) if frac else set()
        for i in idx:
            copies[i] = whole + (i in extra)
    return [r for r, n in zip(records, copies) for _ in range(n)]


# -- what the captions say -------------------------------------------------------------------

def join_english(captions) -> str:
    """An image's English captions as one text (a stop between them: no negation reaches across)."""
    return " . ".join(captions)


@dataclass(frozen=True)
class Sources:
    """One image's captions: English, their checked translations, the scene class name."""

    en: tuple[str, ...]
    zh: tuple[str, ...]
    cls_zh: str = ""

    @property
    def english(self) -> str:
        return join_english(self.en)


@dataclass(frozen=True)
class Fact:
    """One thing the captions say, and the question that asks it.

    ``what``: yes / no / number / colour / shape / position / describe; ``obj`` the Chinese term;
    ``answer`` the short answer (是, 否, "2", 白色, 白色和橙色, or the caption that states a position);
    ``evidence`` the caption numbers (0-based) that state it (none for 否); ``group`` the index
    in faithful.ATTRIBUTES of a colour / shape / position (of a list's first)."""

    task: str
    what: str
    obj: str
    answer: str
    question: str
    evidence: tuple[int, ...] = ()
    group: int = -1


_WORD = re.compile(r"\d+|[a-z]+(?:-[a-z]+)*")
_NEGATED = re.compile(r"(?<![a-z])(?:no|not|without|nothing|none|never|free of|lack(?:s|ing)? of|devoid of|"
                      r"absence of)(?:\s+[a-z-]+){0,3}\s*$")
_APPROX = {"or", "to", "about", "around", "nearly", "almost", "over", "than", "least", "most", "approximately",
           "roughly", "some", "dozens", "hundreds"}
# Words between a number and its term that make it count something else ("two rows of trees").
_GAP_STOP = {"of", "and", "or", "with", "is", "are", "the", "a", "an", "to", "in", "on", "at", "by", "from", "for",
             "row", "rows", "line", "lines", "kind", "kinds", "type", "types", "side", "sides", "piece", "pieces",
             "part", "parts", "group", "groups", "column", "columns", "pair", "pairs", "set", "sets", "block",
             "blocks", "layer", "layers", "lane", "lanes", "patch", "patches", "strip", "strips", "cluster",
             "clusters", "section", "sections", "times", "same", "different", "other", "more", "less"}
_SINGLE = {"a", "an", "one", "single"}
_COLOUR_SHAPE = tuple(i for i, (kind, _, _) in enumerate(faithful.ATTRIBUTES) if kind in ("colour", "shape"))
_POSITION = tuple(i for i, (kind, _, _) in enumerate(faithful.ATTRIBUTES) if kind == "position")
_AT = re.compile(r"^\s*(?:[a-z-]+\s+){0,3}?(?:on|in|at)\s+(?:the\s+)?$")
# Words between two terms that start another clause: a position there is not the first term's.
_CLAUSE = {"while", "and", "with", "which", "that", "where", "when", "but", "or", "who", "whose", "as"}


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    term: str  # English glossary term
    zh: str
    negated: bool


@functools.lru_cache(maxsize=65536)
def mentions(english: str) -> tuple[Mention, ...]:
    """Glossary terms of an English caption, with where they are and whether a negation precedes."""
    low = english.lower()
    out = []
    for m in _term_regex().finditer(low):
        term = " ".join(m.group(1).split())
        out.append(Mention(m.start(), m.end(), term, GLOSSARY[term], bool(_NEGATED.search(low[: m.start()]))))
    return tuple(out)


def _says_zh(zh: str, term: str) -> bool:
    return any(f in zh for f in faithful.term_forms(term))


def names_object(src: Sources, obj: str) -> bool:
    """Whether any caption of the image names ``obj`` (English stems, Chinese forms, the class)."""
    if obj in faithful.OBJECT_CUES and not faithful.invented_objects(obj, src.english):
        return True
    if any(_says_zh(z, obj) for z in src.zh) or any(m.zh == obj for s in src.en for m in mentions(s)):
        return True
    return bool(src.cls_zh) and (obj in src.cls_zh or src.cls_zh in obj)


def english_names(english: str, obj: str) -> bool:
    """Whether English captions name a distinctive object (its stems) - for the class statistics."""
    return not faithful.invented_objects(obj, english)


def class_objects(images: list[tuple[str | None, str]]) -> dict[str, dict[str, float]]:
    """class -> {distinctive object any of its images may name: share of its images that name it
    as a glossary term}, from (class, English captions joined) of the train images.

    An object is in a class's dict when one English caption has any of its stems ("park" is in
    "parking lot": a 公园 is then not asked about there), and typical of it when the glossary
    term itself is in ``TYPICAL_SHARE`` of the images ("parking lot" does not make 公园 typical)."""
    per: dict[str, list[str]] = {}
    for cls, english in images:
        if cls:
            per.setdefault(cls, []).append(english)
    out = {}
    for cls, texts in per.items():
        named = [{m.zh for m in mentions(t) if not m.negated} for t in texts]
        out[cls] = {o: sum(o in n for n in named) / len(texts) for o in faithful.OBJECT_CUES
                    if any(english_names(t, o) for t in texts)}
    return out


@functools.lru_cache(maxsize=1)
def _object_names() -> frozenset[str]:
    """Distinctive objects that are names of their own (glossary terms, class names): 储油罐, not
    its part 油罐; 高尔夫球场 is asked, not 高尔夫."""
    names = set(GLOSSARY.values()) | {zh for d in CLASS_NAMES_ZH.values() for zh in d.values()}
    return frozenset(o for o in faithful.OBJECT_CUES if o in names)


def absent_candidates(src: Sources, cls: str | None, stats: dict[str, dict[str, float]]) -> list[str]:
    """Objects for 否: typical of another class, never named in this class, not named here."""
    if not cls or cls not in stats:
        return []
    own = stats[cls]
    typical = sorted({o for c, shares in stats.items() if c != cls for o, s in shares.items()
                      if s >= TYPICAL_SHARE and o in _object_names()})
    return [o for o in typical if o not in own and not names_object(src, o)]


def present_terms(src: Sources) -> dict[str, tuple[int, ...]]:
    """Chinese term -> the captions naming it (English, not negated, and its Chinese has it);
    a term some caption negates is left out."""
    said: dict[str, list[int]] = {}
    negated: set[str] = set()
    for i, en in enumerate(src.en):
        for m in mentions(en):
            if m.negated:
                negated.add(m.zh)
            elif _says_zh(src.zh[i], m.zh):
                said.setdefault(m.zh, []).append(i)
    return {zh: tuple(dict.fromkeys(ix)) for zh, ix in said.items() if zh not in negated}


def _before(low: str, m: Mention) -> list[str]:
    """The last words before a mention, up to the previous term (nearest last)."""
    return _WORD.findall(low[: m.start])[-4:]


def _counts(src: Sources) -> dict[str, dict[int, list[int]]]:
    """Chinese term -> {count stated: captions}; 1 for "a" / "one" right before it."""
    out: dict[str, dict[int, list[int]]] = {}
    for i, en in enumerate(src.en):
        low = en.lower()
        for m in mentions(en):
            if m.negated:
                continue
            words = _before(low, m)
            for k in range(3):  # the number right before the term, or one / two words before it
                if len(words) <= k:
                    break
                tok, gap = words[-1 - k], words[len(words) - k :]
                if any(g in _GAP_STOP or faithful.english_numbers(g)[0] for g in gap):
                    break
                if tok in _SINGLE:
                    out.setdefault(m.zh, {}).setdefault(1, []).append(i)
                    break
                required, _ = faithful.english_numbers(tok)
                if required:
                    prev = words[-2 - k] if len(words) > k + 1 else ""
                    n = next(iter(required)) if len(required) == 1 else 0
                    exact = faithful.chinese_numbers(src.zh[i])[0]
                    if n and prev not in _APPROX and not faithful.english_numbers(prev)[0] and n in exact:
                        out.setdefault(m.zh, {}).setdefault(n, []).append(i)
                    else:  # approximate, or the Chinese says it otherwise: no count, and no question
                        out.setdefault(m.zh, {}).setdefault(0, []).append(i)
                    break
    return out


def _lists(src: Sources):
    """(caption, mention, its attribute list, joined by "or") for each term an English caption
    names (not negated) with colour or shape words right before it."""
    for i, en in enumerate(src.en):
        low, prev = en.lower(), 0
        for m in mentions(en):
            words, alternative = colours.english_list(low[prev : m.start], _COLOUR_SHAPE, _GAP_STOP)
            prev = m.end
            if words and not m.negated:
                yield i, m, words, alternative


def _colours_shapes(src: Sources) -> dict[str, dict[tuple[int, ...] | int, list[int]]]:
    """Chinese term -> {the ATTRIBUTES indexes of the colours / shapes said right before it (all of
    a list, sorted), or -1 where they are no one answer: captions}."""
    out: dict[str, dict[tuple[int, ...] | int, list[int]]] = {}
    for i, m, words, alternative in _lists(src):
        groups = tuple(sorted(set().union(*words)))
        zh = {g for _, g in faithful.attributes_zh(src.zh[i])}
        # one colour per word ("blue-green": none to ask), no "or", and all said in the Chinese too
        # (else the translation put it otherwise: not a question)
        one = not alternative and all(len(w) == 1 for w in words) and set(groups) <= zh
        out.setdefault(m.zh, {}).setdefault(groups if one else -1, []).append(i)
    return out


@functools.lru_cache(maxsize=4096)
def _said_colours(src: Sources) -> frozenset[tuple[int, str]]:
    """(colour, Chinese term) for each colour the captions say of an object: before the term in
    the English (each of a list) or tied to it in a translation (``colours.tied``)."""
    english = {(g, m.zh) for _, m, words, _ in _lists(src) for w in words for g in w if g in colours.COLOUR}
    return colours.tied(src.zh) | english


def _positions(src: Sources) -> list[tuple[str, int, int]]:
    """(Chinese term, caption, ATTRIBUTES index or -1 for 在) for "A <position> B" in a caption."""
    out = []
    for i, en in enumerate(src.en):
        low, zh = en.lower(), src.zh[i]
        ms = [m for m in mentions(en) if not m.negated]
        for a, b in itertools.pairwise(ms):
            if a.zh == b.zh or a.zh.endswith("区") or not (_says_zh(zh, a.zh) and _says_zh(zh, b.zh)):
                continue
            middle = low[a.end : b.start]
            words = _WORD.findall(middle)
            if len(words) > 5 or _CLAUSE & set(words) or "," in middle:
                continue
            said = {g for _, g in faithful.attributes_zh(zh)}
            groups = [g for g in sorted(faithful.attributes_en(middle)) if g in _POSITION and g in said]
            if groups:
                out.append((a.zh, i, groups[0]))
            elif _AT.match(middle) and "在" in zh:
                out.append((a.zh, i, -1))
    return out


def _pick(pool, seed: int, *key):
    return random.Random("|".join(map(str, (seed, *key)))).choice(pool)


def _sample(pool: list, k: int, seed: int, *key) -> list:
    return random.Random("|".join(map(str, (seed, *key)))).sample(pool, min(k, len(pool)))


def image_facts(src: Sources, cls: str | None, stats: dict[str, dict[str, float]], seed: int, key: str) -> list[Fact]:
    """The presence, count and attribute facts of one image (seeded, no LLM)."""
    facts: list[Fact] = []

    def q(what, obj):
        return _pick(TEMPLATES[what], seed, key, what, obj).format(obj=obj)

    present = present_terms(src)
    absent = absent_candidates(src, cls, stats)
    k = min(PRESENCE_PER_IMAGE, len(present), len(absent))
    for obj in _sample(sorted(present), k, seed, key, "yes"):
        facts.append(Fact("presence", "yes", obj, YES, q("yes", obj), present[obj]))
    for obj in _sample(absent, k, seed, key, "no"):
        facts.append(Fact("presence", "no", obj, NO, q("no", obj)))

    counts = {obj: c for obj, c in _counts(src).items() if len(c) == 1 and next(iter(c)) >= 2}
    for obj in _sample(sorted(counts), COUNT_PER_IMAGE, seed, key, "count"):
        (n, ix), = counts[obj].items()
        facts.append(Fact("count", "number", obj, str(n), q("number", obj), tuple(dict.fromkeys(ix))))

    looks = {obj: c for obj, c in _colours_shapes(src).items() if len(c) == 1 and next(iter(c)) != -1}
    if looks:
        obj = _pick(sorted(looks), seed, key, "look")
        (groups, ix), = looks[obj].items()
        what = faithful.ATTRIBUTES[groups[0]][0]
        names = [faithful.ATTRIBUTES[g][1][0] for g in groups]
        answer = "和".join(filter(None, ("、".join(names[:-1]), names[-1])))  # 白色、红色和蓝色
        facts.append(Fact("attribute", what, obj, answer, q(what, obj), tuple(dict.fromkeys(ix)), groups[0]))
    places = _positions(src)
    if places:
        obj, i, g = _pick(places, seed, key, "where")
        facts.append(Fact("attribute", "position", obj, src.zh[i], q("position", obj), (i,), g))
    return facts


# -- the grounding check ---------------------------------------------------------------------

_ENGLISH = re.compile(r"[A-Za-z]{2,}")
_POLARITY = re.compile(r"^\s*(?:是的|是|对|有的|否|不是|没有|不对)\s*[，,。！!]?\s*")
_NEGATION = re.compile(r"否|没有|不是|并无|未见|看不到|不存在|无")
_NUMBER_ONLY = re.compile(r"\s*\d+\s*[。.]?\s*")  # a count's answer: "2"


def grounding_problems(text: str, src: Sources, allow: tuple[str, ...] = (), question: bool = False) -> list[str]:
    """What ``text`` (a question or an answer about the image) says that its captions do not.

    No English, no refusal / chatter / talk about the task (a question may ask), no mood or
    judgement word, and no object, noun, number, colour, shape or position that no caption says;
    ``allow`` holds what the question itself is about (the object of a 否 question).
    """
    if not faithful.cjk_len(text) and not _NUMBER_ONLY.fullmatch(text):
        return ["没有中文"]
    zh = list(src.zh)
    problems = []
    if _ENGLISH.search(text):
        problems.append("含有英文")
    meta = [p for kind, p in faithful.meta_text(_POLARITY.sub("", text, count=1), zh)
            if not (question and kind == "question")]
    if meta:
        problems.append(f"含有道歉、拒绝、客套话或对任务的说明（{'、'.join(meta)}）")
    mood = faithful.invented_mood(text, zh)
    if mood:
        problems.append(f"加入了描述没有的感受或评价：{'、'.join(mood)}")
    objects = [o for o in faithful.invented_objects(text, src.english) if not any(o in a or a in o for a in allow)
               and not any(o in z for z in zh)]
    looks = [form for form, _ in faithful.attributes_zh(text)]  # colours etc.: checked below, not as nouns
    nouns = faithful.invented_nouns(text, zh + [src.cls_zh, *allow, *QA_WORDS], skip=mood + objects + looks)
    if objects or nouns:
        problems.append(f"描述没有提到：{'、'.join(dict.fromkeys(objects + nouns))}")
    numbers = faithful.invented_numbers(text, zh)
    if numbers:
        problems.append(f"描述没有这些数量：{'、'.join(map(str, numbers))}")
    attrs = faithful.invented_attributes(text, zh + list(allow), src.english)
    if attrs:
        problems.append(f"描述没有这些颜色、形状或位置：{'、'.join(attrs)}")
    moved = [f"{obj}是{c}" for c, obj in colours.misplaced(text, _said_colours(src) | colours.tied(allow))
             if c not in attrs]
    if moved:
        problems.append(f"描述没有说{'、'.join(moved)}的")
    return problems


def _numbers(text: str) -> set[int]:
    exact, approx, _ = faithful.chinese_numbers(text, places=False)
    return exact | approx


def fact_problems(fact: Fact, question: str, answer: str, src: Sources) -> list[str]:
    """Whether a question and its answer still ask and say ``fact`` (both grounded besides)."""
    allow = (fact.obj,) if fact.what == "no" else ()
    # question and answer may re-use the words of their templates ("树是" is jieba's cut of
    # 树 + 是什么颜色, "海是" of 海 + 是蓝色的)
    template = tuple(t.replace(fact.obj, "、") if fact.obj else t for t in (fact.question, _turn_answer(fact)))
    problems = [f"问题：{p}" for p in grounding_problems(question, src, allow + template, question=True)]
    problems += [f"回答：{p}" for p in grounding_problems(answer, src, allow + template)]
    if not question.rstrip().endswith(("？", "?")) and fact.what != "describe":
        problems.append("问题要以“？”结尾")
    if fact.what != "describe" and not any(w in question for w in ASKS[fact.what]):
        problems.append(f"问题没有问原来的内容（{'/'.join(ASKS[fact.what])}）")
    both = question + answer
    if fact.obj and not _says_zh(both, fact.obj):
        problems.append(f"没有提到{fact.obj}")
    if fact.what == "no" and names_object(src, fact.obj):
        problems.append(f"描述提到了{fact.obj}，不能回答“否”")
    if fact.what == "no" and not _NEGATION.search(answer):
        problems.append("回答应为否定（否）")
    if fact.what == "yes" and _NEGATION.search(answer):
        problems.append("回答应为肯定（是）")
    evidence = [src.zh[i] for i in fact.evidence]
    allowed = set().union(*(set().union(*faithful.chinese_numbers(z)[:2]) for z in evidence)) if evidence else set()
    if fact.what == "number" and int(fact.answer) not in faithful.chinese_numbers(answer)[0]:
        problems.append(f"回答的数量应为{fact.answer}")
    wrong = sorted(_numbers(both) - allowed)
    if wrong:
        problems.append(f"数量与描述不符：{'、'.join(map(str, wrong))}")
    if fact.what in ("colour", "shape"):
        need = {g for _, g in faithful.attributes_zh(fact.answer)}
        # every colour (shape) of the fact; and no other colour left untied or tied to its object
        other = {i for _, i, _, terms in colours.colour_objects(answer)
                 if not terms or fact.obj in terms} - need if fact.what == "colour" else set()
        if not need <= {g for _, g in faithful.attributes_zh(answer)} or other:
            problems.append(f"回答应为{fact.answer}")
    if fact.what == "position" and not ({g for _, g in faithful.attributes_zh(answer)} & set(_POSITION)
                                        or "在" in answer):
        problems.append("回答没有说位置")
    if fact.what in ("describe", "position"):  # the caption itself, maybe re-worded: all of it kept
        lost = faithful.coverage_problems(answer, evidence)
        if lost:
            problems.append("回答漏掉了描述的内容：" + "、".join(w for _, what in lost for w in what))
    return problems


# -- questions the LLM phrases ------------------------------------------------------------------

QUESTION_PROMPT = """你负责改写关于遥感图像的提问，让问法自然、多样。
要求：
1. 把每个编号的问题改写成一个意思完全相同的中文问题，以“？”结尾。
2. 保留问题里的物体名称；不得加入别的物体、颜色、形状、数量、位置或评价。
3. 只写问题本身：不回答，不解释，不加称呼。
4. 只输出一个 JSON 对象，键与输入相同，不要输出别的内容。"""

CONVERSATION_PROMPT = """你负责把关于同一张遥感图像的几组问答改写成一段自然、连贯的多轮对话。
要求：
1. 轮数和顺序不变：奇数编号是提问，其后的偶数编号是它的回答。
2. 只能使用给出的问答和图像描述里的信息：不得添加没有提到的物体、颜色、形状、数量、位置，也不要加入感受或评价。
3. 回答的事实不变：是或否、数量、颜色、形状和位置都与原来的回答一致。
4. 不要道歉，不要解释，不要提到“描述”“句子”或这些要求。
5. 只输出一个 JSON 对象，键与输入相同，不要输出别的内容。"""


def _clean(text: str, question: bool) -> str:
    text = re.sub(r"^\s*(?:问|答|Q|A)\s*[：:]\s*", "", str(text).strip().strip('"“”'))
    text = re.sub(r"([。！？?])[\s。.]+$", r"\1", text)  # "…？。" / "…。。" -> one stop
    if question:
        text = re.sub(r"[?？]$", "？", text)
    return text.strip()


def question_key(fact: Fact) -> str:
    return json.dumps([fact.what, fact.obj, fact.question], ensure_ascii=False)


def check_question(key: str, phrased: str) -> list[str]:
    """A phrased question against its template: the same object and kind of question, nothing added."""
    what, obj, template = json.loads(key)
    src = Sources((), (template,), "")
    problems = grounding_problems(phrased, src, allow=(obj,), question=True)
    if not phrased.endswith("？"):
        problems.append("问题要以“？”结尾")
    if not any(w in phrased for w in ASKS[what]):
        problems.append(f"问题没有问原来的内容（{'/'.join(ASKS[what])}）")
    if not _says_zh(phrased, obj):
        problems.append(f"没有提到{obj}")
    return problems


@functools.lru_cache(maxsize=1)
def question_validator() -> str:
    return faithful.validator_version(check_question, grounding_problems)


def _question_still_valid(key: str, phrased: str, status: str) -> bool:
    return status == "fallback" and phrased == json.loads(key)[2] or not check_question(key, phrased)


# -- conversations -------------------------------------------------------------------------------

def _turn_answer(f: Fact) -> str:
    """The answer of a turn in the draft conversation: a sentence, from the fact alone."""
    if f.what == "yes":
        return f"是，图中有{f.obj}。"
    if f.what == "no":
        return f"否，图中没有{f.obj}。"
    if f.what == "number":
        return f"图中{f.obj}的数量是{f.answer}。"
    if f.what in ("colour", "shape"):
        return f"{f.obj}是{f.answer}的。"
    return f.answer  # describe, position: the caption itself


def draft_conversation(src: Sources, facts: list[Fact], seed: int, key: str) -> list[Fact]:
    """2-4 facts in the order of the conversation: a description first, then some of the
    image's questions; [] when the image has fewer than one question to follow it."""
    if not facts:
        return []
    distinct = list(dict.fromkeys(src.zh))
    i = src.zh.index(_pick(distinct, seed, key, "conv-describe"))
    describe = Fact("conversation", "describe", "", src.zh[i], _pick(SENTENCE_PROMPTS, seed, key, "conv-q"), (i,))
    rng = random.Random(f"{seed}|{key}|conv")
    n = rng.randint(1, min(3, len(facts)))
    return [describe] + rng.sample(facts, n)


def conversation_key(src: Sources, turns: list[Fact]) -> str:
    """The cache key: everything the checks need (captions and the facts of the draft)."""
    return json.dumps({"en": src.en, "zh": src.zh, "cls": src.cls_zh, "facts": [asdict(f) for f in turns]},
                      ensure_ascii=False, sort_keys=True)


def _from_key(key: str) -> tuple[Sources, list[Fact]]:
    d = json.loads(key)
    facts = [Fact(**{**f, "evidence": tuple(f["evidence"])}) for f in d["facts"]]
    return Sources(tuple(d["en"]), tuple(d["zh"]), d["cls"]), facts


def conversation_messages(src: Sources, turns: list[Fact], problems: list[str] | None = None) -> list[dict]:
    items = {}
    for k, f in enumerate(turns):
        items[str(2 * k + 1)] = f.question
        items[str(2 * k + 2)] = _turn_answer(f)
    user = "对话：\n" + json.dumps(items, ensure_ascii=False) + "\n图像的描述（只能使用这些信息）：\n" + "\n".join(
        dict.fromkeys(src.zh))
    if problems:
        user = f"上一次的对话有问题（{'；'.join(problems[:6])}），请重新改写。\n" + user
    return [{"role": "system", "content": CONVERSATION_PROMPT}, {"role": "user", "content": user}]


def check_conversation(src: Sources, turns: list[Fact], items: list[str | None]) -> list[str]:
    """Problems of a phrased conversation: every turn grounded and keeping its fact."""
    if len(items) != 2 * len(turns):
        return [f"应有 {2 * len(turns)} 项"]
    problems = []
    for k, f in enumerate(turns):
        q, a = items[2 * k], items[2 * k + 1]
        if not q or not a:
            problems.append(f"缺少第{2 * k + 1 if not q else 2 * k + 2}项")
            continue
        problems += [f"第{2 * k + 1}、{2 * k + 2}项的{p}" for p in fact_problems(f, q, a, src)]
    return problems


def parse_conversation(reply: str, turns: list[Fact]) -> list[str | None]:
    items = parse_reply(reply, 2 * len(turns))
    return [None if x is None else _clean(x, question=(i % 2 == 0)) for i, x in enumerate(items)]


@functools.lru_cache(maxsize=1)
def conversation_validator() -> str:
    return faithful.validator_version(check_conversation, fact_problems, grounding_problems, _conversation_still_valid)


def _conversation_still_valid(key: str, result: str, status: str) -> bool:
    if status == "dropped":  # every reply was read and failed the checks of its time: not asked again;
        return bool(json.loads(result))  # a drop that recorded no problems (older versions) is asked again
    src, turns = _from_key(key)
    return not check_conversation(src, turns, json.loads(result))


# -- the step --------------------------------------------------------------------------------

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
                                      _question_still_valid)
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
                    text = _clean(out, question=True) if out is not None else ""
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
                                      conversation_validator(), _conversation_still_valid)
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
