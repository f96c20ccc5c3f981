"""What an image's captions say: the facts its instruction items ask, read from the English and
checked in the translation (seeded, no LLM).

* presence "是": a glossary term an English caption names (not after "no" / "without"), present in
  the Chinese; "否": a distinctive object (``faithful_words.OBJECT_CUES``) typical of another scene
  class (named in at least ``TYPICAL_SHARE`` of that class's train images), named in no train image
  of this image's class, and named by none of this image's captions, English (its stems) or
  Chinese (its forms). Each image gets as many 否 as 是 (at most ``PRESENCE_PER_IMAGE`` of each),
  so the set is balanced by construction.
* count: "two white airplanes", "3 buildings" - a number (not "several", not "two or three") at
  most two words before a term, the same number in the Chinese, and no caption stating another
  count ("a storage tank" against "two storage tanks": no question).
* attribute: the colour or shape words right before a term ("white airplanes", "round tanks"; all of
  a list: "orange and white roofs" is 白色和橙色, "green or brown fields" no question), said in the
  Chinese too, and no other colours for it elsewhere; a position word between two terms
  ("a storage tank on the lawn with containers beside") - the answer is that caption's translation.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from dataclasses import dataclass

from . import colours, faithful
from .faithful_words import ATTRIBUTES, OBJECT_CUES
from .glossary import CLASS_NAMES_ZH, GLOSSARY, _term_regex  # _term_regex: the glossary's own matcher
from .instructions import pick
from .numerals import chinese_numbers, english_numbers

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
    in faithful_words.ATTRIBUTES of a colour / shape / position (of a list's first)."""

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
_COLOUR_SHAPE = tuple(i for i, (kind, _, _) in enumerate(ATTRIBUTES) if kind in ("colour", "shape"))
# The ATTRIBUTES indexes of positions (a Fact's ``group`` of a position question).
POSITION_GROUPS = tuple(i for i, (kind, _, _) in enumerate(ATTRIBUTES) if kind == "position")
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


def says_zh(zh: str, term: str) -> bool:
    """Whether Chinese text has a glossary term in one of its forms (路 for 道路)."""
    return any(f in zh for f in faithful.term_forms(term))


def names_object(src: Sources, obj: str) -> bool:
    """Whether any caption of the image names ``obj`` (English stems, Chinese forms, the class)."""
    if obj in OBJECT_CUES and not faithful.invented_objects(obj, src.english):
        return True
    if any(says_zh(z, obj) for z in src.zh) or any(m.zh == obj for s in src.en for m in mentions(s)):
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
        out[cls] = {o: sum(o in n for n in named) / len(texts) for o in OBJECT_CUES
                    if any(english_names(t, o) for t in texts)}
    return out


@functools.lru_cache(maxsize=1)
def _object_names() -> frozenset[str]:
    """Distinctive objects that are names of their own (glossary terms, class names): 储油罐, not
    its part 油罐; 高尔夫球场 is asked, not 高尔夫."""
    names = set(GLOSSARY.values()) | {zh for d in CLASS_NAMES_ZH.values() for zh in d.values()}
    return frozenset(o for o in OBJECT_CUES if o in names)


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
            elif says_zh(src.zh[i], m.zh):
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
                if any(g in _GAP_STOP or english_numbers(g)[0] for g in gap):
                    break
                if tok in _SINGLE:
                    out.setdefault(m.zh, {}).setdefault(1, []).append(i)
                    break
                required, _ = english_numbers(tok)
                if required:
                    prev = words[-2 - k] if len(words) > k + 1 else ""
                    n = next(iter(required)) if len(required) == 1 else 0
                    exact = chinese_numbers(src.zh[i])[0]
                    if n and prev not in _APPROX and not english_numbers(prev)[0] and n in exact:
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
def said_colours(src: Sources) -> frozenset[tuple[int, str]]:
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
            if a.zh == b.zh or a.zh.endswith("区") or not (says_zh(zh, a.zh) and says_zh(zh, b.zh)):
                continue
            middle = low[a.end : b.start]
            words = _WORD.findall(middle)
            if len(words) > 5 or _CLAUSE & set(words) or "," in middle:
                continue
            said = {g for _, g in faithful.attributes_zh(zh)}
            groups = [g for g in sorted(faithful.attributes_en(middle)) if g in POSITION_GROUPS and g in said]
            if groups:
                out.append((a.zh, i, groups[0]))
            elif _AT.match(middle) and "在" in zh:
                out.append((a.zh, i, -1))
    return out


def _sample(pool: list, k: int, seed: int, *key) -> list:
    return random.Random("|".join(map(str, (seed, *key)))).sample(pool, min(k, len(pool)))


def image_facts(src: Sources, cls: str | None, stats: dict[str, dict[str, float]], seed: int, key: str) -> list[Fact]:
    """The presence, count and attribute facts of one image (seeded, no LLM)."""
    facts: list[Fact] = []

    def q(what, obj):
        return pick(TEMPLATES[what], seed, key, what, obj).format(obj=obj)

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
        obj = pick(sorted(looks), seed, key, "look")
        (groups, ix), = looks[obj].items()
        what = ATTRIBUTES[groups[0]][0]
        names = [ATTRIBUTES[g][1][0] for g in groups]
        answer = "和".join(filter(None, ("、".join(names[:-1]), names[-1])))  # 白色、红色和蓝色
        facts.append(Fact("attribute", what, obj, answer, q(what, obj), tuple(dict.fromkeys(ix)), groups[0]))
    places = _positions(src)
    if places:
        obj, i, g = pick(places, seed, key, "where")
        facts.append(Fact("attribute", "position", obj, src.zh[i], q("position", obj), (i,), g))
    return facts


def turn_answer(f: Fact) -> str:
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

