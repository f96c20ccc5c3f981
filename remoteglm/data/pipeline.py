"""English captions -> Chinese dataset + VisualGLM fine-tune files, in one rerunnable job."""

from __future__ import annotations

import os

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RemoteGLMError
from .build import build_finetune_records, build_zh_dataset
from .cache import ResultCache
from .datasets import SPLITS, check_images, load_captions
from .io import write_json_atomic
from .llm import LLMClient, LLMConfig, Usage
from .rewrite import PROMPT_VERSION as REWRITE_VERSION
from .rewrite import RewriteConfig, Rewriter, source_key
from .translate import PROMPT_VERSION, TranslateConfig, Translator, distinct_sentences, estimate, normalise

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


def default_image_dir(input_path: Path) -> Path:
    for name in IMAGE_DIR_NAMES:
        if (input_path.parent / name).is_dir():
            return input_path.parent / name
    return input_path.parent / IMAGE_DIR_NAMES[0]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _remaining_error(n: int, total: int, what: str, reason: str, cache: Path) -> RemoteGLMError:
    return RemoteGLMError(
        f"{n} of {total} {what} still not done after retries (last problem: {reason}); "
        f"finished work is saved in {cache} - rerun the same command to continue"
    )


def run(cfg: PipelineConfig) -> Summary:
    """Run the whole job; raises RemoteGLMError (one line) on bad input or unfinished work."""
    t0 = time.time()
    cs = load_captions(cfg.input, cfg.name)
    if cfg.limit is not None:
        if cfg.limit < 1:
            raise RemoteGLMError(f"--limit must be at least 1 (got {cfg.limit})")
        cs.images = cs.images[: cfg.limit]
    image_dir = Path(cfg.images) if cfg.images else default_image_dir(Path(cfg.input))
    for w in cs.warnings + check_images(cs, image_dir):
        _say(f"warning: {w}")
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("data") / f"{cs.name}_zh"

    s = Summary(images=len(cs.images), sentences=len(cs.sentences()))
    cache = ResultCache(cfg.cache)
    try:
        translator = Translator(None, cache, cfg.translate, cfg.llm.model)
        distinct = distinct_sentences(cs.sentences())
        if cfg.dry_run:
            todo = [x for x in distinct if x not in translator.cached(distinct)]
            s.distinct, s.cache_hits = len(distinct), len(distinct) - len(todo)
            s.estimate = estimate(todo, cfg.translate.batch_size)
            if cfg.rewrite:
                groups = {source_key(im.sentences) for im in cs.images if len(set(im.sentences)) > 1}
                s.estimate["rewrite_calls"] = len(groups)  # at least; failed checks add re-asks
            return s

        client = LLMClient(cfg.llm)  # connects (and needs a key) only when something is not cached
        translator.client = client
        s.usage = client.usage
        t_llm = time.time()
        tr = translator.run(cs.sentences(), progress=cfg.progress)
        s.distinct, s.cache_hits, s.translated, s.failed = tr.distinct, tr.cache_hits, tr.new, len(tr.failed)
        if tr.failed:
            print_summary(s)
            reason = tr.aborted or next(iter(tr.failed.values()))
            raise _remaining_error(len(tr.failed), tr.distinct, "distinct sentences", reason, cfg.cache)

        labels = None
        if cfg.rewrite:
            zh_per_image = [[tr.translations[k] for k in map(normalise, im.sentences)] for im in cs.images]
            rw = Rewriter(client, cache, RewriteConfig(cfg.translate.concurrency, cfg.rewrite_rounds), cfg.llm.model)
            rr = rw.run(zh_per_image, progress=cfg.progress)
            s.rewritten, s.rewrite_fallbacks, s.rewrite_rejected = rr.rewritten, rr.fallbacks, rr.rejected
            for why in rr.examples:
                _say(f"rewrite fell back (example): {why}")
            if rr.failed:
                print_summary(s)
                reason = rr.aborted or next(iter(rr.failed.values()))
                raise _remaining_error(len(rr.failed), len(rr.failed) + len(rr.labels), "image paragraphs", reason, cfg.cache)
            labels = rr.labels
        s.llm_seconds = time.time() - t_llm
    finally:
        cache.close()

    meta = {"source": Path(cfg.input).name, "model": cfg.llm.model, "prompt_version": PROMPT_VERSION,
            # where the images are, relative to this JSON: the fine-tune code reads the dataset directly
            "image_root": os.path.relpath(Path(image_dir).absolute(), Path(out_dir).absolute())}
    if cfg.rewrite:
        meta["rewrite_version"] = REWRITE_VERSION
    zh = build_zh_dataset(cs, tr.translations, labels, meta)
    s.outputs.append(write_json_atomic(out_dir / f"dataset_{cs.name}_zh.json", zh))
    records = build_finetune_records(zh, image_dir, out_dir, seed=cfg.seed, classify=cfg.classify)
    for split in SPLITS:
        s.outputs.append(write_json_atomic(out_dir / f"{cs.name}_{split}.json", records[split]))
    s.seconds = time.time() - t0
    return s


def print_summary(s: Summary) -> None:
    if s.estimate is not None:
        e = s.estimate
        _say(f"dry run: {s.images} images, {s.sentences} sentences, {s.distinct} distinct, {s.cache_hits} cached")
        _say(f"  would translate {e['sentences']} sentences in ~{e['calls']} calls, "
             f"~{e['tokens_in']:,} tokens in / ~{e['tokens_out']:,} out (rough)")
        if "rewrite_calls" in e:
            _say(f"  rewrite: at least {e['rewrite_calls']} calls (one per image with several distinct sentences)")
        return
    u = s.usage
    _say(f"translate: {s.images} images, {s.sentences} sentences, {s.distinct} distinct: "
         f"{s.cache_hits} from cache, {s.translated} new, {s.failed} failed")
    if s.rewritten or s.rewrite_fallbacks or s.rewrite_rejected:
        _say(f"rewrite: {s.rewritten} paragraphs accepted, {s.rewrite_rejected} replies rejected, "
             f"{s.rewrite_fallbacks} images fell back to their translated sentences")
    _say(f"LLM: {u.calls} calls ({u.retries} retries), tokens in {u.tokens_in:,} / out {u.tokens_out:,}")
    for p in s.outputs:
        _say(f"wrote {p}")
