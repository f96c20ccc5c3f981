"""Free English texts of the instruction sets (RSICap's ~60-word captions, RSIEval's questions and
answers, RS-GPT4V's descriptions and conversation turns) through the cached, checked sentence
translator of ``translate.py``.

A text is cut into sentences; each sentence is translated and checked on its own (the glossary,
the faithfulness checks, the numbers), cached as it arrives and shared by every text that has it;
the text's translation is its sentences' translations in order. A text with a sentence still failing
after every round has no translation (its record is left out and listed in ``failures.json``): no
half-translated paragraph is ever written. A text may hold boxes: the pieces between them are
translated and the boxes become ``<box>`` markers (``pieces`` / ``text_zh``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RemoteGLMError
from .import_summary import IMPORT_VERSION, ImportSummary, print_import_summary, write_if_changed
from .jobs import build_stamp, failure_advice, write_failures
from .llm import LLMConfig
from .referring import BOX
from .translate import TranslateConfig, TranslateResult, normalise, translate_cached

# A sentence ends at . ! ? (and a closing quote or bracket) before a space and a capital or digit.
_END = re.compile(r"[.!?]+[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREVIATIONS = {"e.g", "i.e", "etc", "approx", "no", "st", "dr", "mr", "mrs", "vs", "fig", "u.s", "ca"}
_LETTERS = re.compile(r"[A-Za-z]")


@dataclass
class TextConfig:
    """The endpoint and translation settings of an importer that translates free texts."""

    llm: LLMConfig = field(default_factory=LLMConfig)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    cache: Path = Path("data/cache/llm_cache.sqlite")
    dry_run: bool = False
    progress: bool = True


def split_sentences(text: str) -> list[str]:
    """The sentences of an English text, in order ("e.g." and the like do not end one)."""
    text = re.sub(r"\s+", " ", text).strip()
    out, start = [], 0
    for m in _END.finditer(text):
        word = text[start:m.start() + 1].rsplit(" ", 1)[-1].rstrip(".!?").lower()
        if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
            continue
        out.append(text[start:m.end()].strip())
        start = m.end()
    if text[start:].strip():
        out.append(text[start:].strip())
    return out


def pieces(text: str, boxes: re.Pattern | None = None) -> list[str]:
    """The texts to translate in ``text``: its sentences, and with a ``boxes`` pattern (one without
    groups) those of each piece between two boxes (a piece without a letter, such as ", ", is not
    translated)."""
    parts = boxes.split(text) if boxes is not None else [text]
    return [s for part in parts if _LETTERS.search(part) for s in split_sentences(part)]


def translate_texts(cfg: TextConfig, texts: list[str], s: ImportSummary) -> TranslateResult | None:
    """Translate the sentences of ``texts`` (``pieces`` already taken); None for a dry run, which
    fills ``s.estimate`` and calls nothing."""
    sentences = [x for t in texts for x in split_sentences(t)]
    return translate_cached(sentences, cfg.llm, cfg.cache, cfg.translate, s, dry_run=cfg.dry_run,
                            progress=cfg.progress)


def text_zh(tr: TranslateResult, text: str, boxes: re.Pattern | None = None) -> str | None:
    """The Chinese of ``text`` (its sentences' translations joined; each box a BOX marker, the piece
    before it without its closing full stop), or None while one of its sentences is not translated."""
    parts = boxes.split(text) if boxes is not None else [text]
    out = []
    for k, part in enumerate(parts):
        if _LETTERS.search(part):
            zh = [tr.translations.get(normalise(x)) for x in split_sentences(part)]
            if None in zh:
                return None
            joined = "".join(zh)
            out.append(re.sub(r"[\s。.]+$", "", joined) if k + 1 < len(parts) else joined)
        else:  # no letter (", " between boxes, a closing "."): punctuation dropped, so boxes side by side are one group
            out.append(re.sub(r"^[\s.,;:]+|[\s.,;:]+$", "", part).replace("?", "？"))
        if k + 1 < len(parts):
            out.append(BOX)
    return "".join(out)


def untranslated(tr: TranslateResult, text: str, boxes: re.Pattern | None = None) -> list[tuple[str, str]]:
    """(sentence, problem) of each sentence of ``text`` still failing."""
    return [(x, tr.failed.get(normalise(x), tr.aborted or "not translated")) for x in pieces(text, boxes)
            if normalise(x) not in tr.translations]


def finish_import(s: ImportSummary, out_dir: Path, name: str, records: dict, outputs: dict, check, failed: list,
                  tr, what: str) -> ImportSummary:
    """The end of a free-text import: write ``outputs`` (files left alone where unchanged), register
    the split (``check``), list ``failed`` texts in ``failures.json``, and raise one line while any
    of them (``what``: "texts", "conversations") is still untranslated; ``s`` otherwise."""
    if outputs:
        write_if_changed(s, out_dir, build_stamp(IMPORT_VERSION, name, records, str(out_dir.absolute())), outputs)
        check.register()
    failures_file = write_failures(out_dir, failed, s.outputs)
    if failed:
        print_import_summary(s)
        raise RemoteGLMError(
            f"{len(failed)} {what} still not translated after every round (their records are left out; each is "
            f"listed in {failures_file}): " + failure_advice(tr.aborted_kind if tr.aborted else "", tr.aborted,
                                                             [x["problem"] for f in failed for x in f["sentences"]]))
    return s
