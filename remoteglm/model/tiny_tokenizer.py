"""A tiny ``ice_text.model``-like tokenizer, trained in about a second on a bundled remote-sensing
corpus: the tiny VisualGLM model's tokenizer (tests, trying the pipeline without downloads)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

from remoteglm.errors import RemoteGLMError
from remoteglm.model.tokenizer import (MAX_BLANK_LENGTH, NEWLINE_TOKEN, SPECIAL_TOKENS, TAB_TOKEN, VOCAB_FILE, blank_token,
                                       preprocess)

DEFAULT_CORPUS = Path(__file__).parent / "assets" / "tiny_corpus.txt"


def _user_defined_symbols() -> list[str]:
    # Specials first and in the official order so their ids keep the official offsets
    # ([gMASK] = [MASK] + 1, <sop> = [MASK] + 4, <eop> = [MASK] + 5).
    return SPECIAL_TOKENS + [NEWLINE_TOKEN, TAB_TOKEN] + [blank_token(n) for n in range(2, MAX_BLANK_LENGTH + 1)]


def train_tiny_tokenizer(
    out_file: str | Path, texts: Iterable[str] | None = None, vocab_size: int = 1000, seed: int = 0
) -> Path:
    """Train a tiny ``ice_text.model``-like sentencepiece model; deterministic, about a second.

    Same pieces as the real file: <unk> <s> </s> <pad> at 0..3 (pad = 3 as official), the eight
    GLM specials in official order, <n>, <|tab|>, <|blank_2..80|>, and byte fallback so any
    character (every Chinese one included) round-trips. ``texts`` default to the bundled
    remote-sensing corpus. ``out_file`` may be a directory (``ice_text.model`` is written in it).
    """
    import sentencepiece as spm

    out = Path(out_file)
    if out.is_dir():
        out = out / VOCAB_FILE
    if texts is None:
        texts = DEFAULT_CORPUS.read_text(encoding="utf-8").splitlines()
    lines = [preprocess(t) for t in texts if t.strip()]
    if not lines:
        raise RemoteGLMError("train_tiny_tokenizer got no text: pass non-empty texts or keep the default corpus")
    buf = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=buf,
            model_type="unigram",
            vocab_size=vocab_size,
            user_defined_symbols=_user_defined_symbols(),
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=3,
            byte_fallback=True,
            character_coverage=0.9995,
            # Whitespace runs are already blank tokens; keep single leading/trailing spaces.
            remove_extra_whitespaces=False,
            split_digits=True,
            hard_vocab_limit=False,
            num_threads=1,
            shuffle_input_sentence=False,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise RemoteGLMError(
            f"cannot train the tiny tokenizer with vocab_size={vocab_size}: {str(e).strip().splitlines()[-1]}; "
            "use a larger vocab_size (at least ~400 plus the distinct characters of the corpus)"
        ) from None
    from remoteglm.io import write_atomic

    write_atomic(out, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
    return out


def ensure_tiny_tokenizer(path: str | Path, **kwargs) -> Path:
    """``path`` if it already exists, else train the tiny tokenizer there."""
    p = Path(path)
    if p.is_dir():
        p = p / VOCAB_FILE
    return p if p.is_file() else train_tiny_tokenizer(p, **kwargs)
