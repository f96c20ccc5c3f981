"""Reading the text of an answer: the one preparation every reader starts from (NFKC, lower
case), word alternations for regular expressions, and the numbers an answer states: Arabic (3,
1,200, full-width ３, 3万 = 30000), Chinese (三 = 3, 两 = 2, 二十一 = 21, 一百零五 = 105, 三百五 =
350, 两万 = 20000) and English (three, twenty-one). Not numbers: 一些, 一样, 一起, 十分, 十字, 四周,
两侧, 第一, and a numeral followed by 几 (十几)."""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Iterable


def prep(text: str) -> str:
    """NFKC (full-width digits and punctuation to ASCII, ㎡ to m2), lower case, no outer space."""
    return unicodedata.normalize("NFKC", str(text or "")).lower().strip()


def alternation(words: Iterable[str]) -> str:
    """A regular expression matching any of ``words``, longest first; ASCII words only as whole words."""
    parts = []
    for w in sorted(set(words), key=len, reverse=True):
        e = re.escape(w)
        parts.append(rf"(?<![a-z]){e}(?![a-z])" if w[:1].isascii() else e)
    return "|".join(parts)


# ---- numbers --------------------------------------------------------------------------------------
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "壹": 1, "二": 2, "贰": 2, "两": 2, "俩": 2, "三": 3, "叁": 3, "四": 4, "肆": 4,
              "五": 5, "伍": 5, "六": 6, "陆": 6, "七": 7, "柒": 7, "八": 8, "捌": 8, "九": 9, "玖": 9}
_ZH_UNITS = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
_ZH_BIG = {"万": 10 ** 4, "萬": 10 ** 4, "亿": 10 ** 8}
_ZH_CHARS = "".join([*_ZH_DIGITS, *_ZH_UNITS, *_ZH_BIG])
# Numeral characters that are part of a word, not a number (checked at the numeral's position).
_NOT_NUMBERS = ("一些", "一样", "一起", "一般", "一直", "一定", "一致", "一部分", "一点", "一侧", "一边", "一带", "一旁",
                "一角", "一体", "一同", "一切", "一下", "一面", "一系列", "一眼", "统一", "唯一", "万一", "十分", "十字",
                "四周", "四面", "四处", "两侧", "两边", "两旁", "两岸", "两端", "三角", "千万", "万物", "百货", "五颜六色",
                "一望无际", "一览")
_EN_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                        "fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_EN_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_NUMBER_RE = re.compile(
    rf"(?<![a-z^])(?P<arabic>\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?)(?P<mult>[万萬千百亿](?![{_ZH_CHARS}]))?"
    rf"|(?P<skip>{'|'.join(map(re.escape, sorted(_NOT_NUMBERS, key=len, reverse=True)))})"
    rf"|(?P<zh>[{_ZH_CHARS}]+)"
    rf"|(?<![a-z])(?P<tens>{'|'.join(_EN_TENS)})(?:[- ](?P<ones>{'|'.join(list(_EN_UNITS)[1:10])}))?(?![a-z])"
    rf"|(?<![a-z])(?P<en>{'|'.join(sorted(_EN_UNITS, key=len, reverse=True))})(?![a-z])")


def chinese_number(run: str) -> tuple[int, int] | None:
    """``(value, characters used)`` of the number a run of Chinese numerals starts with: 三 -> 3,
    二十一 -> 21, 一百零五 -> 105, 三百五 -> 350 (colloquial), 两万三千 -> 23000; 两三 -> 2 (the
    first number of a range). None when the run does not start with a number (e.g. 万 alone)."""
    total = 0       # the part already multiplied by 万 / 亿
    section = 0     # below 万
    digit: int | None = None
    last_unit = 0   # the unit (10, 100, 1000, 1e4...) just before ``digit``, 0 after 零 or at the start
    used = 0
    big_used = math.inf
    for i, ch in enumerate(run):
        if ch in _ZH_DIGITS:
            d = _ZH_DIGITS[ch]
            if digit is not None and digit != 0:
                break  # two digits in a row (两三, 二〇二三): the number ended before
            digit = d
            if d == 0:
                last_unit = 0
        elif ch in _ZH_UNITS:
            unit = _ZH_UNITS[ch]
            if digit is None:
                if i == 0 and unit == 10 or (section and section % 10 == 0 and unit == 10 and last_unit > 10):
                    digit = 1  # 十五 = 15, 一百十 = 110
                else:
                    break
            if digit == 0:
                break  # 零十: not a number
            section += digit * unit
            digit, last_unit = None, unit
        elif ch in _ZH_BIG:
            big = _ZH_BIG[ch]
            if digit is None and not section:
                break
            section += digit or 0
            if big < big_used:
                total += section * big
                big_used = big
            else:
                total = (total + section) * big
            section, digit, last_unit = 0, None, big
        else:
            break
        used = i + 1
    else:
        used = len(run)
    if digit is not None:
        # 三百五 = 350, 两万三 = 23000: a last digit straight after 百 / 千 / 万 is one unit lower
        section += digit * (last_unit // 10 if last_unit >= 100 and used == len(run) else 1)
    value = total + section
    if used == 0 or (value == 0 and not any(c in ("零", "〇") for c in run[:used])):
        return None
    return value, used


def numbers(text: str) -> list[tuple[int, int, float]]:
    """``(start, end, value)`` of every number in ``text`` (after NFKC, lower case), in order."""
    t = prep(text)
    out = []
    for m in _NUMBER_RE.finditer(t):
        if m.group("skip") or t[m.start() - 1:m.start()] == "第":  # 一些, 第一: words, not counts
            continue
        if m.group("tens"):
            out.append((m.start(), m.end(), float(_EN_TENS[m.group("tens")] + _EN_UNITS.get(m.group("ones") or "zero"))))
            continue
        if m.group("en"):
            out.append((m.start(), m.end(), float(_EN_UNITS[m.group("en")])))
            continue
        if m.group("arabic"):
            v = float(m.group("arabic").replace(",", ""))
            if m.group("mult"):
                v *= {"万": 1e4, "萬": 1e4, "千": 1e3, "百": 1e2, "亿": 1e8}[m.group("mult")]
            out.append((m.start(), m.end(), v))
            continue
        run, pos = m.group("zh"), m.start()
        while run:
            got = chinese_number(run)
            if got is None:
                run, pos = run[1:], pos + 1
                continue
            value, used = got
            if not t.startswith("几", pos + used):  # 十几, 几十: not a number
                out.append((pos, pos + used, float(value)))
            run, pos = run[used:], pos + used
    return out


def first_number(text: str) -> float | None:
    """The first number in ``text`` (see ``numbers``), or None."""
    found = numbers(text)
    return found[0][2] if found else None


def fmt_number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"
