"""Remote-sensing VQA in Chinese: answer normalisation and accuracy per question type.

Records (the RSVQA importers write them): ``{img, prompt, label, task: "vqa", qtype}`` with
``qtype`` one of presence, comparison, count, rural_urban, area (RSVQA's ``comp`` is read as
comparison) and ``label`` 是/否, a number, 农村/城市, or an area in 平方米.

Every answer and every label go through the same normaliser for the question's kind, and an
answer is correct when both give the same canonical value (a count: the answer's number lies in
the label's range):

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

Accuracy: per type, correct / questions of that type; overall (OA), correct / all questions;
average (AA), the mean of the per-type accuracies (RSVQA reports both). An answer the normaliser
cannot read counts as wrong. A label it cannot read is a data error (load time, one line).
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

QTYPES = ("presence", "comparison", "count", "rural_urban", "area")
QTYPE_ALIASES = {"comp": "comparison", "compare": "comparison", "rural": "rural_urban", "urban": "rural_urban",
                 "ruralurban": "rural_urban", "rural/urban": "rural_urban", "rural_urban": "rural_urban"}
# How each question type is answered.
KIND_OF = {"presence": "yesno", "comparison": "yesno", "count": "count", "rural_urban": "rural_urban", "area": "area"}
KINDS = ("yesno", "count", "rural_urban", "area")
YES, NO = "是", "否"
RURAL, URBAN = "农村", "城市"


def _prep(text: str) -> str:
    """NFKC (full-width digits and punctuation to ASCII, ㎡ to m2), lower case, no outer space."""
    return unicodedata.normalize("NFKC", str(text or "")).lower().strip()


def canonical_qtype(qtype: str | None) -> str | None:
    """presence / comparison / count / rural_urban / area, RSVQA's names accepted; None when unknown."""
    if not qtype:
        return None
    q = str(qtype).strip().lower().replace("-", "_").replace(" ", "_")
    if q in QTYPES:
        return q
    return QTYPE_ALIASES.get(q)


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


def _alternation(words: Iterable[str]) -> str:
    parts = []
    for w in sorted(set(words), key=len, reverse=True):
        e = re.escape(w)
        parts.append(rf"(?<![a-z]){e}(?![a-z])" if w[:1].isascii() else e)
    return "|".join(parts)


_YESNO_RE = re.compile(_alternation((*_HEDGES, *_SKIP, *_NO, *_YES, *_EN_NO, *_EN_YES)))
_YESNO_OF = {**{w: None for w in _HEDGES}, **{w: "skip" for w in _SKIP}, **{w: NO for w in (*_NO, *_EN_NO)},
             **{w: YES for w in (*_YES, *_EN_YES)}}


@functools.lru_cache(maxsize=65536)
def normalize_yes_no(text: str) -> str | None:
    """是 / 否 from an answer, or None (a hedge, or no decisive word)."""
    for m in _YESNO_RE.finditer(_prep(text)):
        verdict = _YESNO_OF[m.group(0)]
        if verdict == "skip":
            continue
        return verdict  # 是 / 否, or None for a hedge
    return None


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
    t = _prep(text)
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


_ZERO_RE = re.compile(r"一[个座条栋辆艘块片处间所只架]?[都也]?(没有|没|不存在)|没有|不存在|并无|^无|^没|"
                      r"(?<![a-z])(none|no|zero|nothing)(?![a-z])")
_HEDGE_RE = re.compile(_alternation(_HEDGES))


def _fmt_number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


@functools.lru_cache(maxsize=65536)
def normalize_count(text: str) -> str | None:
    """The count an answer gives, as an integer string ("21"), or None."""
    t = _prep(text)
    found = numbers(t)
    zero = _ZERO_RE.search(t)
    hedge = _HEDGE_RE.search(t)
    if zero and (not found or zero.start() <= found[0][0]) and not (hedge and hedge.start() <= zero.start()):
        return "0"  # 没有桥, 一座都没有, none
    return _fmt_number(found[0][2]) if found else None


# ---- rural / urban --------------------------------------------------------------------------------
_RURAL_WORDS = ("农村", "乡村", "乡下", "村庄", "村落", "田园", "rural", "countryside", "village")
_URBAN_WORDS = ("城市", "城区", "市区", "城镇", "都市", "urban", "city", "town")
_RU_RE = re.compile(_alternation((*_RURAL_WORDS, *_URBAN_WORDS)))
_NEGATED_RE = re.compile(r"(不是|并非|不属于|不像|非|not an?|not|isn't an?|isn't)\s*(一个|一片|an?\s)?\s*$")


@functools.lru_cache(maxsize=65536)
def normalize_rural_urban(text: str) -> str | None:
    """农村 / 城市 from an answer, or None."""
    t = _prep(text)
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
_UNIT_RE = re.compile(r"\s*(" + _alternation(_AREA_UNITS) + ")")
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
    t = _prep(text)
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
    t = _prep(text)
    hedge = _HEDGE_RE.search(t)
    a = parse_area(t)
    if a is None:
        zero = _ZERO_RE.search(t)
        return AREA_BINS[0] if zero and not (hedge and hedge.start() <= zero.start()) else None
    return a.bin


