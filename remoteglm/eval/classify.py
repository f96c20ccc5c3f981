"""Scene classification by prompting (the prompt: ``remoteglm.data.instructions.classify_prompt``):
answer parsing, the class list of a prompt, accuracy and confusion matrix.

A chat model rarely answers with the bare class name ("这是一片森林。", "森林区域", "forest"), so
an answer is mapped to a class in three steps, first hit wins:

1. exact: the answer, without punctuation, spaces and filler ("这是", "类别：", "场景" ...), is a
   class name;
2. synonym: it is a known synonym of one class (Chinese near-synonyms, the English class id or
   its glossary term, e.g. 树林 / forest -> 森林);
3. contains: class names and synonyms of two or more characters (English: whole words) found
   inside the answer, longest match first (so "中密度住宅区" is not also read as "住宅区"); one
   class -> that class; two -> the first mentioned; three or more -> unparsed (the model echoed
   the class list).

An answer that matches nothing counts as wrong ("unparsed" column of the confusion matrix).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

UNPARSED = "unparsed"

# Chinese near-synonyms of the project's class names (remoteglm.data.CLASS_NAMES_ZH and the sample).
SYNONYMS_ZH: dict[str, tuple[str, ...]] = {
    "农田": ("耕地", "农地", "田地", "农业区", "农业用地", "庄稼地", "farmland", "agricultural"),
    "飞机": ("客机", "航空器"),
    "棒球场": ("棒球内场",),
    "海滩": ("沙滩", "海岸", "海边"),
    "建筑物": ("建筑", "楼房", "大楼"),
    "灌木丛": ("灌木", "灌丛"),
    "密集住宅区": ("高密度住宅区", "密集居民区"),
    "森林": ("树林", "林地", "林区", "丛林"),
    "高速公路": ("高速路", "快速路"),
    "高尔夫球场": ("高尔夫场",),
    "港口": ("码头", "海港", "港湾"),
    "十字路口": ("路口", "交叉口", "交叉路口"),
    "中密度住宅区": ("中等密度住宅区",),
    "移动房屋区": ("移动房屋公园", "活动房屋区"),
    "立交桥": ("天桥", "高架路口"),
    "停车场": ("停车区",),
    "河流": ("河道", "江河", "河"),
    "跑道": ("机场跑道",),
    "稀疏住宅区": ("低密度住宅区", "稀疏居民区"),
    "储油罐": ("油罐", "储罐", "储存罐"),
    "网球场": (),
    "住宅区": ("居民区", "居住区", "住宅", "小区"),
    "机场": ("航站楼",),
    "草地": ("草坪", "草原", "牧场"),
    "海洋": ("大海", "海面", "海"),
    "工业区": ("工厂", "厂区"),
    "裸地": ("荒地", "空地"),
    "桥梁": ("桥",),
    "城市中心": ("市中心",),
    "商业区": ("商圈",),
    "山地": ("山区", "山脉", "山"),
    "操场": ("运动场",),
    "池塘": ("水塘",),
    "火车站": ("车站",),
    "度假区": ("度假村",),
    "广场": (),
    "体育场": ("体育馆",),
    "高架桥": ("高架",),
    "湿地": ("沼泽", "沼泽地", "滩涂", "盐沼"),
    "道路": ("公路", "马路", "路"),
}

_FILLER = re.compile(r"^(答案|回答|答|类别|场景类别|场景类型|场景|类型)?(是|为)?[:：]?|"
                     r"^(这|该|此|图中|图像|这张图像|这张图片|这幅图像)?(是|为|属于)(一[片个处座条块])?|"
                     r"(场景|类别|类|区域|地区)$")
_NONWORD = re.compile(r"[\W_]+")


def _clean(text: str) -> str:
    t = _NONWORD.sub("", text).lower()
    for _ in range(3):  # strip nested filler like "答：这是一片森林场景"
        t2 = _FILLER.sub("", t)
        if t2 == t:
            break
        t = t2
    return t


@dataclass
class ClassParser:
    """Maps free-form answers to one of ``classes`` (Chinese names, the dataset's order)."""

    classes: Sequence[str]
    english: dict[str, str] = field(default_factory=dict)  # extra English id -> Chinese class

    def __post_init__(self):
        from remoteglm.data.glossary import CLASS_NAMES_ZH, GLOSSARY

        self.classes = list(self.classes)
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"duplicate class names in {self.classes}")
        cls = set(self.classes)
        self.aliases: dict[str, str] = {}  # alias (lower) -> class
        for c in self.classes:
            for s in SYNONYMS_ZH.get(c, ()):
                self.aliases.setdefault(s.lower(), c)
        english = dict(self.english)
        for table in CLASS_NAMES_ZH.values():
            for en, zh in table.items():
                english.setdefault(en, zh)
        for en, zh in GLOSSARY.items():
            english.setdefault(en, zh)
        for en, zh in english.items():
            if zh in cls:
                self.aliases.setdefault(en.lower(), zh)
                self.aliases.setdefault(en.lower().replace(" ", ""), zh)
        for c in self.classes:  # a class name is never an alias of another class
            self.aliases.pop(c.lower(), None)
        # longest first, so "中密度住宅区" wins over "住宅区" and "海滩" over "海"
        self._terms = sorted({c.lower(): c for c in self.classes} | self.aliases, key=len, reverse=True)
        self._lookup = {c.lower(): c for c in self.classes} | self.aliases

    def parse(self, answer: str) -> tuple[str | None, str]:
        """``(class or None, how)`` with how in exact / synonym / contains / ambiguous / none."""
        raw = _NONWORD.sub("", answer or "").lower()
        cleaned = _clean(answer or "")
        for t in (raw, cleaned):
            for c in self.classes:
                if t == c.lower():
                    return c, "exact"
        for t in (raw, cleaned):
            if t in self.aliases:
                return self.aliases[t], "synonym"
        found = self._mentions(_NONWORD.sub(" ", answer or "").lower())
        distinct = list(dict.fromkeys(c for _, c in found))
        if len(distinct) == 1:
            return distinct[0], "contains"
        if len(distinct) == 2:
            return distinct[0], "contains"
        if len(distinct) >= 3:
            return None, "ambiguous"
        return None, "none"

    def _mentions(self, text: str) -> list[tuple[int, str]]:
        taken = [False] * len(text)
        found: list[tuple[int, str]] = []
        for term in self._terms:
            if len(term) < 2:
                continue  # one character (路, 河, 海) inside a longer answer is too weak a sign
            ascii_term = term.isascii()
            start = 0
            while (i := text.find(term, start)) >= 0:
                start = i + 1
                if any(taken[i:i + len(term)]):
                    continue
                end = i + len(term)
                if ascii_term:  # whole English words only ("sea" in "seashore" is no mention), plurals allowed
                    for suffix in ("es", "s"):
                        if text.startswith(suffix, end) and not _alnum_at(text, end + len(suffix)):
                            end += len(suffix)
                            break
                    if _alnum_at(text, i - 1) or _alnum_at(text, end):
                        continue
                for k in range(i, end):
                    taken[k] = True
                found.append((i, self._lookup[term]))
        found.sort()
        return found


