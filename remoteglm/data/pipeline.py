"""English captions -> Chinese dataset + VisualGLM fine-tune files, in one rerunnable job."""

from __future__ import annotations

import os
import time
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import RemoteGLMError
from .build import build_finetune_records, build_zh_dataset
from .cache import ResultCache
from .datasets import SPLITS, check_images, load_captions
from .facts import Sources, join_english
from ..io import check_writable, drop_stale_temps, read_json, write_json_atomic, write_text_atomic
from .jobs import STAMP, build_stamp, failure_advice, say, write_failures
from .kinds import MADE_HERE
from .llm import LLMClient, LLMConfig, Usage
from .rewrite import PROMPT_VERSION as REWRITE_VERSION
from .rewrite import RewriteConfig, Rewriter, source_key
from .splits import Registry, Source, SplitCheck, default_registry
from .tasks import TaskConfig, TaskImage, TaskMaker, estimate_calls
from .translate import PROMPT_VERSION, TranslateConfig, Translator, distinct_sentences, normalise

IMAGE_DIR_NAMES = ("imgs", "images", "RSICD_images")


@dataclass
class PipelineConfig:
    input: Path
    images: Path | None = None  # default: imgs/ (or images/, RSICD_images/) beside the input
    name: str | None = None  # UCM / Sydney / RSICD; inferred from the path when None
    out_dir: Path | None = None  # default: data/<name>_zh
    cache: Path = Path("data/cache/llm_cache.sqlite")
    llm: LLMConfig = field(default_factory=LLMConfig)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    rewrite: bool = False
    rewrite_rounds: int = 3
    classify: bool = True
    dry_run: bool = False
    limit: int | None = None  # first N images only (a trial run)
    seed: int = 42
    progress: bool = True
    tasks: tuple[str, ...] | None = None  # kinds of fine-tune records (tasks.KINDS); None: caption + classify
    mix: dict[str, float] | None = None  # kind -> weight in the train file (tasks.mix_records)
    phrase_questions: bool = False  # the LLM phrases the questions of the instruction kinds
    splits: Path | None = None  # the split registry (splits.py); default: splits.json beside out_dir
    command: str = ""  # the command line that runs this job (printed if another source makes it stale)

    @property
    def does_rewrite(self) -> bool:
        """A description record is the checked rewrite: asking for one turns the step on."""
        return self.rewrite or bool(self.tasks and "description" in self.tasks)


@dataclass
class Summary:
    images: int = 0
    sentences: int = 0
    distinct: int = 0
    cache_hits: int = 0
    translated: int = 0
    failed: int = 0
    rewritten: int = 0
    rewrite_fallbacks: int = 0
    rewrite_rejected: int = 0
    usage: Usage = field(default_factory=Usage)
    outputs: list[Path] = field(default_factory=list)
    estimate: dict | None = None
    seconds: float = 0.0  # whole job
    llm_seconds: float = 0.0  # translate (+ rewrite) steps only
    rewrite_cached: int = 0
    split_counts: dict = field(default_factory=dict)  # split -> {"images", "records"}
    up_to_date: bool = False  # outputs already matched this run's answers: not rewritten
    tasks: object = None  # tasks.TasksResult of the instruction step, when it ran
    task_calls: int = 0  # HTTP requests of the instruction step


def default_image_dir(input_path: Path) -> Path:
    for name in IMAGE_DIR_NAMES:
        if (input_path.parent / name).is_dir():
            return input_path.parent / name
    return input_path.parent / IMAGE_DIR_NAMES[0]


def _failures(cs, tr, rr, keys_of, tk=None) -> list[dict]:
    """One entry per missing sentence / paragraph / conversation: image, sentence, last problem, bad answer."""
    out = []
    for im in cs.images:
        for en in im.sentences:
            k = normalise(en)
            if k in tr.failed:
                out.append({"image": im.filename, "split": im.split, "sentence": en, "problem": tr.failed[k],
                            "reply_sample": tr.samples.get(k, "")})
        if rr is not None and keys_of.get(im.filename) in rr.failed:
            out.append({"image": im.filename, "split": im.split, "sentence": "(rewrite of its sentences)",
                        "problem": rr.failed[keys_of[im.filename]], "reply_sample": ""})
        if tk is not None and im.filename in tk.failed:
            out.append({"image": im.filename, "split": im.split, "sentence": "(conversation about the image)",
                        "problem": tk.failed[im.filename], "reply_sample": ""})
    for key, why in (tk.unphrased.items() if tk is not None else ()):
        out.append({"image": "", "split": "", "sentence": f"(question phrasing: {json.loads(key)[2]})",
                    "problem": why, "reply_sample": ""})
    if tk is not None and tk.aborted and not tk.failed and not tk.unphrased:
        out.append({"image": "", "split": "", "sentence": "(instruction questions)", "problem": tk.aborted,
                    "reply_sample": ""})
    return out


