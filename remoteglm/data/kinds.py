"""The instruction kinds (the ``task`` field of a fine-tune record), their groups, and the
``--tasks`` / ``--mix`` options that choose and weight them::

    caption       one sentence                     (build.py: one record per distinct sentence)
    description   the checked paragraph            (the rewrite step)
    classify      the scene class                  (build.py, instructions.CLASSIFY_PROMPT)
    presence      是/否 questions                   (facts.py, no LLM call)
    count         how many, where a caption states a number (facts.py, no LLM call)
    attribute     colour / shape / position, where a caption states it (facts.py, no LLM call)
    conversation  2-4 turns built from the above, phrased by the LLM (phrasing.py, tasks.py)
"""

from __future__ import annotations

import math
import random

from ..errors import RemoteGLMError

KINDS = ("caption", "description", "classify", "presence", "count", "attribute", "conversation")
LEGACY = ("caption", "classify")  # what the fine-tune files hold without --tasks
MADE_HERE = ("presence", "count", "attribute", "conversation")
GROUPS = {"vqa": ("presence", "count", "attribute"), "cls": ("classify",), "conv": ("conversation",),
          "desc": ("description",), "all": KINDS}


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