def _alnum_at(text: str, i: int) -> bool:
    return 0 <= i < len(text) and text[i].isascii() and text[i].isalnum()


def classes_in_prompt(prompt: str) -> list[str]:
    """The class list written in a classification prompt ("...：农田、住宅区、森林？..."): the
    longest run of "、"-separated names, or [] when the prompt lists none."""
    best: list[str] = []
    for m in re.finditer(r"[^\s：:，,。？?（）()「」“”\"']+(?:、[^\s：:，,。？?（）()「」“”\"'、]+)+", prompt):
        items = [x.strip() for x in m.group(0).split("、") if x.strip()]
        if len(items) > len(best):
            best = items
    return best


@dataclass
class ClassificationResult:
    classes: list[str]
    n: int
    correct: int
    parsed: int
    per_class: dict[str, dict]
    confusion: list[list[int]]  # rows: true class; columns: classes + [UNPARSED]
    match_kinds: dict[str, int]

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "n": self.n, "correct": self.correct, "parsed": self.parsed,
                "match_kinds": self.match_kinds, "per_class": self.per_class,
                "confusion": {"rows": self.classes, "columns": self.classes + [UNPARSED], "matrix": self.confusion}}


def evaluate_classification(truth: Sequence[str], predicted: Iterable[str | None], classes: Sequence[str],
                            kinds: Iterable[str] | None = None) -> ClassificationResult:
    """Accuracy overall and per true class, and the confusion matrix (None -> "unparsed")."""
    classes = list(classes)
    col = {c: i for i, c in enumerate(classes)}
    pred = list(predicted)
    if len(pred) != len(truth):
        raise ValueError(f"{len(truth)} true labels but {len(pred)} predictions")
    unknown = sorted({t for t in truth if t not in col})
    if unknown:
        raise ValueError(f"true class {unknown[0]!r} is not in the class list")
    matrix = [[0] * (len(classes) + 1) for _ in classes]
    for t, p in zip(truth, pred):
        matrix[col[t]][col.get(p, len(classes)) if p is not None else len(classes)] += 1
    per_class = {}
    for c in classes:
        row = matrix[col[c]]
        n = sum(row)
        if n:
            per_class[c] = {"n": n, "correct": row[col[c]], "accuracy": row[col[c]] / n}
    correct = sum(matrix[i][i] for i in range(len(classes)))
    return ClassificationResult(classes, len(truth), correct, sum(p is not None for p in pred), per_class, matrix,
                                dict(Counter(kinds)) if kinds is not None else {})
