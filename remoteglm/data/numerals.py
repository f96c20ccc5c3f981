"""The numbers a caption states, in Chinese and in English, for the faithfulness checks.

"三" and "3" are the same number, "两"/"双" are 2; "十几"/"几十"/"数百" are approximate; idioms that
hold numerals (十字路口, 四周, 五颜六色) are no numbers; "both", "a pair", "dozens" allow a number
without requiring one. 1 is never counted (一 is everywhere in Chinese).
"""

from __future__ import annotations

import functools
import re
import unicodedata

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
# Words holding numeral characters that are not counts (十字路口 is an intersection, 四周 "all round").
_NOT_COUNTS = re.compile(
    r"十字|十分|十足|三角|四周|四面|四方|四处|五颜六色|五彩|七彩|三三两两|千姿百态|万物|百货|百分之|千万|万一|一一|"
    r"一望无际|七零八落|乱七八糟|千篇一律|四通八达|八方|千家万户|成千上万|成百上千|万千|三维|二维"
)
_CN_NUM = re.compile(r"[零〇一二两俩三四五六七八九十百千万]+")
_APPROX_BEFORE = "几数上近约成好"
_APPROX_AFTER = "几多余来"
_LOCATION_TWO = re.compile(r"两(?=[侧边岸旁端头面])")  # 两侧 "both sides": a place, not a count
# "several": 几条, 数栋, 若干, 多个 (not 几乎 "almost", 几何, nor 许多排列 "many ... arranged")
_SEVERAL = re.compile(r"几(?![乎何])|数[条棵个辆架座栋艘片块处排根只]|若干|(?<![许很众诸较更太好最])多[条棵个辆架座栋艘片块处根只]")
_EN_UNITS = {w: i for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"))}
_EN_TENS = {w: 10 * (i + 2) for i, w in enumerate(
    ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"))}
_EN_SOFT = {  # words that allow a Chinese number without making it required
    "both": 2, "pair": 2, "pairs": 2, "couple": 2, "double": 2, "twin": 2, "dual": 2, "either": 2, "second": 2,
    "twice": 2, "third": 3, "triple": 3, "fourth": 4, "fifth": 5, "sixth": 6, "dozen": 12, "dozens": 12,
}

_EN_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _cn_value(run: str) -> int | None:
    """The value of a run of Chinese numerals (三, 十二, 二十五, 两百); None for digit lists (两三)."""
    if not any(c in _CN_UNITS for c in run):
        return _CN_DIGITS[run] if len(run) == 1 else None
    total, section, digit = 0, 0, None
    for c in run:
        if c in _CN_DIGITS:
            digit = _CN_DIGITS[c]
        else:
            unit = _CN_UNITS[c]
            if unit == 10000:
                total += (section + (digit or 0)) * unit
                section, digit = 0, None
            else:
                section += (1 if digit is None else digit) * unit
                digit = None
    return total + section + (digit or 0)


@functools.lru_cache(maxsize=65536)  # sources are counted again for every answer checked against them
def chinese_numbers(text: str, places: bool = True) -> tuple[frozenset[int], frozenset[int], bool]:
    """(definite numbers, approximate numbers, says "several") in Chinese text; 1 is left out.

    "三" and "3" are both 3; "两"/"俩"/"双" are 2; "十几"/"几十"/"数百" are approximate; idioms that
    hold numerals (十字路口, 四周, 五颜六色) are not numbers. ``places=False`` also leaves out 两 of
    place words (两侧, 两岸), which render "both sides" as often as "two sides".
    """
    text = _NOT_COUNTS.sub("、", _nfkc(text))
    if not places:
        text = _LOCATION_TWO.sub("、", text)
    exact: set[int] = set()
    approx: set[int] = set()
    for m in re.finditer(r"\d+(?:\.\d+)?", text):
        if "." not in m.group(0):
            exact.add(int(m.group(0)))
    for m in _CN_NUM.finditer(text):
        run, before, after = m.group(0), text[m.start() - 1 : m.start()], text[m.end() : m.end() + 1]
        values = [_cn_value(run)] if _cn_value(run) is not None else [_CN_DIGITS.get(c, 0) for c in run]
        into = approx if (before and before in _APPROX_BEFORE) or (after and after in _APPROX_AFTER) else exact
        if len(values) > 1 or run in ("百", "千", "万"):  # 两三棵 "two or three"; 百米, 千米 are units
            into = approx
        into.update(v for v in values if v and v > 1)
    if "双" in text:
        exact.add(2)
    several = bool(_SEVERAL.search(text))
    return frozenset(exact - {0, 1}), frozenset(approx - {0, 1}), several


def english_numbers(english: str) -> tuple[set[int], set[int]]:
    """(numbers a translation must keep, numbers it may use) in an English sentence; 1 left out.

    "two", "2", "twenty-two", "twenty two", "three hundred" must be kept; "both", "a pair",
    "dozens", "hundreds of", "second" allow a number without requiring one.
    """
    text = english.lower()
    required = {int(m.group(0)) for m in re.finditer(r"(?<![\d.])\d+(?![\d.])", text)}
    soft: set[int] = set()
    words = [p for w in _EN_WORD.findall(text) for p in w.split("-")]
    i = 0
    while i < len(words):
        w, value = words[i], None
        if w in _EN_TENS:
            value = _EN_TENS[w]
            if i + 1 < len(words) and 0 < _EN_UNITS.get(words[i + 1], 0) < 10:
                value += _EN_UNITS[words[i + 1]]
                i += 1
        elif w in _EN_UNITS:
            value = _EN_UNITS[w]
        if value is not None:
            if words[i + 1 : i + 2] == ["hundred"]:
                value, i = value * 100, i + 1
            required.add(value)
        elif w in _EN_SOFT:
            soft.add(_EN_SOFT[w])
        elif w in ("hundred", "hundreds", "thousand", "thousands"):
            soft.add(100 if w.startswith("h") else 1000)
        i += 1
    return required - {0, 1}, (soft | required) - {0, 1}


def number_problems(english: str, chinese: str) -> tuple[list[int], list[int]]:
    """(numbers of the English missing from the translation, numbers the translation invents)."""
    required, allowed = english_numbers(english)
    exact, approx, _ = chinese_numbers(chinese)
    missing = sorted(n for n in required if n not in exact | approx)
    strict, _, _ = chinese_numbers(chinese, places=False)
    invented = sorted(n for n in strict if n not in allowed)
    return missing, invented


def invented_numbers(paragraph: str, sources: list[str]) -> list[int]:
    """Definite numbers of a paragraph that no source sentence has."""
    have: set[int] = set()
    for s in sources:
        exact, approx, _ = chinese_numbers(s)
        have |= exact | approx
    exact, _, _ = chinese_numbers(paragraph, places=False)
    return sorted(n for n in exact if n not in have)
