"""Remote-sensing VQA in Chinese: question types, what a label means and accuracy per type.

Records (the RSVQA importers write them): ``{img, prompt, label, task: "vqa", qtype}`` with
``qtype`` one of presence, comparison, count, rural_urban, area (RSVQA's ``comp`` is read as
comparison) and ``label`` 是/否, a number, 农村/城市, or an area in 平方米.

An answer is correct when it and the label normalise (``remoteglm.eval.normalize``, by the kind
the question type is answered in) to the same canonical value; a count is correct when the
answer's number lies in the label's range.

Accuracy: per type, correct / questions of that type; overall (OA), correct / all questions;
average (AA), the mean of the per-type accuracies (RSVQA reports both). An answer the normaliser
cannot read counts as wrong. A label it cannot read is a data error (load time, one line).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from remoteglm.eval.normalize import count_range, has_area_unit, normalize_answer
from remoteglm.eval.numbers import fmt_number, prep

QTYPES = ("presence", "comparison", "count", "rural_urban", "area")
QTYPE_ALIASES = {"comp": "comparison", "compare": "comparison", "rural": "rural_urban", "urban": "rural_urban",
                 "ruralurban": "rural_urban", "rural/urban": "rural_urban", "rural_urban": "rural_urban"}
# How each question type is answered.
KIND_OF = {"presence": "yesno", "comparison": "yesno", "count": "count", "rural_urban": "rural_urban", "area": "area"}


def canonical_qtype(qtype: str | None) -> str | None:
    """presence / comparison / count / rural_urban / area, RSVQA's names accepted; None when unknown."""
    if not qtype:
        return None
    q = str(qtype).strip().lower().replace("-", "_").replace(" ", "_")
    if q in QTYPES:
        return q
    return QTYPE_ALIASES.get(q)



def answer_kind(qtype: str | None, label: str) -> str | None:
    """How a question is answered: from its type, else guessed from its label; None when neither tells."""
    q = canonical_qtype(qtype)
    if q:
        return KIND_OF[q]
    lab = prep(label)
    if lab in ("是", "否", "yes", "no"):
        return "yesno"
    if lab in ("农村", "城市", "rural", "urban"):
        return "rural_urban"
    if has_area_unit(lab):
        return "area"
    if re.fullmatch(r"\d+", lab):
        return "count"
    return None


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
        return fmt_number(low)
    return f"≥{fmt_number(low)}" if math.isinf(high) else f"{fmt_number(low)}-{fmt_number(high)}"


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
