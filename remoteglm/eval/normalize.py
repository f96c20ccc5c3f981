"""Answers to remote-sensing questions in Chinese, read as canonical values. Every answer and
every label of a kind go through the same normaliser:

- yes/no (presence, comparison) -> 是 / 否. The first decisive word wins, so "是的，有两座桥" is
  是 and "图中没有桥" is 否. Yes: 是, 对, 有, 存在, 正确, 没错, 当然, 确实, 可以看到, yes, true.
  No: 否, 不是, 不对, 不存在, 没有, 没, 无, 不, 并非, 看不到, 未发现, no, not, false. Words
  that decide nothing are skipped: 是否 / 是不是 / 有没有 (an echoed question), 不少, 非常,
  差不多, 不仅. Hedges (不知道, 不确定, 无法判断, 看不清 ...) before any decision: no answer.
- count -> an integer: the first number in the answer, Arabic (3, 1,200, full-width ３) or Chinese
  (三 = 3, 两 = 2, 二十一 = 21, 一百零五 = 105, 三百五 = 350, 两万 = 20000), a 万/千/百 after
  digits multiplies (3万 = 30000). Not numbers: 一些, 一样, 一起, 十分, 十字, 四周, 两侧, 第一,
  and a numeral followed by 几 (十几). No number but a negation (没有, 无, 不存在, 一座都没有,
  none): 0. A hedge or nothing countable: no answer. A count label is a number, or one of
  RSVQA's bins as the importer writes them (10到100之间, 超过1000, 少于10): the answer's number
  must equal it or lie in the bin (``count_range``).
- rural_urban -> 农村 / 城市: 农村, 乡村, 乡下, 村庄, rural, countryside vs 城市, 城区, 市区,
  城镇, 都市, urban, city. A name right after 不是 / 非 / 不属于 / not is negated; one class left
  -> it; none left but one negated -> the other one; both -> no answer.
- area -> an RSVQA-HR area bin: 0, 1-10, 11-100, 101-1000, more than 1000 平方米 (the bins RSVQA
  scores area answers in). The first number with its unit: 平方米 / 平米 / m2 / m² / ㎡ / sqm
  (x1), 平方公里 / 平方千米 / km2 (x1e6), 公顷 / ha (x1e4), 亩 (x666.67), a bare number is
  平方米; ranges ("10到100平方米之间", "between 10m2 and 100m2") and bounds ("超过1000平方米",
  "more than 1000m2", "1000平方米以上") map to the bin they describe.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from remoteglm.eval.numbers import alternation, fmt_number, numbers, prep

KINDS = ("yesno", "count", "rural_urban", "area")
YES, NO = "是", "否"
RURAL, URBAN = "农村", "城市"


# ---- yes / no -------------------------------------------------------------------------------------
_HEDGES = ("不知道", "不确定", "无法确定", "无法判断", "无法回答", "无法看出", "无法看清", "无法识别", "不清楚", "看不清",
           "看不出", "难以判断", "难以确定", "难以看出", "不好说", "说不准", "不能确定", "不能判断", "很难说", "不一定",
           "i don't know", "i do not know", "not sure", "unsure", "cannot tell", "can't tell", "unknown")
_SKIP = ("是否有", "是否存在", "是否是", "是否", "是不是", "有没有", "有无", "存不存在", "对不对", "不少", "不多",
         "非常", "差不多", "不仅", "不但", "无论", "不管", "不同", "不断", "不规则", "毫无疑问", "无疑", "无人机",
         "但是", "可是", "还是", "于是", "要是", "凡是", "对面", "对岸", "相对", "对称", "对于", "对比")
_NO = ("并不是", "并不存在", "并没有", "不是", "不对", "不存在", "不正确", "不包含", "不含", "并非", "没有", "看不到",
       "看不见", "未见", "未发现", "没发现", "找不到", "未看到", "没看到", "错误", "没", "无", "否", "不", "非")
_YES = ("是", "对", "有", "存在", "正确", "没错", "当然", "确实", "肯定", "可以看到", "能看到", "看得到", "包含", "含有",
        "具有")
_EN_NO = ("no", "not", "false", "none", "nope")
_EN_YES = ("yes", "yeah", "yep", "true", "correct")



_YESNO_RE = re.compile(alternation((*_HEDGES, *_SKIP, *_NO, *_YES, *_EN_NO, *_EN_YES)))
_YESNO_OF = {**{w: None for w in _HEDGES}, **{w: "skip" for w in _SKIP}, **{w: NO for w in (*_NO, *_EN_NO)},
             **{w: YES for w in (*_YES, *_EN_YES)}}


@functools.lru_cache(maxsize=65536)
def normalize_yes_no(text: str) -> str | None:
    """是 / 否 from an answer, or None (a hedge, or no decisive word)."""
    for m in _YESNO_RE.finditer(prep(text)):
        verdict = _YESNO_OF[m.group(0)]
        if verdict == "skip":
            continue
        return verdict  # 是 / 否, or None for a hedge
    return None


_ZERO_RE = re.compile(r"一[个座条栋辆艘块片处间所只架]?[都也]?(没有|没|不存在)|没有|不存在|并无|^无|^没|"
                      r"(?<![a-z])(none|no|zero|nothing)(?![a-z])")
_HEDGE_RE = re.compile(alternation(_HEDGES))


@functools.lru_cache(maxsize=65536)
def normalize_count(text: str) -> str | None:
    """The count an answer gives, as an integer string ("21"), or None."""
    t = prep(text)
    found = numbers(t)
    zero = _ZERO_RE.search(t)
    hedge = _HEDGE_RE.search(t)
    if zero and (not found or zero.start() <= found[0][0]) and not (hedge and hedge.start() <= zero.start()):
        return "0"  # 没有桥, 一座都没有, none
    return fmt_number(found[0][2]) if found else None


# ---- rural / urban --------------------------------------------------------------------------------
_RURAL_WORDS = ("农村", "乡村", "乡下", "村庄", "村落", "田园", "rural", "countryside", "village")
_URBAN_WORDS = ("城市", "城区", "市区", "城镇", "都市", "urban", "city", "town")
_RU_RE = re.compile(alternation((*_RURAL_WORDS, *_URBAN_WORDS)))
_NEGATED_RE = re.compile(r"(不是|并非|不属于|不像|非|not an?|not|isn't an?|isn't)\s*(一个|一片|an?\s)?\s*$")


@functools.lru_cache(maxsize=65536)
def normalize_rural_urban(text: str) -> str | None:
    """农村 / 城市 from an answer, or None."""
    t = prep(text)
    said, denied = [], []
    for m in _RU_RE.finditer(t):
        value = RURAL if m.group(0) in _RURAL_WORDS else URBAN
        (denied if _NEGATED_RE.search(t[max(0, m.start() - 8):m.start()]) else said).append(value)
    said_set = set(said)
    if len(said_set) == 1:
        return said[0]
    if not said_set and len(set(denied)) == 1:
        return URBAN if denied[0] == RURAL else RURAL
    return None


# ---- area -----------------------------------------------------------------------------------------
AREA_BINS = ("0平方米", "1-10平方米", "11-100平方米", "101-1000平方米", "1000平方米以上")
_AREA_UNITS = {"平方米": 1.0, "平米": 1.0, "m2": 1.0, "m^2": 1.0, "sqm": 1.0, "sq m": 1.0, "square meters": 1.0,
               "square meter": 1.0, "square metres": 1.0, "square metre": 1.0,
               "平方公里": 1e6, "平方千米": 1e6, "km2": 1e6, "km^2": 1e6, "square kilometers": 1e6,
               "公顷": 1e4, "ha": 1e4, "hectares": 1e4, "hectare": 1e4, "亩": 10000 / 15}
_UNIT_RE = re.compile(r"\s*(" + alternation(_AREA_UNITS) + ")")
_MORE_BEFORE = re.compile(r"(超过|大于|多于|高于|不少于|至少|more than|over|greater than|larger than|above|at least)\s*$")
_LESS_BEFORE = re.compile(r"(小于|少于|低于|不到|不超过|至多|最多|less than|under|below|smaller than|at most)\s*$")
_MORE_AFTER = re.compile(r"^\s*(以上|多|余|\+|or more)")
_LESS_AFTER = re.compile(r"^\s*(以下|以内|之内)")
_RANGE_SEP = re.compile(r"^\s*(到|至|~|～|-|–|—|and|to)\s*$")


def area_bin(value: float) -> str:
    """The RSVQA-HR bin of an area in 平方米."""
    if value <= 0:
        return AREA_BINS[0]
    for upper, name in zip((10, 100, 1000), AREA_BINS[1:4]):
        if value <= upper:
            return name
    return AREA_BINS[4]


@dataclass(frozen=True)
class Area:
    """What an answer says about an area in 平方米: a value (low == high) or a range."""

    low: float
    high: float

    @property
    def bin(self) -> str:
        """A value's bin; a range's: the bin of its middle ("10到100平方米" -> 11-100); an open
        bound's: the bin just past it ("超过1000平方米" -> 1000平方米以上)."""
        if self.low == self.high:
            return area_bin(self.low)
        if math.isinf(self.high):
            return area_bin(self.low + 0.5)
        return area_bin((self.low + self.high) / 2)


