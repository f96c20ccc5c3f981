"""What every builder job shares (the caption pipeline, the RSVQA and scene importers): progress
lines on stderr, the stamp that lets a rerun skip a build when nothing changed, and the advice on
work still missing after every retry."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

STAMP = ".build_stamp"  # the stamp file in an output folder


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_stamp(*parts) -> str:
    """A digest of everything an output depends on (JSON of each part, in order)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


# What a user can do about work that is still missing after every retry, by its cause.
ADVICE = {
    "unreachable": "the endpoint cannot be reached: start the server or fix --base_url; rerunning before that cannot help",
    "not_json": "the endpoint answers, but not with OpenAI JSON (an HTML page?): --base_url usually ends in /v1; "
                "rerunning as is cannot help",
    "rate_limited": "the endpoint kept answering 429 (rate limit): rerun the same command later, or lower --concurrency",
    "timeout": "requests kept timing out: rerun with a larger --timeout or a lower --batch_size",
    "server_error": "the endpoint kept failing with server errors (5xx): rerun the same command later",
    "empty": "the endpoint keeps answering with empty messages: check --model (is it a chat model?); rerunning as is "
             "cannot help",
}


def failure_advice(endpoint_kind: str, endpoint_reason: str, problems: list[str]) -> str:
    """One sentence: which case it is and whether a rerun can help."""
    if endpoint_kind or endpoint_reason:
        base = ADVICE.get(endpoint_kind, "the endpoint kept failing: rerun the same command later")
        return f"{base} (last error: {endpoint_reason})" if endpoint_reason else base
    counts: dict[str, int] = {}
    for pr in problems:
        for part in pr.split("; "):
            key = part.split(":")[0].strip()
            counts[key] = counts.get(key, 0) + 1
    top = ", ".join(f"{k} x{n}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])[:3])
    return (f"the LLM's answers kept failing the checks ({top}): a rerun asks only for these, "
            "or try a stronger --model")


def write_failures(out_dir: Path, failures: list, outputs: list) -> Path:
    """``OUT/failures.json``: what a run could not finish (appended to ``outputs``); removed once a
    rerun leaves nothing unfinished, so it never describes an older run. Returns its path."""
    from ..io import write_json_atomic

    f = out_dir / "failures.json"
    if failures:
        outputs.append(write_json_atomic(f, failures))
    elif f.exists():
        f.unlink()
    return f