BUILD_VERSION = "build-v2"  # bump when build.py changes what it writes: outputs are rebuilt


def run(cfg: PipelineConfig) -> Summary:
    """Run the whole job; raises RemoteGLMError (one line) on bad input or unfinished work.

    Unfinished work (items that still fail after every round) does not stop the rest: every
    image whose sentences are all done is written, the missing ones go to ``failures.json``
    in the output folder, and the error says which case it is; a rerun asks only for those.
    """
    t0 = time.time()
    image_dir = Path(cfg.images) if cfg.images else default_image_dir(Path(cfg.input))
    reg = None if cfg.dry_run else Registry(cfg.splits or default_registry(cfg.out_dir))
    cs = load_captions(cfg.input, cfg.name, content=reg and (lambda fn: reg.digest(image_dir / fn)))
    if cfg.limit is not None:
        if cfg.limit < 1:
            raise RemoteGLMError(f"--limit must be at least 1 (got {cfg.limit})")
        cs.images = cs.images[: cfg.limit]
    for w in cs.warnings + check_images(cs, image_dir):
        say(f"warning: {w}")
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("data") / f"{cs.name}_zh"

    check_writable(out_dir, "--out_dir")
    splits = None
    if reg is not None:  # one split per image content across every builder, settled before any work
        command = cfg.command or f"python translation_en2zh.py --input {cfg.input} --out_dir {out_dir}"
        splits = SplitCheck(reg, Source(out_dir, f"{cs.name} captions", command), cs.images,
                            lambda im: image_dir / im.filename, lambda im: not im.derived, say)
        cs.images = splits.kept
    s = Summary(images=len(cs.images), sentences=len(cs.sentences()))
    cache = ResultCache(cfg.cache, readonly=cfg.dry_run)  # a dry run creates nothing
    rr = None
    try:
        translator = Translator(None, cache, cfg.translate, cfg.llm.model)
        distinct = distinct_sentences(cs.sentences())
        if cfg.dry_run:
            s.distinct, s.cache_hits, s.estimate = translator.plan(distinct)
            if cfg.does_rewrite:
                groups = {source_key(im.sentences) for im in cs.images if len(set(im.sentences)) > 1}
                s.estimate["rewrite_calls"] = len(groups)  # at least; failed checks add re-asks
            if cfg.tasks:
                s.estimate.update(estimate_calls(len(cs.images), cfg.tasks, cfg.phrase_questions,
                                                 cfg.translate.batch_size))
            return s

        client = LLMClient(cfg.llm)  # connects (and needs a key) only when something is not cached
        translator.client = client
        s.usage = client.usage
        t_llm = time.time()
        tr = translator.run(cs.sentences(), progress=cfg.progress)
        s.distinct, s.cache_hits, s.translated, s.failed = tr.distinct, tr.cache_hits, tr.new, len(tr.failed)
        done_images = [im for im in cs.images if all(normalise(en) in tr.translations for en in im.sentences)]

        labels, keys_of, tk = None, {}, None
        if cfg.does_rewrite:
            zh_per_image = [[tr.translations[normalise(en)] for en in im.sentences] for im in done_images]
            keys_of = {im.filename: source_key(z) for im, z in zip(done_images, zh_per_image)}
            rw = Rewriter(client, cache, RewriteConfig(cfg.translate.concurrency, cfg.rewrite_rounds), cfg.llm.model)
            if not tr.aborted:
                rr = rw.run(zh_per_image, progress=cfg.progress)
                s.rewritten, s.rewrite_fallbacks, s.rewrite_rejected = rr.rewritten, rr.fallbacks, rr.rejected
                s.rewrite_cached = rr.cache_hits
                for why in rr.examples:
                    say(f"rewrite fell back (example): {why}")
                labels = rr.labels
                done_images = [im for im in done_images if keys_of[im.filename] in labels]
            else:
                done_images = []
        if cfg.tasks and set(cfg.tasks) & set(MADE_HERE) and done_images and not tr.aborted \
                and not (rr and rr.aborted):
            tk = _instructions(cfg, cs, done_images, tr.translations, client, cache)
            s.tasks, s.task_calls = tk, tk.calls
        s.llm_seconds = time.time() - t_llm
    finally:
        cache.close()

    failures = _failures(cs, tr, rr, keys_of, tk) \
        if (tr.failed or (rr and rr.failed) or tr.aborted or (tk and (tk.failed or tk.unphrased or tk.aborted))) else []
    complete = len(done_images) == len(cs.images)
    if done_images:
        part = cs if complete else replace(cs, images=done_images)
        meta = {"source": Path(cfg.input).name, "model": cfg.llm.model, "prompt_version": PROMPT_VERSION,
                # where the images are, relative to this JSON: the fine-tune code reads the dataset directly
                "image_root": os.path.relpath(Path(image_dir).absolute(), Path(out_dir).absolute())}
        if cfg.does_rewrite:
            meta["rewrite_version"] = REWRITE_VERSION
        if not complete:
            meta["incomplete"] = {"images_missing": len(cs.images) - len(done_images), "see": "failures.json"}
        _write_outputs(s, part, tr.translations, labels, meta, image_dir, out_dir, cfg,
                       tk.instructions if tk is not None else None)
        splits.register()
    failures_file = write_failures(out_dir, failures, s.outputs)
    s.seconds = time.time() - t0
    if failures:
        print_summary(s)
        reason = tr.aborted or (rr.aborted if rr else "") or (tk.aborted if tk else "")
        kind = tr.aborted_kind or (rr.aborted_kind if rr else "") or (tk.aborted_kind if tk else "")
        what = (f"{len(done_images)} of {len(cs.images)} images written" if done_images else "no image complete, nothing written")
        items = f"{len(tr.failed)} distinct sentences" if tr.failed else ""
        if rr is not None and rr.failed:
            items += (" and " if items else "") + f"{len(rr.failed)} image paragraphs"
        if tk is not None:
            parts = [f"{len(tk.failed)} conversations"] * bool(tk.failed)
            parts += [f"{len(tk.unphrased)} question phrasings"] * bool(tk.unphrased)
            for part in parts or ["the instruction questions"] * bool(tk.aborted):
                items += (" and " if items else "") + part
        raise RemoteGLMError(
            f"{items or 'some items'} still not done after every round ({what}; each is listed in {failures_file}): "
            + failure_advice(kind if reason else "", reason, [f["problem"] for f in failures]))
    return s


