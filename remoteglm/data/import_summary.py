"""What both importers write besides their records, and what they print: the summary of an import
and the atomic, skip-if-unchanged write of its files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..io import drop_stale_temps, write_json_atomic, write_text_atomic
from .jobs import STAMP, say
from .llm import Usage

IMPORT_VERSION = "import-v1"  # bump when what the importers write changes: outputs are rebuilt


@dataclass
class ImportSummary:
    name: str
    kind: str  # "vqa", "classify", "grounding" or "text" (free texts sentence by sentence: paragraphs.py)
    items: int = 0  # questions / images imported
    distinct: int = 0
    cache_hits: int = 0
    translated: int = 0
    failed: int = 0
    left_out: int = 0
    usage: Usage = field(default_factory=Usage)
    outputs: list[Path] = field(default_factory=list)
    split_counts: dict = field(default_factory=dict)  # split -> {"images", "records"}
    estimate: dict | None = None
    seconds: float = 0.0
    up_to_date: bool = False
    detail: str = ""  # one line about the source (split source, classes)
    kept_on_failure: str = "the rule-built Chinese expression"  # grounding: what an untranslated expression's records say
    quick: str = ""  # the one line of a rerun that found everything up to date before reading anything


def records_text(records: list) -> str:
    """A JSON list with one item a line: the same JSON as ``write_json_atomic`` writes, made by the
    C encoder (indenting takes the pure-Python one: 2.3 times as long for DIOR-RSVG's records)."""
    if not records:
        return "[]\n"
    return "[\n" + ",\n".join(map(json.JSONEncoder(ensure_ascii=False).encode, records)) + "\n]\n"


def write_if_changed(s: ImportSummary, out_dir: Path, stamp: str, files: dict[Path, object]) -> None:
    """Write ``files`` (path -> JSON object, or its text: :func:`records_text`) atomically unless the
    last build wrote the same ones."""
    stamp_file, counts_file = out_dir / STAMP, out_dir / ".split_counts.json"
    if (all(p.exists() for p in files) and stamp_file.exists()
            and stamp_file.read_text(encoding="utf-8").strip() == stamp):
        s.up_to_date = True
        drop_stale_temps(out_dir)  # nothing is written, so the writes do not do it
        s.outputs.extend(files)
        return
    for p, obj in files.items():
        s.outputs.append(write_text_atomic(p, obj) if isinstance(obj, str) else write_json_atomic(p, obj))
    write_json_atomic(counts_file, s.split_counts)
    write_text_atomic(stamp_file, stamp + "\n")


def print_import_summary(s: ImportSummary) -> None:
    if s.quick:
        say(s.quick)
        return
    if s.estimate is not None:
        e = s.estimate
        what = {"grounding": "English expressions", "text": "English sentences"}.get(s.kind, "questions")
        say(f"dry run: {s.name}, {s.items} {'questions' if s.kind == 'vqa' else 'images'}, {s.distinct} "
            f"distinct {what}, {s.cache_hits} cached")
        say(f"  would translate {e['sentences']} {what} in ~{e['calls']} calls, "
             f"~{e['tokens_in']:,} tokens in / ~{e['tokens_out']:,} out (rough); "
            + {"grounding": "the rule-built records need no LLM", "text": "closed answers need no LLM"}.get(
                s.kind, "answers need no LLM"))
        return
    if s.kind == "text":
        say(f"translate: {s.name}, {s.distinct} distinct English sentences: {s.cache_hits} from cache, "
            f"{s.translated} new, {s.failed} failed (their texts' records are left out)")
        say(f"LLM: {s.usage.calls} calls ({s.usage.retries} retries), tokens in {s.usage.tokens_in:,} / "
            f"out {s.usage.tokens_out:,}")
    elif s.kind == "vqa" or s.distinct:
        u = s.usage
        say(f"translate: {s.name}, {s.distinct} distinct English expressions: {s.cache_hits} from cache, "
            f"{s.translated} new, {s.failed} failed (those keep {s.kept_on_failure})" if s.kind == "grounding" else
            f"translate: {s.name}, {s.items} questions, {s.distinct} distinct: {s.cache_hits} from cache, "
             f"{s.translated} new, {s.failed} failed; answers by rule (no LLM)")
        say(f"LLM: {u.calls} calls ({u.retries} retries), tokens in {u.tokens_in:,} / out {u.tokens_out:,}")
    if s.detail:
        say(s.detail)
    what = "questions" if s.kind == "vqa" else "records"
    for split, c in s.split_counts.items():
        say(f"  {split}: {c['images']} images, {c['records']} {what}")
    verb = "up to date" if s.up_to_date else "wrote"
    for p in s.outputs:
        say(f"{verb} {p}" if p.name != "failures.json" else f"wrote {p} (what is still missing, and why)")
    say(f"took {s.seconds:.1f} s")
