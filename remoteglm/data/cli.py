"""Command line of translation_en2zh.py (kept here so it can be imported and tested)."""

from __future__ import annotations

from remoteglm.options import Parser

import argparse
import os
import shlex
import sys
from pathlib import Path

from ..errors import RemoteGLMError, cli_entry
from .kinds import KINDS, LEGACY, parse_kinds, parse_mix
from .llm import LLMConfig
from .llm_keys import redact
from .pipeline import PipelineConfig, print_summary, run
from .translate import TranslateConfig

EPILOG = """examples:
  # OpenAI (key from OPENAI_API_KEY; never printed or saved)
  python translation_en2zh.py --input data/UCM_captions/dataset.json
  # DeepSeek / Qwen (DashScope compatible mode): the key from the variable you name
  python translation_en2zh.py --base_url https://api.deepseek.com/v1 --model deepseek-chat --api_key_env DEEPSEEK_API_KEY
  python translation_en2zh.py --base_url https://dashscope.aliyuncs.com/compatible-mode/v1 --model qwen-plus \\
      --api_key_env DASHSCOPE_API_KEY
  # local vLLM or Ollama: no key
  python translation_en2zh.py --base_url http://127.0.0.1:8000/v1 --model Qwen2.5-7B-Instruct
  # estimate calls and tokens first; try 20 images; add RemoteGLM-style paragraphs
  python translation_en2zh.py --dry_run
  python translation_en2zh.py --limit 20
  python translation_en2zh.py --input data/Sydney_captions/dataset.json --rewrite
  # multi-task files: every kind (captions, description, class, 是/否, counts, attributes, conversations),
  # the train file weighted: all VQA, half the class and conversation records
  python translation_en2zh.py --tasks all --mix caption=1,vqa=1,cls=0.5,conv=0.5

OPENAI_API_KEY is sent only to https://api.openai.com; any other remote endpoint needs
--api_key_env NAME (the environment variable holding its key); local servers get no key.

Every answer is cached as it arrives (--cache): stop the job at any time and run the same
command again; it continues where it stopped and a finished job makes no LLM calls.
If some items still fail after retries the job exits non-zero and says how many remain:
run it again until it finishes."""


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="translation_en2zh.py",
        description="Translate English remote-sensing captions (UCM / Sydney / RSICD) into Chinese with any "
        "OpenAI-compatible LLM and write the Chinese dataset plus VisualGLM fine-tune files.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("data")
    io.add_argument("--input", type=Path, default=Path("data/UCM_captions/dataset.json"),
                    help="Karpathy dataset.json or RemoteGLM list [{imged_id, caption}] (default: %(default)s)")
    io.add_argument("--images", type=Path, default=None,
                    help="image folder (default: imgs/, images/ or RSICD_images/ beside --input); only checked, never read")
    io.add_argument("--name", default=None, help="dataset name UCM, Sydney or RSICD (default: from the input path)")
    io.add_argument("--out_dir", type=Path, default=None, help="output folder (default: data/<name>_zh)")
    io.add_argument("--limit", type=int, default=None, help="only the first N images (a trial run)")
    io.add_argument("--seed", type=int, default=42, help="seed of the prompt choice in the fine-tune files (default: 42)")
    io.add_argument("--no_classify", action="store_true", help="leave scene-classification records out of the fine-tune files")
    io.add_argument("--splits", type=Path, default=None,
                    help="split registry shared with the other builders: one split per image content across "
                    "all of them (default: splits.json beside the output folder, i.e. data/splits.json)")
    llm = p.add_argument_group("LLM endpoint")
    llm.add_argument("--base_url", default=os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
                     help="OpenAI-compatible base URL, usually ending in /v1 (default: $OPENAI_BASE_URL or %(default)s)")
    llm.add_argument("--model", default="gpt-4o-mini", help="model name (default: %(default)s)")
    llm.add_argument("--api_key_env", metavar="NAME", default=None,
                     help="environment variable holding the endpoint's key, e.g. DEEPSEEK_API_KEY or DASHSCOPE_API_KEY "
                     "(default: OPENAI_API_KEY for api.openai.com, none for local servers)")
    llm.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default: %(default)s)")
    llm.add_argument("--batch_size", type=int, default=20, help="sentences per request (default: %(default)s)")
    llm.add_argument("--timeout", type=float, default=60.0, help="seconds per request before retrying (default: %(default)s)")
    llm.add_argument("--retries", type=int, default=6,
                     help="retries per request on 429/5xx/timeouts/HTML or empty replies, exponential backoff + jitter, "
                     "Retry-After honoured (default: %(default)s)")
    llm.add_argument("--cache", type=Path, default=Path("data/cache/llm_cache.sqlite"),
                     help="SQLite cache of answers, shared by all datasets (default: %(default)s)")
    tk = p.add_argument_group("instruction kinds")
    tk.add_argument("--tasks", metavar="KINDS", default=None,
                    help=f"kinds of fine-tune records: all, or a comma list of {', '.join(KINDS)} "
                    "(groups: vqa = presence,count,attribute; cls; conv; desc); description is the checked "
                    f"rewrite and turns --rewrite on (default: {','.join(LEGACY)}; with --mix: all)")
    tk.add_argument("--mix", metavar="KIND=W,...", default=None,
                    help="weights of the kinds in the train file, e.g. caption=1,vqa=1,cls=0.5,conv=0.5: 0.5 keeps "
                    "a seeded half, 2 each record twice, 0 none; kinds not named keep 1; val/test keep every record")
    tk.add_argument("--phrase_questions", action="store_true",
                    help="let the LLM phrase the questions (checked and cached; a question that fails keeps its "
                    "template); answers never come from the LLM except in conversations")
    job = p.add_argument_group("job")
    job.add_argument("--rewrite", action="store_true",
                     help="also merge each image's sentences into one checked paragraph (the fine-tune label)")
    job.add_argument("--dry_run", action="store_true", help="estimate calls and tokens; call nothing, write nothing")
    job.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def endpoint_configs(a: argparse.Namespace) -> tuple[LLMConfig, TranslateConfig]:
    """The "LLM endpoint" options (this CLI's and the importers') as configs, checked first."""
    for flag, value in (("--concurrency", a.concurrency), ("--batch_size", a.batch_size)):
        if value < 1:
            raise RemoteGLMError(f"{flag} must be at least 1 (got {value})")
    if a.timeout <= 0 or a.retries < 0:
        raise RemoteGLMError("--timeout must be > 0 and --retries >= 0")
    return (LLMConfig(base_url=a.base_url, model=a.model, timeout=a.timeout, max_retries=a.retries,
                      api_key_env=a.api_key_env),
            TranslateConfig(batch_size=a.batch_size, concurrency=a.concurrency))