def _instructions(cfg: PipelineConfig, cs, done_images, translations, client, cache):
    """The instruction step (tasks.py) for the images whose captions are all translated; which
    objects are typical of a class comes from the English of every train image (the same on a
    rerun that finishes what an earlier one left)."""
    names_zh = dict(zip(cs.classes, cs.classes_zh))
    images = [TaskImage(im.filename, Sources(tuple(im.sentences), tuple(translations[normalise(en)] for en in im.sentences),
                                             names_zh.get(im.cls) or ""), im.cls, im.split == "train")
              for im in done_images]
    population = [(im.cls, join_english(im.sentences)) for im in cs.images if im.split == "train"]
    maker = TaskMaker(client, cache, TaskConfig(kinds=cfg.tasks, seed=cfg.seed, concurrency=cfg.translate.concurrency,
                                                batch_size=cfg.translate.batch_size,
                                                phrase_questions=cfg.phrase_questions), cfg.llm.model)
    before = client.usage.calls
    tk = maker.run(images, progress=cfg.progress, population=population)
    tk.calls = client.usage.calls - before
    for why in tk.examples:
        say(f"instruction reply rejected (example): {why}")
    return tk


def _last_split_counts(out_dir: Path) -> dict | None:
    """The split counts the last build recorded ({} if it wrote none); None when the file is
    damaged: the build's own record, so the outputs are rebuilt (from the cache) rather than refused."""
    f = out_dir / ".split_counts.json"
    if not f.exists():
        return {}
    try:
        return read_json(f, require_object=True)
    except RemoteGLMError:
        return None


