"""Decoding settings and token choice, shared by every engine: the defaults each front end starts
from (VisualGLM's official values), ``GenerationConfig`` (a request's settings, checked), the
repetition penalty and bans, and greedy / temperature + top-k + top-p sampling."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, fields, replace

import torch

from remoteglm.errors import RemoteGLMError

# Answers stop after this many new tokens unless asked otherwise (0: only max_length bounds
# them). Without a cap a CPU answer could run to max_length 2048 for minutes.
DEFAULT_MAX_NEW_TOKENS = 512
# VisualGLM's official defaults, plus the cap above: chat() in its model/chat.py (the API, the
# engines' fallback), and the values its cli_demo.py and web_demo.py share (top_k as the cli_demo's).
CHAT_DEFAULTS = dict(top_p=0.7, top_k=30, temperature=0.95, repetition_penalty=1.2, max_length=2048,
                     max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
DEMO_DEFAULTS = dict(top_p=0.4, top_k=100, temperature=0.8, repetition_penalty=1.2, max_length=2048,
                     max_new_tokens=DEFAULT_MAX_NEW_TOKENS)


@dataclass
class GenerationConfig:
    """Decoding settings. ``max_length`` counts prompt + answer tokens, like the official code;
    ``max_new_tokens`` the answer alone (None: no cap but max_length; ``make`` reads 0 as None)."""

    max_length: int = 2048
    max_new_tokens: int | None = DEFAULT_MAX_NEW_TOKENS
    do_sample: bool = True
    temperature: float = 0.95
    top_p: float = 0.7
    top_k: int = 30
    repetition_penalty: float = 1.2
    english: bool = False

    @classmethod
    def make(cls, base: dict | None = None, **overrides) -> "GenerationConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        cfg = cls(**(base or CHAT_DEFAULTS))
        cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        if cfg.max_new_tokens == 0:
            cfg = replace(cfg, max_new_tokens=None)
        if cfg.do_sample and cfg.temperature <= 0:
            cfg = replace(cfg, do_sample=False)  # temperature 0 means greedy
        if cfg.max_length < 2 or (cfg.max_new_tokens is not None and cfg.max_new_tokens < 1):
            raise RemoteGLMError(f"max_length must be >= 2 and max_new_tokens >= 1, or 0 for no cap "
                                 f"(got {cfg.max_length}, {cfg.max_new_tokens})")
        if not 0 < cfg.top_p <= 1 or cfg.top_k < 0 or cfg.repetition_penalty <= 0:
            raise RemoteGLMError("top_p must be in (0, 1], top_k >= 0 and repetition_penalty > 0")
        return cfg


def process_logits(logits: torch.Tensor, generated: torch.Tensor, cfg: GenerationConfig, banned: torch.Tensor | None) -> torch.Tensor:
    """Repetition penalty on already generated tokens (CTRL rule: positive logits divided, negative
    multiplied; sat divides both, which rewards repeats with negative logits), then bans."""
    logits = logits.float().clone()
    if cfg.repetition_penalty != 1.0 and generated.numel():
        score = logits.gather(1, generated)
        score = torch.where(score > 0, score / cfg.repetition_penalty, score * cfg.repetition_penalty)
        logits.scatter_(1, generated, score)
    if banned is not None:
        logits[:, banned] = -float("inf")
    return logits


def choose_tokens(logits: torch.Tensor, cfg: GenerationConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Greedy argmax, or temperature + top-k + top-p (nucleus) sampling. [B, V] -> [B]."""
    if not cfg.do_sample:
        return logits.argmax(-1)
    logits = logits / cfg.temperature
    if cfg.top_k > 0:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > cfg.top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), -float("inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


_BANNED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def banned_ids(tokenizer, vocab_size: int, english: bool, device) -> torch.Tensor:
    """Ids never to generate: embedding rows past the tokenizer (padding of the vocab) and, in
    English mode, tokens holding Chinese (the official code bans the id range 63823..130000)."""
    key = (vocab_size, english)
    cache = _BANNED.setdefault(tokenizer, {})
    if key not in cache:
        ban = torch.zeros(vocab_size, dtype=torch.bool)
        ban[min(tokenizer.vocab_size, vocab_size):] = True
        if english:
            ids = [i for i in tokenizer.chinese_token_ids if i < vocab_size] if hasattr(tokenizer, "chinese_token_ids") else [
                i for i in range(min(tokenizer.vocab_size, vocab_size)) if tokenizer.is_chinese_token(i)]
            ban[torch.tensor(sorted(ids), dtype=torch.long)] = True
        cache[key] = ban
    return cache[key].to(device)