@functools.lru_cache(maxsize=65536)
def parse_area(text: str) -> Area | None:
    """The first area an answer states (a value, a range or a bound), in 平方米; None without a number."""
    t = prep(text)
    found = numbers(t)
    if not found:
        return None
    vals = []
    for start, end, v in found:
        unit = _UNIT_RE.match(t, end)
        vals.append((start, unit.end() if unit else end, v, _AREA_UNITS[unit.group(1)] if unit else None))
    start, end, v, scale = vals[0]
    if len(vals) > 1 and _RANGE_SEP.match(t[end:vals[1][0]]):  # 10到100平方米, between 10m2 and 100m2
        s2 = vals[1][3] or scale or 1.0
        return Area((v * (scale or s2)), vals[1][2] * s2)
    v *= scale or 1.0
    if _MORE_BEFORE.search(t[:start]) or _MORE_AFTER.match(t[end:]):
        return Area(v, math.inf)
    if _LESS_BEFORE.search(t[:start]) or _LESS_AFTER.match(t[end:]):
        return Area(0.0, v)
    return Area(v, v)


@functools.lru_cache(maxsize=65536)
def normalize_area(text: str) -> str | None:
    """The RSVQA-HR area bin an answer names (``AREA_BINS``), or None."""
    t = prep(text)
    hedge = _HEDGE_RE.search(t)
    a = parse_area(t)
    if a is None:
        zero = _ZERO_RE.search(t)
        return AREA_BINS[0] if zero and not (hedge and hedge.start() <= zero.start()) else None
    return a.bin


