"""Faithfulness checks shared by the ``translate`` and ``rewrite`` steps, each defined once.

Real LLMs answer with refusals ("抱歉，这个我做不到。"), filler ("好的。", "请稍等。"), preambles
("以下是翻译："), questions back to the user, mood words the English never says (宁静祥和) and
paragraphs that keep one of three source sentences. These functions find each of those; they
return what they found (words, numbers, sentence numbers) and the two steps turn that into a
problem message in the language of their prompt.

- ``meta_text``: refusals, apologies, acknowledgements, AI self-talk, questions, quotes of the
  instructions - allowed only where the source itself says the same thing.
- ``invented_mood``: mood / judgement words (``BANNED``); in a translation each is allowed only
  when the English has one of its cue words (quiet -> 宁静, beautiful -> 美丽 ...), in a rewrite
  only when a (checked) source sentence has the word.
- ``invented_objects``: distinctive objects (教堂, 飞机, 船 ...) a translation names but its English
  does not mention.
- ``coverage_problems``: what each source sentence of a rewrite says (nouns, numbers, glossary
  terms) that the paragraph lost; ``invented_nouns`` the other way.
- ``invented_attributes``: colour, shape and position words (``ATTRIBUTES``) no source says, in
  Chinese or in English (the grounding check of the instruction data, ``grounding.py``).
- ``names_object``: whether a referring expression still names its object's category.
- ``length_problem``: a paragraph much shorter than the distinct content of its sources, or much
  longer than all of them together; ``translation_length_problem`` for one sentence.

The word lists they use are in ``faithful_words.py``, the numbers a text states (and
``number_problems``, ``invented_numbers``) in ``numerals.py``.

``validator_version()`` is a digest of this code, its word lists, the numbers and the glossary:
cached answers stamped with another digest are checked again when they are read (see
``ResultCache.get_checked``).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re

from . import faithful_words, glossary, numerals
from .faithful_words import ATTRIBUTES, GENERIC_NOUNS, META, MOOD_CUES, OBJECT_CUES
from .glossary import ACCEPTED, GLOSSARY, jieba_with_terms, zh_words
from .numerals import chinese_numbers

_META_RE = tuple((name, re.compile(pat), cues) for name, pat, cues in META)

_CJK = re.compile(r"[\u4e00-\u9fff]")



@functools.cache
def _cue(stems: tuple[str, ...]) -> re.Pattern:
    """One regex for English stems: each matches at a word start ("beaut" -> "beautiful"); a stem
    ending in "$" is a whole word ("we$" is not the start of "well"); a stem that is not a word
    ("?") matches anywhere ("road?")."""
    alts = []
    for s in sorted(stems, key=len, reverse=True):
        whole, word = s.endswith("$"), s[:1].isalpha()
        s = re.escape(s.rstrip("$")).replace(r"\ ", r"\s+")
        alts.append(("(?<![a-z])" if word else "") + (rf"{s}(?![a-z])" if whole else s))
    return re.compile(f"(?:{'|'.join(alts)})", re.IGNORECASE)


@functools.lru_cache(maxsize=1 << 18)  # the instruction checks ask the same captions about every object
def _english_says(english: str, stems: tuple[str, ...]) -> bool:
    return bool(stems) and bool(_cue(stems).search(english))


# -- meta text -------------------------------------------------------------------------------

def meta_text(text: str, sources: list[str] = (), english: str | None = None) -> list[tuple[str, str]]:
    """(kind, phrase) for each refusal / chatter / instruction phrase in ``text`` (a reply).

    A phrase is allowed when a Chinese source sentence has the same kind of phrase (a rewrite of
    a caption that itself says 我们), or when ``english`` has the cue that a faithful translation
    renders that way ("you can see" -> 你可以看到).
    """
    found = []
    for name, rx, cues in _META_RE:
        m = rx.search(text)
        if not m or any(rx.search(s) for s in sources):
            continue
        if english is not None and _english_says(english, cues):
            continue
        found.append((name, m.group(0).strip(" \n。！!，,：:") or m.group(0)))
    # one phrase once: "我" is not reported again beside "我做不到", nor "请稍" beside "请稍等"
    return [(n, p) for i, (n, p) in enumerate(found)
            if not any(p in q and (p != q or j < i) for j, (_, q) in enumerate(found) if j != i)]


# -- invented content ------------------------------------------------------------------------

def invented_mood(text: str, sources: list[str] = (), english: str | None = None) -> list[str]:
    """Banned mood / judgement words in ``text`` that neither the sources nor the English say."""
    src = "".join(sources)
    out = []
    for word, cues in MOOD_CUES.items():
        if word not in text or word in src:
            continue
        if english is not None and _english_says(english, cues):
            continue
        out.append(word)
    return out


def invented_objects(chinese: str, english: str) -> list[str]:
    """Distinctive objects a translation names that its English does not mention."""
    out = []
    for zh, cues in OBJECT_CUES.items():
        if zh in chinese and not _english_says(english, cues):
            if any(zh in o and o in chinese for o in out):  # 储油罐 already reported, not 油罐 again
                continue
            out.append(zh)
    return out


@functools.lru_cache(maxsize=65536)
def _nouns(sentence: str) -> tuple[str, ...]:
    """Nouns of a Chinese sentence (jieba + glossary terms), generic ones left out."""
    jieba_with_terms()
    import jieba.posseg as pseg

    return tuple(dict.fromkeys(w for w, flag in pseg.cut(sentence)
                               if flag.startswith("n") and w not in GENERIC_NOUNS and _CJK.search(w)))


def invented_nouns(paragraph: str, sources: list[str], skip: list[str] = ()) -> list[str]:
    """Nouns of a paragraph that no source sentence has (re-segmentations of source text allowed)."""
    src = "".join(sources)
    chars = set(src)
    forms = _term_forms()
    variants = {f for s in sources for t in zh_terms(s) for f in forms[t]}  # 居民区 for 住宅区
    out = []
    for word in _nouns(paragraph):
        if word in src or word in variants or any(word in s for s in skip):
            continue
        # A noun whose every character appears in the sources is a re-segmentation, not new content.
        if len(word) > 1 and all(c in chars for c in word):
            continue
        out.append(word)
    return out


# -- rewrite coverage ------------------------------------------------------------------------

# Chinese forms that count as the same glossary term in a paragraph (besides ACCEPTED's forms).
_ZH_VARIANTS = (
    ("建筑", "建筑物"), ("草地", "草坪", "草皮"), ("灌木", "灌木丛"), ("桥梁", "桥"), ("船舶", "船"), ("河流", "河"),
    ("山地", "山"), ("房屋", "房子", "住房"), ("汽车", "车辆", "车"), ("十字路口", "路口"), ("池塘", "水塘"),
    ("住宅区", "居民区", "居住区"), ("海洋", "海"), ("农田", "田地"),
)


@functools.lru_cache(maxsize=1)
def _term_forms() -> dict[str, frozenset[str]]:
    # every glossary term, the one-character ones too (jieba may tag 树 a verb, but it is a term)
    forms: dict[str, set[str]] = {t: {t} for t in set(zh_words()) | set(GLOSSARY.values())}
    for en, zh in GLOSSARY.items():
        if zh in forms:
            forms[zh].update(ACCEPTED.get(en, ()))
    for group in [tuple(g) for g in ACCEPTED.values()] + list(_ZH_VARIANTS):
        for t in group:
            if t in forms:
                forms[t].update(group)
    return {t: frozenset(f) for t, f in forms.items()}


@functools.lru_cache(maxsize=65536)  # sources are checked against many answers
def zh_terms(sentence: str) -> tuple[str, ...]:
    """Glossary terms in a Chinese sentence, longest first and not overlapping (密集住宅区, not 住宅)."""
    terms = sorted(_term_forms(), key=len, reverse=True)
    return tuple(dict.fromkeys(t for _, _, t in spans(sentence, [(t, t) for t in terms])))


def spans(text: str, words) -> list[tuple[int, int, object]]:
    """(start, end, value) for each (word, value) of ``words`` in ``text``, taken in the order of
    ``words`` (longest first, by the callers) where they overlap nothing taken before."""
    found, taken = [], [False] * len(text)
    for word, value in words:
        start = text.find(word)
        while start >= 0:
            end = start + len(word)
            if not any(taken[start:end]):
                found.append((start, end, value))
                taken[start:end] = [True] * len(word)
            start = text.find(word, start + 1)
    return found


def _noun_kept(noun: str, paragraph: str, chars: set[str]) -> bool:
    """A source noun is kept if the paragraph has it, or half its characters (树木 -> 树, 房屋 -> 房子)."""
    if noun in paragraph:
        return True
    return sum(c in chars for c in noun) * 2 >= len(noun) and len(noun) > 1


def coverage_problems(paragraph: str, sources: list[str]) -> list[tuple[int, list[str]]]:
    """(1-based source number, what of it the paragraph lost) for each source that lost too much.

    Every glossary term and every number of a source must be in the paragraph (its trivial forms
    count: 路 for 道路, 3 for 三); a third of its nouns (terms included) may go, if not terms: a
    re-wording, or a repeat said once in other words.
    """
    chars = set(paragraph)
    p_exact, p_approx, p_several = chinese_numbers(paragraph)
    forms = _term_forms()
    out = []
    for i, src in enumerate(sources, 1):
        lost: list[str] = []
        terms = zh_terms(src)
        for t in terms:
            if not any(f in paragraph for f in forms[t]):
                lost.append(t)
        exact, approx, several = chinese_numbers(src)
        lost += [_show_number(n) for n in sorted(exact | approx) if n not in p_exact | p_approx]
        if several and not (p_several or p_exact or p_approx):
            lost.append("几")
        nouns = [n for n in _nouns(src) if not any(n in t or t in n for t in terms)]
        gone = [n for n in nouns if not _noun_kept(n, paragraph, chars)]
        if lost or len(gone) > (len(nouns) + len(terms)) // 3:
            lost += gone
        if lost:
            out.append((i, lost))
    return out


def _show_number(n: int) -> str:
    return {2: "两", 3: "三", 4: "四", 5: "五", 6: "六", 7: "七", 8: "八", 9: "九", 10: "十"}.get(n, str(n))


# -- attributes: colour, shape, position (faithful_words.ATTRIBUTES) ----------------------------

@functools.lru_cache(maxsize=1)
def _attribute_forms() -> tuple[tuple[str, int], ...]:
    return tuple(sorted(((f, i) for i, (_, forms, _) in enumerate(ATTRIBUTES) for f in forms),
                        key=lambda fi: -len(fi[0])))


@functools.lru_cache(maxsize=65536)
def attribute_spans(text: str) -> tuple[tuple[int, int, int], ...]:
    """(start, end, index in ATTRIBUTES) for each attribute word of Chinese text, longest first, no overlap."""
    return tuple(spans(text, _attribute_forms()))


@functools.lru_cache(maxsize=65536)
def attributes_zh(text: str) -> tuple[tuple[str, int], ...]:
    """(form, index in ATTRIBUTES) for each attribute word of Chinese text, longest first, no overlap."""
    return tuple((text[s:e], i) for s, e, i in attribute_spans(text))


@functools.lru_cache(maxsize=65536)
def attributes_en(english: str) -> frozenset[int]:
    """Indexes of the ATTRIBUTES an English text says (its stems)."""
    return frozenset(i for i, (_, _, stems) in enumerate(ATTRIBUTES) if _english_says(english, stems))


def invented_attributes(text: str, sources: list[str], english: str = "") -> list[str]:
    """Colour, shape and position words of ``text`` that no source says (Chinese forms or English stems)."""
    said = {i for s in sources for _, i in attributes_zh(s)} | (attributes_en(english) if english else frozenset())
    return list(dict.fromkeys(form for form, i in attributes_zh(text) if i not in said))


def term_forms(term: str) -> frozenset[str]:
    """The Chinese forms that count as a glossary term (路 for 道路, 车 for 汽车); the term alone if unknown."""
    return _term_forms().get(term, frozenset({term}))


def names_object(text: str, name: str) -> bool:
    """Whether ``text`` names the object ``name`` (an object category's Chinese name, 车辆): by the name
    or a form that counts as the same term (汽车, 车), so a referring expression cannot lose its category."""
    forms = {name} | {f for fs in _term_forms().values() if name in fs for f in fs}
    return any(f in text for f in forms)


# -- length ----------------------------------------------------------------------------------

def cjk_len(text: str) -> int:
    return len(_CJK.findall(text))


def distinct_content(sources: list[str]) -> int:
    """Chinese characters of the distinct words of the sources: what a merge must at least say."""
    from .glossary import tokenize_zh

    words = {w for s in sources for w in tokenize_zh(s) if _CJK.search(w)}
    return sum(cjk_len(w) for w in words)


# A paragraph shorter than this share of the sources' distinct words has dropped content (hand
# merges of the sample and of real UCM/Sydney captions: 0.82-1.44); one longer than all sources
# together plus a few joining words has added some (hand merges: at most 0.93 of the sum).
MIN_PARAGRAPH_SHARE = 0.6
MAX_PARAGRAPH_GROWTH = 1.15
PARAGRAPH_SLACK = 8


def length_problem(paragraph: str, sources: list[str]) -> str:
    """'short' / 'long' when a paragraph's length is far from what its sources say, else ''."""
    n = cjk_len(paragraph)
    if n < MIN_PARAGRAPH_SHARE * distinct_content(sources):
        return "short"
    if n > MAX_PARAGRAPH_GROWTH * sum(cjk_len(s) for s in sources) + PARAGRAPH_SLACK:
        return "long"
    return ""


# Chinese characters per English letter: 0.22-0.44 in the sample's and the hand translations (103);
# short English compresses most ("there is a piece of bareland" -> 一片裸地, 0.17), so only English
# of 30 letters or more is held to the lower bound.
MIN_TRANSLATION_RATIO = 0.12
MIN_RATIO_LETTERS = 30
MAX_TRANSLATION_RATIO = 1.0
TRANSLATION_SLACK = 6


def translation_length_problem(english: str, chinese: str) -> str:
    """'short' / 'long' when a translation is far shorter or longer than its English could say."""
    letters = len(re.findall(r"[A-Za-z]", english))
    n = cjk_len(chinese)
    if letters >= MIN_RATIO_LETTERS and n < MIN_TRANSLATION_RATIO * letters:
        return "short"
    if n > MAX_TRANSLATION_RATIO * letters + TRANSLATION_SLACK:
        return "long"
    return ""


# -- validator version -----------------------------------------------------------------------

def validator_version(*checks) -> str:
    """A digest of this module, its word lists, the numbers, the glossary and the given check
    functions' code.

    Cached answers carry the digest of the code that accepted them; when it differs, they are
    checked again on read. A change to any check therefore re-checks old answers (once) instead of
    trusting them or asking again.
    """
    h = hashlib.sha1()
    for obj in (inspect.getmodule(validator_version), faithful_words, numerals, glossary, *checks):
        try:
            h.update(inspect.getsource(obj).encode())
        except (OSError, TypeError):  # no source (frozen install): fall back to the names
            h.update(getattr(obj, "__qualname__", getattr(obj, "__name__", "?")).encode())
    return h.hexdigest()[:12]