@cli_entry
def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    llm, translate = endpoint_configs(a)
    tasks = parse_kinds(a.tasks) if a.tasks else (parse_kinds("all") if a.mix else None)
    mix = parse_mix(a.mix) if a.mix else None
    if tasks is not None:
        if a.no_classify:
            tasks = tuple(k for k in tasks if k != "classify")
        unused = [k for k in (mix or {}) if k not in tasks and mix[k] > 0]
        if mix and unused and not any(k in tasks for k in mix):
            raise RemoteGLMError(f"--mix weights {', '.join(unused)}, which --tasks does not make")
        if not tasks:
            raise RemoteGLMError("--tasks with --no_classify leaves no kind of record to write")
    cfg = PipelineConfig(
        input=a.input, images=a.images, name=a.name, out_dir=a.out_dir, cache=a.cache, llm=llm, translate=translate,
        rewrite=a.rewrite, classify=not a.no_classify, dry_run=a.dry_run, limit=a.limit, seed=a.seed,
        progress=not a.no_progress, tasks=tasks, mix=mix, phrase_questions=a.phrase_questions, splits=a.splits,
        command=shlex.join(["python", "translation_en2zh.py", *(sys.argv[1:] if argv is None else argv)]),
    )
    try:
        print_summary(run(cfg))
    except RemoteGLMError as e:  # whatever a server echoed back, no key is printed
        raise RemoteGLMError(redact(str(e))) from None
    return 0
