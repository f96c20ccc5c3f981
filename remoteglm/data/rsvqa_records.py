"""RSVQA -> Chinese VQA fine-tune files: the questions through the caption pipeline's cached
translator (:class:`~remoteglm.data.translate.Translator`), the answers by rule (``rsvqa.py``).

Records: ``{"img", "prompt": 中文问题, "label": 中文答案, "task": "vqa", "qtype", "qid"}`` (val/test
also ``question_en``, ``answer_en``), one file per official split, written atomically and not
rewritten when nothing changed; each image keeps the split its content has in the other builders'
outputs (:mod:`~remoteglm.data.splits`).
"""

from __future__ import annotations

import shlex
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RemoteGLMError
from ..io import check_writable
from .build import check_no_leak, image_path
from .cache import ResultCache
from .import_summary import IMPORT_VERSION, ImportSummary, print_import_summary, write_if_changed
from .jobs import build_stamp, failure_advice, say, write_failures
from .llm import LLMClient, LLMConfig
from .rsvqa import VQASet, load_rsvqa, question_zh
from .splits import Registry, Source, SplitCheck, default_registry
from .translate import PROMPT_VERSION, TranslateConfig, Translator, distinct_sentences, normalise


@dataclass
class RSVQAConfig:
    root: Path
    images: Path | None = None
    name: str | None = None
    out_dir: Path | None = None  # default data/<name>_zh
    cache: Path = Path("data/cache/llm_cache.sqlite")
    llm: LLMConfig = field(default_factory=LLMConfig)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    dry_run: bool = False
    limit: int | None = None  # first N images of each split
    progress: bool = True
    splits: Path | None = None  # the split registry (splits.py); default: splits.json beside out_dir
    command: str = ""  # the command line that runs this import


def vqa_records(vs: VQASet, translations: dict[str, str], out_dir: Path) -> dict[str, list[dict]]:
    """Fine-tune records per split for the items whose question is translated."""
    out: dict[str, list[dict]] = {split: [] for split in vs.splits}
    for it in vs.items:
        zh = translations.get(normalise(it.question))
        if zh is None:
            continue
        rec = {"img": image_path(vs.image_dir, it.filename, out_dir), "prompt": question_zh(zh), "label": it.answer_zh,
               "task": "vqa", "qtype": it.qtype, "qid": it.qid}
        if it.split != "train":
            rec.update(question_en=it.question, answer_en=it.answer)
        out[it.split].append(rec)
    for split in vs.splits:  # no image of any other split in train (test_phili included)
        if split != "train":
            check_no_leak({"train": out.get("train", []), "val": out[split]})
    return out


def _vqa_failures(vs: VQASet, tr) -> list[dict]:
    by_q: dict[str, dict] = {}
    for it in vs.items:
        k = normalise(it.question)
        if k in tr.failed:
            f = by_q.setdefault(k, {"question": it.question, "problem": tr.failed[k], "reply_sample": tr.samples.get(k, ""),
                                    "questions": 0, "splits": [], "first_qids": []})
            f["questions"] += 1
            if it.split not in f["splits"]:
                f["splits"].append(it.split)
            if len(f["first_qids"]) < 5:
                f["first_qids"].append(it.qid)
    return list(by_q.values())


def import_rsvqa(cfg: RSVQAConfig) -> ImportSummary:
    """RSVQA -> Chinese VQA fine-tune files; raises RemoteGLMError (one line) on bad input or unfinished work.

    Like the caption pipeline: every answer is cached as it arrives, a rerun asks only for what is
    missing and a finished one makes no call; questions still failing after every round are left out
    of the files, listed in ``failures.json``, and the error says whether a rerun can help."""
    t0 = time.time()
    if cfg.limit is not None and cfg.limit < 1:
        raise RemoteGLMError(f"--limit must be at least 1 (got {cfg.limit})")
    reg = None if cfg.dry_run else Registry(cfg.splits or default_registry(cfg.out_dir))
    vs = load_rsvqa(cfg.root, cfg.name, cfg.images, cfg.limit)
    for w in vs.warnings:
        say(f"warning: {w}")
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("data") / f"{vs.name}_zh"
    check_writable(out_dir, "--out_dir")
    splits = None
    if reg is not None:  # RSVQA's splits are official: checked against the other builders' before any work
        command = cfg.command or shlex.join(["python", "-m", "remoteglm.data.importers", "rsvqa", "--root",
                                             str(cfg.root), "--out_dir", str(out_dir)])
        splits = SplitCheck(reg, Source(out_dir, f"{vs.name} questions", command), vs.items,
                            lambda it: vs.image_dir / it.filename, lambda it: True, say)
        vs.items = splits.kept
    s = ImportSummary(vs.name, "vqa", items=len(vs.items), left_out=sum(vs.left_out.values()))
    cache = ResultCache(cfg.cache, readonly=cfg.dry_run)
    try:
        translator = Translator(None, cache, cfg.translate, cfg.llm.model)
        distinct = distinct_sentences(vs.questions())
        if cfg.dry_run:
            s.distinct, s.cache_hits, s.estimate = translator.plan(distinct)
            return s
        client = LLMClient(cfg.llm)  # connects only when something is not cached
        translator.client = client
        s.usage = client.usage
        tr = translator.run(vs.questions(), progress=cfg.progress)
    finally:
        cache.close()
    s.distinct, s.cache_hits, s.translated, s.failed = tr.distinct, tr.cache_hits, tr.new, len(tr.failed)
    records = vqa_records(vs, tr.translations, out_dir)
    done = sum(len(r) for r in records.values())
    for split in vs.splits:
        s.split_counts[split] = {"images": len({r["img"] for r in records[split]}), "records": len(records[split])}
    failures = _vqa_failures(vs, tr) if (tr.failed or tr.aborted) else []
    if done:
        files: dict[Path, object] = {out_dir / f"{vs.name}_{split}.json": records[split] for split in vs.splits}
        used = Counter(normalise(it.question) for it in vs.items)
        files[out_dir / f"{vs.name}_questions_zh.json"] = {
            "dataset": vs.name, "model": cfg.llm.model, "prompt_version": PROMPT_VERSION,
            "questions": [{"en": en, "zh": question_zh(tr.translations[en]), "count": n}
                          for en, n in used.items() if en in tr.translations]}
        stamp = build_stamp(IMPORT_VERSION, vs.name, cfg.llm.model, str(vs.image_dir.absolute()), str(out_dir.absolute()),
                       [(it.qid, it.split, it.filename, it.question, it.answer, it.qtype) for it in vs.items],
                       sorted((k, v) for k, v in tr.translations.items() if k in used))
        write_if_changed(s, out_dir, stamp, files)
        splits.register()
    failures_file = write_failures(out_dir, failures, s.outputs)
    s.seconds = time.time() - t0
    if failures or not done:
        print_import_summary(s)
        what = f"{done} of {len(vs.items)} questions written" if done else "no question complete, nothing written"
        raise RemoteGLMError(
            f"{len(tr.failed) or 'some'} distinct questions still not done after every round ({what}; each is listed in "
            f"{failures_file}): " + failure_advice(tr.aborted_kind if tr.aborted else "", tr.aborted,
                                                   [f["problem"] for f in failures]))
    return s
