"""VisualGLM's chat format in one place: the prompt every caller builds (fine-tuning samples,
the CLI, the web demo, the API, evaluation) and the official post-processing of every answer.

Prompt (VisualGLM-6B's chat)::

    with an image:  <img>[image_length slots]</img>问：{q1}\\n答：{a1}\\n问：{q}\\n答：[gMASK]<sop>
    text only:      问：{q1}\\n答：{a1}\\n问：{q}\\n答：[gMASK]<sop>          (pre_image 0, no <img></img>)
    English mode:   Q:{q}\\nA:  instead of 问：{q}\\n答：

The slots hold pad ids whose embeddings the model replaces with the image's;
``pre_image = len(tokenize("<img>"))`` is the index of the first slot. A training sample is
``encode_prompt(...).ids + tokenize(label) + [<eop>]`` (``model/sample.py``), so the prompt the
model is trained on and the one it is served are the same ids.

It lives under ``model/`` because it is part of the model's contract, not of one caller: it needs
only a tokenizer (no torch), so training, serving and evaluation import it without pulling in
each other. The instruction texts (the classification template, the description questions) are
not part of the chat format: they live in ``remoteglm.data.instructions``.

Answers: the tokenizer's NFKC normalisation turns full-width ``，！：；？`` into ASCII, so the
model never emits them; the official chat restores them (``process_response``). While an answer
streams, ``process_partial_response`` gives the part that later tokens can no longer change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

IMAGE_OPEN, IMAGE_CLOSE = "<img>", "</img>"
DEFAULT_PROMPT = "描述这张图片。"  # the official cli_demo's first question
DEFAULT_PROMPT_EN = "Describe the image."


def roles(english: bool = False) -> tuple[str, str]:
    return ("Q:", "A:") if english else ("问：", "答：")


def format_prompt(query: str, history: Sequence[tuple[str, str]] | None = None, english: bool = False) -> str:
    """The dialogue text: earlier turns, then the question and the answer cue (no image tags)."""
    q, a = roles(english)
    return f"{_turns(history, english)}{q}{query}\n{a}"


def _turns(history, english: bool) -> str:
    q, a = roles(english)
    return "".join(f"{q}{old_q}\n{a}{old_a}\n" for old_q, old_a in (history or []))


def prompt_text(query: str, history=None, english: bool = False, image: bool = True) -> str:
    """The prompt as text (before [gMASK]<sop>), for logs and documentation; the slots are not text."""
    body = format_prompt(query, history, english)
    return f"{IMAGE_OPEN}{IMAGE_CLOSE}{body}" if image else body


@dataclass(frozen=True)
class EncodedPrompt:
    """``ids`` end in [gMASK, <sop>]; ``pre_image`` is the first image slot (0 without an image);
    ``truncated``: the question was cut to fit ``max_text_tokens``."""

    ids: list[int]
    pre_image: int
    image_length: int
    truncated: bool = False


def encode_prompt(tokenizer, query: str, history: Sequence[tuple[str, str]] | None = None, *, english: bool = False,
                  image_length: int | None = 32, max_text_tokens: int | None = None) -> EncodedPrompt:
    """Token ids of the prompt. ``image_length`` None or 0: text only (the official prompt without
    ``<img></img>``). ``max_text_tokens`` bounds the text after the image slots (training's
    ``max_source_length``): a longer question is cut in the middle, keeping the turns before it,
    its ``问：`` and the ``\\n答：`` cue, so the model is still asked to answer."""
    slots = int(image_length or 0)
    if slots < 0:
        raise ValueError(f"image_length must be >= 0, got {image_length}")
    q, a = roles(english)
    close = IMAGE_CLOSE if slots else ""
    text = tokenizer.encode(close + format_prompt(query, history, english), add_special_tokens=False)
    truncated = max_text_tokens is not None and len(text) > max_text_tokens
    if truncated:
        head = tokenizer.encode(f"{close}{_turns(history, english)}{q}", add_special_tokens=False)
        tail = tokenizer.encode(f"\n{a}", add_special_tokens=False)
        question = tokenizer.encode(query, add_special_tokens=False)
        text = head + question[: max(0, max_text_tokens - len(head) - len(tail))] + tail
    pre = tokenizer.encode(IMAGE_OPEN, add_special_tokens=False) if slots else []
    ids = pre + [tokenizer.pad_token_id] * slots + text
    return EncodedPrompt(tokenizer.build_inputs_with_special_tokens(ids), len(pre), slots, truncated)


# ---- answers ------------------------------------------------------------------------------------
_HALF_TO_FULL = {",": "，", "!": "！", ":": "：", ";": "；", "?": "？"}
TRAINING_TIME = ("[[训练时间]]", "2023年")  # a placeholder in ChatGLM's self-introduction answers


def is_cjk(ch: str) -> bool:
    """A CJK unified ideograph (U+4E00..U+9FFF): the range the official rule looks at."""
    return "\u4e00" <= ch <= "\u9fff"


def _full_width(text: str) -> str:
    out = list(text)
    for i, ch in enumerate(text):
        if ch in _HALF_TO_FULL and ((i > 0 and is_cjk(text[i - 1])) or (i + 1 < len(text) and is_cjk(text[i + 1]))):
            out[i] = _HALF_TO_FULL[ch]
    return "".join(out)


def process_response(text: str) -> str:
    """The official chat's answer post-processing: strip; ``[[训练时间]]`` -> ``2023年``; an ASCII
    ``, ! : ; ?`` right before or after a CJK ideograph becomes ``，！：；？``."""
    return _full_width(text.strip().replace(*TRAINING_TIME))


def _unfinished_marker(text: str) -> int:
    """Length of the tail of ``text`` that may still grow into ``[[训练时间]]``."""
    marker = TRAINING_TIME[0]
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


def process_partial_response(text: str) -> str:
    """What to show of an unfinished answer: ``process_response`` minus the tail that the next
    characters could still change, so each result is a prefix of every later one and of the final
    ``process_response``. Held back: a trailing ASCII ``, ! : ; ?`` not after a CJK ideograph (a
    CJK character may come next and make it full-width), a beginning of ``[[训练时间]]``, and
    trailing whitespace (the final answer is stripped)."""
    text = text.lstrip()
    k = _unfinished_marker(text)
    if k:
        text = text[:-k]
    text = _full_width(text.replace(*TRAINING_TIME)).rstrip()
    if text and text[-1] in _HALF_TO_FULL:  # (after a CJK ideograph it would be full-width already)
        text = text[:-1].rstrip()
    return text

