"""Prompting and generation for VisualGLM: GLM positions/mask, KV cache, greedy and sampling,
the one streaming decode loop, batched generation. Reused by the engine (``engine.py``: CLI, web
demo, API) and evaluation.

The prompt itself is built in ``remoteglm.model.prompt`` (the same ids for training and serving)::

    <img>[32 image slots]</img>问：{q1}\\n答：{a1}\\n问：{q}\\n答：[gMASK]<sop>
    text only: 问：{q}\\n答：[gMASK]<sop>      English mode: Q:{q}\\nA:  (Chinese tokens suppressed)

The slots hold pad ids whose embeddings the model replaces with the image embeddings;
``pre_image = len(tokenize("<img>"))``. GLM attention: bidirectional over everything before
``<sop>``, causal from ``<sop>`` on; 2-D positions: (position, block position) where the answer
keeps the [gMASK] position and counts 1, 2, ... in the block dimension. Every answer goes through
the official ``process_response`` (full-width punctuation next to Chinese); streamed partial
answers through ``process_partial_response``, so a shown prefix never changes later.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.model.prompt import encode_prompt, process_partial_response, process_response
from remoteglm.serve.sampling import GenerationConfig, banned_ids, choose_tokens, process_logits

# ---- GLM mask and positions ----------------------------------------------------------------------
class GLMInputs:
    """GLM inputs for a batch of left-padded prompts of padded length ``n`` (``<sop>`` at n-1)."""

    def __init__(self, n: int, pad_lengths: Sequence[int], device):
        self.n, self.ctx, self.mask_pos = n, n - 1, n - 2
        self.pads = torch.tensor(list(pad_lengths), dtype=torch.long, device=device)
        self.device = device

    def full(self, length: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask [B,1,L,L] and positions [B,2,L] for the first ``length`` tokens (length >= n)."""
        b, dev = self.pads.numel(), self.device
        j = torch.arange(length, device=dev)
        is_pad = j[None, :] < self.pads[:, None]  # [B, L]
        mask = torch.ones(length, length, device=dev, dtype=dtype).tril()
        mask[:, : self.ctx] = 1  # the prompt is seen bidirectionally
        mask = mask.expand(b, length, length).clone()
        mask[is_pad[:, None, :].expand(-1, length, -1)] = 0  # nobody attends to padding
        mask[is_pad[:, :, None].expand(-1, -1, length)] = 0
        pos = torch.where(j[None] < self.ctx, j[None] - self.pads[:, None], self.mask_pos - self.pads[:, None])
        pos = pos.masked_fill(is_pad, 0)
        block = (j - self.ctx + 1).clamp(min=0).expand(b, -1)
        return mask[:, None], torch.stack([pos, block], dim=1)

    def select(self, rows: torch.Tensor) -> "GLMInputs":
        """The inputs of these rows only (the same padded length)."""
        out = GLMInputs.__new__(GLMInputs)
        out.n, out.ctx, out.mask_pos, out.device = self.n, self.ctx, self.mask_pos, self.device
        out.pads = self.pads[rows]
        return out

    def step(self, index: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask [B,1,1,index+1] and positions [B,2,1] of the token at ``index`` (>= n), KV-cached."""
        b = self.pads.numel()
        cols = torch.arange(index + 1, device=self.device)
        mask = (cols[None, :] >= self.pads[:, None]).to(dtype)[:, None, None, :]
        pos = (self.mask_pos - self.pads)[:, None]
        block = torch.full((b, 1), index - self.ctx + 1, dtype=torch.long, device=self.device)
        return mask, torch.stack([pos, block], dim=1)


# ---- the token loop --------------------------------------------------------------------------------
@torch.no_grad()
def generate_tokens(
    model,
    input_ids: torch.Tensor,
    pad_lengths: Sequence[int],
    cfg: GenerationConfig,
    eos_token_id: int,
    *,
    image_embeds: torch.Tensor | None = None,
    pre_image: int | torch.Tensor | None = None,
    banned: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    max_new_tokens: Sequence[int | None] | None = None,
    cancelled: Sequence[Callable[[], bool] | None] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(tokens [B], logits [B, V])`` step by step until every row emitted ``<eop>``, hit
    its length limit or was cancelled. Rows that finished keep yielding ``<eop>`` (and logits of
    -inf): they leave the computation, so the rest of the batch runs at its own size.
    ``max_new_tokens``: one cap per row instead of ``cfg.max_new_tokens``; ``cancelled``: one
    callable (or None) per row, asked each step. With ``use_cache`` each step runs only the new
    token against the cached keys/values; without, the whole sequence is recomputed (the
    reference the cache is tested against).
    """
    p = next(model.parameters())
    dev, dtype = p.device, p.dtype
    ids = input_ids.to(dev)
    b, n = ids.shape
    rows = GLMInputs(n, pad_lengths, dev)
    longest = n - int(rows.pads.min())
    if longest >= cfg.max_length:
        raise RemoteGLMError(f"the prompt is {longest} tokens, not less than max_length {cfg.max_length}: clear the history or raise max_length")
    # max_length counts each row's own tokens, not the padding of the batch.
    limits = rows.pads + cfg.max_length
    caps = list(max_new_tokens) if max_new_tokens is not None else [cfg.max_new_tokens] * b
    limits = torch.minimum(limits, torch.tensor([n + c if c is not None else 2**62 for c in caps], device=dev))
    if image_embeds is not None:
        image_embeds = image_embeds.to(dev)
    pre = torch.as_tensor(pre_image, device=dev) if pre_image is not None else None
    live = torch.arange(b, device=dev)  # the original row of each row still computed
    asks = list(cancelled) if cancelled is not None else [None] * b
    past = None
    while True:
        length = ids.shape[1]
        if past is None or not use_cache:
            mask, pos = rows.full(length, dtype)
            out = model(ids, pos, mask, image_embeds=image_embeds, pre_image=pre)
        else:
            mask, pos = rows.step(length - 1, dtype)
            out = model(ids[:, -1:], pos, mask, past_key_values=past)
        if use_cache:
            past = tuple(layer["past_key_values"] for layer in out[1:])
        logits = process_logits(out[0][:, -1], ids[:, n:], cfg, banned)
        nxt = choose_tokens(logits, cfg, generator)
        done = (nxt == eos_token_id) | (length + 1 >= limits)
        gone = [bool(asks[i] is not None and asks[i]()) for i in live.tolist()]
        if any(gone):
            done |= torch.tensor(gone, device=dev)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if live.numel() == b:
            yield nxt, logits
        else:  # the original batch's shape, finished rows filled in
            yield (torch.full((b,), eos_token_id, dtype=nxt.dtype, device=dev).index_copy(0, live, nxt),
                   logits.new_full((b, logits.shape[1]), -float("inf")).index_copy(0, live, logits))
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            live, ids, limits, rows = live[keep], ids[keep], limits[keep], rows.select(keep)
            if past is not None:  # each layer's (key, value) is [seq, batch, heads, head_dim]
                past = tuple(tuple(t.index_select(1, keep) for t in layer) for layer in past)
            if image_embeds is not None:
                image_embeds = image_embeds[keep]
            if pre is not None and pre.dim() > 0:
                pre = pre[keep]


# ---- images -------------------------------------------------------------------------------------------
def image_embeddings(model, image) -> torch.Tensor | None:
    """Image embeddings [1, 32, hidden] from a path, bytes, PIL image or preprocessed tensor
    ([3,H,W] or [1,3,H,W]); None stays None (text-only chat)."""
    if image is None:
        return None
    if isinstance(image, torch.Tensor):
        pixels = image
    else:
        from remoteglm.model.image import preprocess_image

        pixels = preprocess_image(image, image_size=model.config.vit.image_size)
    with torch.no_grad():
        return model.encode_image(pixels)


# ---- the streaming decode loop ---------------------------------------------------------------------
@dataclass
class Reply:
    """A (partial or final) answer. ``text`` has the official post-processing applied (while
    streaming, only the part later tokens cannot change: every partial text is a prefix of the
    final one). ``finish_reason`` is set on the final one: "stop" (the model ended its answer) or
    "length" (max_new_tokens / max_length reached)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None


def decode_answer(tokenizer, ids: Sequence[int], finished: bool) -> str:
    """The final text of answer token ``ids``; an answer cut by the length limit loses a broken
    multi-byte character at its end."""
    text = tokenizer.decode(list(ids)).strip()
    if not finished:
        text = text.rstrip("\ufffd").rstrip()
    return process_response(text)


def stream_responses(
    model,
    tokenizer,
    queries: Sequence[str],
    histories: Sequence[Sequence[tuple[str, str]] | None],
    cfgs: Sequence[GenerationConfig],
    *,
    image_embeds: Sequence[torch.Tensor | None] | None = None,
    generator: torch.Generator | None = None,
    cancelled: Sequence[Callable[[], bool] | None] | None = None,
    partial: bool | Sequence[bool] = True,
) -> Iterator[tuple[int, "Reply | RemoteGLMError"]]:
    """The one decode loop, for one answer or a batch of them (the engine, ``stream_chat``,
    ``chat`` and ``generate_batch`` use it): yield ``(row, Reply)`` each time a row's shown text
    changes (with ``partial``, for all rows or one flag per row), then the row's final reply with
    ``finish_reason``. The rows share
    one forward pass per token, so their settings must agree but for ``max_new_tokens``;
    ``image_embeds``: one [1, 32, hidden] per row, or None for all (text only). A row whose prompt
    does not fit ``max_length`` yields ``(row, RemoteGLMError)`` and the others go on; a row whose
    ``cancelled[row]()`` answers True (asked before each token) ends without a final reply and
    leaves the batch."""
    k = len(queries)
    if not k:
        return
    cfg = cfgs[0]
    if any(replace(c, max_new_tokens=None) != replace(cfg, max_new_tokens=None) for c in cfgs):
        raise ValueError("the rows of one batch must share their generation settings (max_new_tokens aside)")
    embeds = list(image_embeds) if image_embeds is not None else [None] * k
    if len({e is None for e in embeds}) > 1:
        raise ValueError("a batch needs an image for every row, or none at all")
    slots = model.image_length if embeds[0] is not None else None
    rows, enc = [], []
    for i in range(k):
        e = encode_prompt(tokenizer, queries[i], histories[i], english=cfg.english, image_length=slots)
        if len(e.ids) >= cfg.max_length:
            yield i, RemoteGLMError(f"the prompt is {len(e.ids)} tokens, not less than max_length {cfg.max_length}: "
                                    "clear the history or raise max_length")
        else:
            rows.append(i)
            enc.append(e)
    if not rows:
        return
    n = max(len(e.ids) for e in enc)
    pads = [n - len(e.ids) for e in enc]
    ids = torch.tensor([[tokenizer.pad_token_id] * p + e.ids for p, e in zip(pads, enc)])
    pre = torch.tensor([p + e.pre_image for p, e in zip(pads, enc)]) if slots else None
    emb = torch.cat([embeds[i] for i in rows]) if slots else None
    banned = banned_ids(tokenizer, model.config.vocab_size, cfg.english, next(model.parameters()).device)
    eos = tokenizer.eos_token_id
    asks = [cancelled[i] if cancelled is not None else None for i in rows]
    growing = [partial if isinstance(partial, bool) else bool(partial[i]) for i in rows]
    caps = [cfgs[i].max_new_tokens for i in rows]
    room = [min(cfg.max_length - len(e.ids), c if c is not None else cfg.max_length) for e, c in zip(enc, caps)]
    answers: list[list[int]] = [[] for _ in rows]
    shown = [""] * len(rows)
    open_rows = list(range(len(rows)))

    def final(j: int, finished: bool) -> tuple[int, Reply]:
        return rows[j], Reply(decode_answer(tokenizer, answers[j], finished), len(enc[j].ids), len(answers[j]),
                              "stop" if finished else "length")

    for toks, _ in generate_tokens(model, ids, pads, cfg, eos, image_embeds=emb, pre_image=pre, banned=banned,
                                   generator=generator, max_new_tokens=caps, cancelled=asks):
        toks = toks.tolist()
        for j in list(open_rows):
            if asks[j] is not None and asks[j]():
                open_rows.remove(j)
                continue
            t = toks[j]
            if t == eos:
                open_rows.remove(j)
                yield final(j, True)
                continue
            answers[j].append(t)
            if len(answers[j]) >= room[j]:
                open_rows.remove(j)
                yield final(j, False)
                continue
            if not growing[j]:
                continue
            raw = tokenizer.decode(answers[j])
            if raw.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                continue
            text = process_partial_response(raw)
            if text != shown[j]:
                shown[j] = text
                yield rows[j], Reply(text, len(enc[j].ids), len(answers[j]))
        if not open_rows:
            return
    for j in open_rows:  # (the loop ended without their last token: the length limit)
        yield final(j, False)


def stream_response(
    model,
    tokenizer,
    query: str,
    history: Sequence[tuple[str, str]] | None,
    cfg: GenerationConfig,
    *,
    image_embeds: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[Reply]:
    """``stream_responses`` for one answer: its growing replies, then the final one with
    ``finish_reason`` (RemoteGLMError if the prompt does not fit). ``image_embeds`` [1, 32,
    hidden] or None (text only); ``cancelled()`` True ends it without a final reply."""
    for _, r in stream_responses(model, tokenizer, [query], [history], [cfg], image_embeds=[image_embeds],
                                 generator=generator, cancelled=[cancelled]):
        if isinstance(r, BaseException):
            raise r
        yield r


# ---- chat ------------------------------------------------------------------------------------------
def stream_chat(
    model,
    tokenizer,
    image,
    query: str,
    history: Sequence[tuple[str, str]] | None = None,
    *,
    image_embeds: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    defaults: dict | None = None,
    **gen,
) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """Yield ``(partial_response, history + [(query, partial_response)])`` as tokens arrive; the
    last is the final answer (post-processed like the official chat's).

    ``image``: path / bytes / PIL / pixel tensor / None; or pass ``image_embeds`` (from
    ``image_embeddings``) to reuse one image across turns. ``gen``: GenerationConfig fields
    (defaults: the official chat() values and DEFAULT_MAX_NEW_TOKENS).
    """
    cfg = GenerationConfig.make(defaults, **gen)
    history = list(history or [])
    if image_embeds is None:
        image_embeds = image_embeddings(model, image)
    for r in stream_response(model, tokenizer, query, history, cfg, image_embeds=image_embeds, generator=generator):
        yield r.text, history + [(query, r.text)]


def chat(model, tokenizer, image, query: str, history=None, **kw) -> tuple[str, list[tuple[str, str]]]:
    """One answer: ``(response, history + [(query, response)])``. Same options as stream_chat."""
    response, new_history = "", list(history or []) + [(query, "")]
    for response, new_history in stream_chat(model, tokenizer, image, query, history, **kw):
        pass
    return response, new_history


def generate_batch(
    model,
    tokenizer,
    images: Sequence,
    queries: Sequence[str],
    histories: Sequence | None = None,
    *,
    batch_size: int = 8,
    defaults: dict | None = None,
    generator: torch.Generator | None = None,
    config: GenerationConfig | None = None,
    **gen,
) -> list[str]:
    """Answers for many (image, query) pairs, ``batch_size`` at a time, left-padded. Greedy unless
    ``do_sample=True`` (evaluation wants determinism). ``images`` may be all None (text only).
    Post-processed like the official chat's answers (``process_response``). ``config``: a ready
    GenerationConfig instead of ``defaults`` + ``gen``.
    """
    if len(images) != len(queries):
        raise ValueError(f"{len(images)} images but {len(queries)} queries")
    if config is not None:
        if gen or defaults:
            raise TypeError("pass config or generation options, not both")
        cfg = config
    else:
        gen.setdefault("do_sample", False)
        cfg = GenerationConfig.make(defaults, **gen)
    histories = list(histories) if histories is not None else [None] * len(queries)
    with_image = [im is not None for im in images]
    if any(with_image) and not all(with_image):
        raise ValueError("generate_batch needs an image for every query, or none at all")
    answers: list[str] = []
    for s in range(0, len(queries), batch_size):
        chunk = range(s, min(s + batch_size, len(queries)))
        embeds = [image_embeddings(model, images[i]) for i in chunk] if with_image[0] else None
        out: list = [None] * len(chunk)
        for j, r in stream_responses(model, tokenizer, [queries[i] for i in chunk], [histories[i] for i in chunk],
                                     [cfg] * len(chunk), image_embeds=embeds, generator=generator, partial=False):
            if isinstance(r, BaseException):
                raise r
            out[j] = r.text
        answers += out
    return answers