def _write_outputs(s: Summary, cs, translations, labels, meta, image_dir: Path, out_dir: Path, cfg,
                   instructions: dict | None = None) -> None:
    """The Chinese dataset and the per-split fine-tune files; skipped when nothing they are made
    of changed since the last build (a finished rerun of RSICD then takes seconds, not tens)."""
    names = [out_dir / f"dataset_{cs.name}_zh.json"] + [out_dir / f"{cs.name}_{split}.json" for split in SPLITS]
    keys = [normalise(en) for im in cs.images for en in im.sentences]
    stamp = build_stamp(BUILD_VERSION, meta, cfg.seed, cfg.classify, str(image_dir),
                   [(im.filename, im.split, im.cls, im.sentences) for im in cs.images],
                   [translations[k] for k in keys], sorted((labels or {}).items()))
    if cfg.tasks is not None:  # (a job without --tasks keeps the stamp it always had)
        stamp = build_stamp(stamp, cfg.tasks, sorted((cfg.mix or {}).items()), instructions)
    stamp_file = out_dir / STAMP
    counts = _last_split_counts(out_dir)
    if (all(n.exists() for n in names) and stamp_file.exists() and counts is not None
            and stamp_file.read_text(encoding="utf-8").strip() == stamp):
        s.up_to_date = True
        drop_stale_temps(out_dir)  # nothing is written, so the writes do not do it
        s.outputs.extend(names)
        s.split_counts = counts
        return
    zh = build_zh_dataset(cs, translations, labels, meta, instructions)
    s.outputs.append(write_json_atomic(names[0], zh))
    records = build_finetune_records(zh, image_dir, out_dir, seed=cfg.seed, classify=cfg.classify, tasks=cfg.tasks,
                                     mix=cfg.mix)
    for name, split in zip(names[1:], SPLITS):
        s.outputs.append(write_json_atomic(name, records[split]))
    s.split_counts = {split: {"images": sum(1 for im in cs.images if im.split == split), "records": len(records[split])}
                      for split in SPLITS}
    if cfg.tasks is not None:
        for split in SPLITS:
            s.split_counts[split]["kinds"] = dict(Counter(r.get("task", "caption") for r in records[split]))
    write_json_atomic(out_dir / ".split_counts.json", s.split_counts)
    write_text_atomic(stamp_file, stamp + "\n")


def task_summary(tk, calls: int) -> str:
    """The instruction step in a few lines: items per kind, 是/否, rejects and drops per kind, cache."""
    made = ", ".join(f"{k} {n}" for k, n in tk.made.items()) or "none"
    yes_no = f" (是 {tk.answers.get('是', 0)} / 否 {tk.answers.get('否', 0)})" if tk.made.get("presence") else ""
    lines = [f"instructions: {made}{yes_no}; {calls} LLM calls"]
    rejected = ", ".join(f"{k} {n}" for k, n in tk.rejected.items() if n)
    dropped = ", ".join(f"{k} {n}" for k, n in tk.dropped.items() if n)
    lines.append(f"  replies rejected by the grounding check: {rejected or 'none'}; items dropped: {dropped or 'none'}")
    cached = ", ".join(f"{k} {tk.cached[k]} from cache, {tk.new[k]} new" for k in sorted(set(tk.cached) | set(tk.new)))
    if cached or tk.fallbacks:
        lines.append(f"  {cached}" + (f"; {tk.fallbacks} questions kept their template" if tk.fallbacks else ""))
    return "\n".join(lines)


def print_summary(s: Summary) -> None:
    if s.estimate is not None:
        e = s.estimate
        say(f"dry run: {s.images} images, {s.sentences} sentences, {s.distinct} distinct, {s.cache_hits} cached")
        say(f"  would translate {e['sentences']} sentences in ~{e['calls']} calls, "
             f"~{e['tokens_in']:,} tokens in / ~{e['tokens_out']:,} out (rough)")
        if "rewrite_calls" in e:
            say(f"  rewrite: at least {e['rewrite_calls']} calls (one per image with several distinct sentences)")
        if "conversation_calls" in e:
            say(f"  conversations: at most {e['conversation_calls']} calls (one per image with 2+ turns), plus re-asks")
        if "question_calls" in e:
            say(f"  question phrasing: at most ~{e['question_calls']} calls")
        return
    u = s.usage
    say(f"translate: {s.images} images, {s.sentences} sentences, {s.distinct} distinct: "
         f"{s.cache_hits} from cache, {s.translated} new, {s.failed} failed")
    if s.rewritten or s.rewrite_fallbacks or s.rewrite_rejected or s.rewrite_cached:
        say(f"rewrite: {s.rewrite_cached} paragraphs from cache, {s.rewritten} new accepted, {s.rewrite_rejected} "
             f"replies rejected, {s.rewrite_fallbacks} images fell back to their translated sentences")
    say(f"LLM: {u.calls} calls ({u.retries} retries), tokens in {u.tokens_in:,} / out {u.tokens_out:,}")
    if s.tasks is not None:
        say(task_summary(s.tasks, s.task_calls))
    for split, c in s.split_counts.items():
        kinds = ", ".join(f"{k} {n}" for k, n in c.get("kinds", {}).items())
        say(f"  {split}: {c['images']} images, {c['records']} fine-tune records" + (f" ({kinds})" if kinds else ""))
    verb = "up to date" if s.up_to_date else "wrote"
    for p in s.outputs:
        say(f"{verb} {p}" if p.name != "failures.json" else f"wrote {p} (what is still missing, and why)")
    say(f"took {s.seconds:.1f} s (LLM steps {s.llm_seconds:.1f} s)")
