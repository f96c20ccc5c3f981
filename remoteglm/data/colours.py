"""Colour lists of English captions, and which object each colour of a Chinese text is said of.

``english_list``: the colour (or shape) words right before a term, all of a list: "orange and
white roofs" says two colours of the roofs, not white ones.

``colour_objects``: the instruction checks (``grounding.py``) hold every colour of a question or answer
to the object it is said of: captions "white roofs" and "green trees" do not ground 绿色的屋顶,
though each of its words is in them. A colour is tied to the glossary object right after it
(白色屋顶, 白色的大屋顶, 红白相间的屋顶, 白色圆形储油罐), else to the one in front of a linking verb
before it (屋顶是白色的, 屋顶的颜色为白色, 树木都呈绿色); colours joined by 和 / 与 / 、 / 或, or by
nothing (红白), go together. A colour tied to no object (一片绿色) is left to the plain check that
some caption says that colour.
"""

from __future__ import annotations

import functools
import re

from . import faithful
from .faithful_words import ATTRIBUTES

COLOUR = frozenset(i for i, (kind, _, _) in enumerate(ATTRIBUTES) if kind == "colour")

_LIST_WORD = re.compile(r"\d+|[a-z]+(?:-[a-z]+)*|,")
_LIST_JOIN = {"and", "or", ","}
_EN_SHADE = {"dark", "pale"}  # right before another colour: its shade ("dark green"), not a colour of its own


def english_list(before: str, groups_asked, stop) -> tuple[tuple[frozenset[int], ...], bool]:
    """The attribute words (of ``groups_asked``, ATTRIBUTES indexes) at the end of ``before``, a
    lower-case caption up to a term: every word of a list ("orange and white", "red, white and
    blue", "white orange and grey"), one other word (not in ``stop``) allowed after it ("white
    big"). Each word's indexes, and whether "or" joins the list (the captions are not sure)."""
    found: list[frozenset[int]] = []
    kind, joins, alternative, gap = "", set(), False, False
    for w in reversed(_LIST_WORD.findall(before)[-12:]):
        groups = frozenset(g for g in faithful.attributes_en(w) if g in groups_asked) if w != "," else frozenset()
        if groups:
            k = ATTRIBUTES[min(groups)][0]
            if found and k != kind:  # "round white tanks": the shape is no part of the colour list
                break
            if found and not joins and w in _EN_SHADE:
                continue
            alternative |= "or" in joins
            kind, joins = k, set()
            found.append(groups)
        elif found and w in _LIST_JOIN:
            joins.add(w)
        elif found or gap or w in stop or w == ",":
            break
        else:
            gap = True
    return tuple(reversed(found)), alternative


_ZH_SHADE = "[深浅淡亮暗鲜]?"  # 深绿色: the shade of the colour after it
# between two colours of one list
_JOIN = re.compile(rf"色?(?:和|与|及|以及|、|或|或者|跟|同)?{_ZH_SHADE}")
# between the last colour and its object: 白色的大屋顶, 红白相间的屋顶
_SHAPES = "|".join(sorted((f for kind, forms, _ in ATTRIBUTES if kind == "shape" for f in forms),
                          key=len, reverse=True))
_TO_OBJECT = re.compile(rf"色?(?:相间|交错|混杂)?的?(?:大型|小型|高大|低矮|巨大|[大小高矮长短宽窄新旧])?的?(?:{_SHAPES})?的?")
# between an object and the first colour said of it: 屋顶是, 屋顶的颜色为, 树都呈, 房屋大多是
_LINK = re.compile(r"(?:的?颜色)?(?:都|均|全|全都|也|则|多|大多|大都|大多数|主要|基本|大部分|多数|全部)?都?"
                   rf"(?:是|为|呈|呈现|呈现出|显|显得|显出)(?:一片|一些)?{_ZH_SHADE}$")
_SLACK = 1  # characters an object word may run on past its glossary form before the link (树木 for 树)


@functools.lru_cache(maxsize=1)
def _object_forms() -> tuple[tuple[str, frozenset[str]], ...]:
    """(Chinese form, the glossary terms it is a form of), longest first: 房子 -> 房屋, 建筑物 -> 建筑."""
    terms: dict[str, set[str]] = {}
    for term, forms in faithful._term_forms().items():  # the glossary's own forms (faithful.term_forms)
        for form in forms:
            terms.setdefault(form, set()).add(term)
    return tuple(sorted(((f, frozenset(t)) for f, t in terms.items()), key=lambda ft: -len(ft[0])))


@functools.lru_cache(maxsize=65536)
def colour_objects(text: str) -> tuple[tuple[str, int, str, frozenset[str]], ...]:
    """(colour form, index in ATTRIBUTES, object form, its glossary terms) for each colour of
    ``text``; object form "" and no terms where the colour is tied to no object."""
    objects = faithful.spans(text, _object_forms())
    in_object = {k for s, e, _ in objects for k in range(s, e)}
    colours = sorted((s, e, i) for s, e, i in faithful.attribute_spans(text)
                     if i in COLOUR and not in_object & set(range(s, e)))  # 绿地 is a place, not a colour
    out = []
    k = 0
    while k < len(colours):
        run = [colours[k]]
        while k + 1 < len(colours) and _JOIN.fullmatch(text, run[-1][1], colours[k + 1][0]):
            k += 1
            run.append(colours[k])
        k += 1
        obj = _after(text, run[-1][1], objects) or _before(text, run[0][0], objects)
        form, terms = (text[obj[0]:obj[1]], obj[2]) if obj else ("", frozenset())
        out += [(text[s:e], i, form, terms) for s, e, i in run]
    return tuple(out)


def _after(text: str, end: int, objects):
    """The object a colour ending at ``end`` is put before (白色的大屋顶), or None."""
    return next((o for o in sorted(objects) if o[0] >= end and _TO_OBJECT.fullmatch(text, end, o[0])), None)


def _before(text: str, start: int, objects):
    """The object a colour starting at ``start`` is said of by a linking verb (屋顶都是白色), or None."""
    link = _LINK.search(text, 0, start)
    if not link:
        return None
    near = [o for o in objects if link.start() - _SLACK <= o[1] <= link.start()
            and not re.search(r"[^\u4e00-\u9fff]", text[o[1] : link.start()])]
    return max(near, default=None, key=lambda o: o[1])


def tied(texts) -> frozenset[tuple[int, str]]:
    """(colour, glossary term) for each colour the Chinese texts tie to an object."""
    return frozenset((i, t) for text in texts for _, i, _, terms in colour_objects(text) for t in terms)


def misplaced(text: str, said: frozenset[tuple[int, str]]) -> list[tuple[str, str]]:
    """(colour form, object form) for each colour ``text`` ties to an object that ``said`` (what the
    captions tie to objects) never gives that colour, under any of the object's glossary terms."""
    return list(dict.fromkeys((c, form) for c, i, form, terms in colour_objects(text)
                              if terms and not any((i, t) in said for t in terms)))