NORMALIZERS = {"yesno": normalize_yes_no, "count": normalize_count, "rural_urban": normalize_rural_urban,
               "area": normalize_area}


def normalize_answer(text: str, kind: str) -> str | None:
    """The canonical value of an answer (or label) of ``kind`` (yesno / count / rural_urban /
    area): 是/否, an integer string, 农村/城市, an area bin; None when it cannot be read."""
    if kind not in NORMALIZERS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return NORMALIZERS[kind](str(text or ""))


@functools.lru_cache(maxsize=65536)
def count_range(label: str) -> tuple[float, float] | None:
    """The counts a count label allows, ``(low, high)`` inclusive: "12" -> (12, 12); RSVQA's binned
    answers as the importer writes them: "10到100之间" / "between 10 and 100" -> (10, 100),
    "超过1000" / "more than 1000" -> (1001, inf), "少于10" / "less than 10" -> (0, 9), "1000以上"
    -> (1000, inf), "10以下" -> (0, 10); "没有" -> (0, 0). None when no count is stated."""
    t = prep(label)
    found = numbers(t)
    if not found:
        return (0.0, 0.0) if normalize_count(t) == "0" else None
    start, end, v = found[0]
    if len(found) > 1 and _RANGE_SEP.match(t[end:found[1][0]]):
        return (v, found[1][2])
    if _MORE_BEFORE.search(t[:start]):
        return (math.floor(v) + 1.0, math.inf)
    if _MORE_AFTER.match(t[end:]):
        return (v, math.inf)
    if _LESS_BEFORE.search(t[:start]):
        return (0.0, math.ceil(v) - 1.0)
    if _LESS_AFTER.match(t[end:]):
        return (0.0, v)
    return (v, v)


def has_area_unit(text: str) -> bool:
    """``text`` names an area unit (平方米, m2, 公顷 ...)."""
    return bool(_UNIT_RE.search(prep(text)))
