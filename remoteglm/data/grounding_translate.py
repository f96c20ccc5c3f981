"""DIOR-RSVG's English referring expressions -> Chinese, through the caption pipeline's cached
translator (:class:`~remoteglm.data.translate.Translator`) for ``importers detection``.

Each expression's translation must also name its object's category (the glossary's Chinese name)
and invent no number, colour, shape or position (``translate.check_expression``); one that still
fails after every round keeps the rule-built expression and is listed in ``failures.json``, and a
rerun asks only for those (every accepted answer is cached as it arrives).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RemoteGLMError
from .faithful import names_object
from .import_summary import ImportSummary, print_import_summary
from .jobs import failure_advice
from .llm import LLMConfig
from .translate import TranslateConfig, TranslateResult, normalise, translate_cached


@dataclass
class ExpressionConfig:
    llm: LLMConfig | None = None  # None: no translation (the rule-built Chinese expressions only)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    cache: Path = Path("data/cache/llm_cache.sqlite")
    dry_run: bool = False
    progress: bool = True


def expression_zh(translation: str) -> str:
    """A translated expression as a phrase inside the task texts: no closing full stop."""
    return re.sub(r"[\s。.！!]+$", "", translation.strip())


def described(objects) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """(the English descriptions, sentence -> (category, Chinese name)) of ``objects`` ((text, category,
    name) triples); a sentence describing objects of two categories is held to the first."""
    texts, cats = [], {}
    for text, category, name in objects:
        texts.append(text)
        cats.setdefault(normalise(text), (category, name))
    return texts, cats


def translate_expressions(cfg: ExpressionConfig, objects, s: ImportSummary) -> TranslateResult | None:
    """Translate the descriptions of ``objects`` ((text, category, Chinese name) triples); None
    without an endpoint. A dry run fills ``s.estimate`` and calls nothing."""
    if cfg.llm is None:
        return None
    texts, cats = described(objects)
    return translate_cached(texts, cfg.llm, cfg.cache, cfg.translate, s, objects=cats, dry_run=cfg.dry_run,
                            progress=cfg.progress)


def translated(tr: TranslateResult | None, text: str, name: str) -> str | None:
    """The Chinese expression for an object described by ``text`` whose category is ``name``, or None
    (not translated: the rule-built expression stays)."""
    zh = tr.translations.get(normalise(text)) if tr else None
    return expression_zh(zh) if zh and names_object(zh, name) else None


def failures(tr: TranslateResult | None, where: dict[str, list[str]]) -> list[dict]:
    """``failures.json`` entries: each expression still failing, how many objects it describes and
    in which splits (``where``: normalised sentence -> the split of each object)."""
    if tr is None or not (tr.failed or tr.aborted):
        return []
    return [{"expression": en, "problem": problem, "reply_sample": tr.samples.get(en, ""),
             "objects": len(where.get(en, [])), "splits": list(dict.fromkeys(where.get(en, [])))}
            for en, problem in tr.failed.items()]


def raise_unfinished(s: ImportSummary, tr: TranslateResult, found: list[dict], failures_file: Path) -> None:
    """One line (after the summary) when expressions are still not translated after every round
    (their records keep ``s.kept_on_failure``)."""
    if not found:
        return
    print_import_summary(s)
    raise RemoteGLMError(
        f"{len(tr.failed) or 'some'} distinct expressions still not translated after every round (their records keep "
        f"{s.kept_on_failure}; each is listed in {failures_file}): "
        + failure_advice(tr.aborted_kind if tr.aborted else "", tr.aborted, [f["problem"] for f in found]))