# ---- one entry point ------------------------------------------------------------------------------
NORMALIZERS = {"yesno": normalize_yes_no, "count": normalize_count, "rural_urban": normalize_rural_urban,
               "area": normalize_area}


def answer_kind(qtype: str | None, label: str) -> str | None:
    """How a question is answered: from its type, else guessed from its label; None when neither tells."""
    q = canonical_qtype(qtype)
    if q:
        return KIND_OF[q]
    lab = _prep(label)
    if lab in ("是", "否", "yes", "no"):
        return "yesno"
    if lab in ("农村", "城市", "rural", "urban"):
        return "rural_urban"
    if _UNIT_RE.search(lab):
        return "area"
    if re.fullmatch(r"\d+", lab):
        return "count"
    return None


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
    t = _prep(label)
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


def expected_value(label: str, kind: str) -> str | None:
    """What a label means, canonically: as ``normalize_answer``, except that a count label that is
    a range reads "10-100", "≥1001" (more than 1000) or "0-9" (less than 10)."""
    if kind != "count":
        return normalize_answer(label, kind)
    r = count_range(label)
    if r is None:
        return None
    low, high = r
    if low == high:
        return _fmt_number(low)
    return f"≥{_fmt_number(low)}" if math.isinf(high) else f"{_fmt_number(low)}-{_fmt_number(high)}"


def matches(normalized: str | None, label: str, kind: str) -> bool:
    """A normalised answer is right for ``label``: the same value, or for a count a number inside
    the label's range. None (unreadable) is never right."""
    if normalized is None:
        return False
    if kind == "count":
        r = count_range(label)
        return r is not None and r[0] <= float(normalized) <= r[1]
    return normalized == normalize_answer(label, kind)


def is_correct(answer: str, label: str, kind: str) -> bool:
    """The answer normalises to the label's value (for a count: into its range); an unreadable
    answer is wrong."""
    return matches(normalize_answer(answer, kind), label, kind)


@dataclass
class VQAResult:
    n: int
    correct: int
    parsed: int
    per_type: dict[str, dict]

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def average_accuracy(self) -> float:
        accs = [t["accuracy"] for t in self.per_type.values()]
        return sum(accs) / len(accs) if accs else 0.0

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "average_accuracy": self.average_accuracy, "n": self.n,
                "correct": self.correct, "parsed": self.parsed, "per_type": self.per_type}


def type_order(qtypes: Iterable[str]) -> list[str]:
    """The known types in ``QTYPES`` order, then the others alphabetically."""
    seen = set(qtypes)
    return [q for q in QTYPES if q in seen] + sorted(seen - set(QTYPES))


def evaluate_vqa(qtypes: Sequence[str], labels: Sequence[str], answers: Sequence[str],
                 kinds: Sequence[str] | None = None) -> tuple[VQAResult, list[dict]]:
    """Accuracy overall and per question type. ``kinds`` default to ``answer_kind(qtype, label)``.
    Returns the result and, per question, ``{"normalized", "expected", "correct"}``."""
    if not len(qtypes) == len(labels) == len(answers):
        raise ValueError(f"{len(qtypes)} types, {len(labels)} labels and {len(answers)} answers")
    kinds = list(kinds) if kinds is not None else [answer_kind(q, lab) for q, lab in zip(qtypes, labels)]
    qtypes = [canonical_qtype(q) or q for q in qtypes]  # RSVQA's "comp" is comparison
    per_q, by_type = [], {}
    for q, lab, ans, kind in zip(qtypes, labels, answers, kinds):
        if kind is None:
            raise ValueError(f"cannot tell how a question of type {q!r} with label {lab!r} is answered")
        want = expected_value(lab, kind)
        if want is None:
            raise ValueError(f"label {lab!r} is not a {kind} answer")
        got = normalize_answer(ans, kind)
        ok = matches(got, lab, kind)
        per_q.append({"normalized": got, "expected": want, "correct": ok})
        t = by_type.setdefault(q, {"n": 0, "correct": 0, "parsed": 0, "answers": Counter()})
        t["n"] += 1
        t["correct"] += ok
        t["parsed"] += got is not None
        t["answers"][got if got is not None else "unparsed"] += 1
    per_type = {}
    for q in type_order(by_type):
        t = by_type[q]
        per_type[q] = {"n": t["n"], "correct": t["correct"], "parsed": t["parsed"], "accuracy": t["correct"] / t["n"],
                       "answers": dict(t["answers"].most_common(10))}
    result = VQAResult(len(per_q), sum(p["correct"] for p in per_q), sum(p["normalized"] is not None for p in per_q),
                       per_type)
    return result, per_q
