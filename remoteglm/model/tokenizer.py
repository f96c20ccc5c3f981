"""ChatGLM-6B tokenizer that reads a local ``ice_text.model`` with sentencepiece.

No remote code, no hub, no transformers: the hub's ``tokenization_chatglm.py`` breaks with
transformers >= 4.34 and wants the network; this one only needs the model file.

Behaviour matched with the official tokenizer:
- text is preprocessed before sentencepiece: ``\\n`` -> ``<n>``, ``\\t`` -> ``<|tab|>``, runs of
  2..80 spaces -> ``<|blank_N|>``; decoding reverses it. sentencepiece adds its dummy prefix ``▁``.
- special pieces ``[MASK] [gMASK] [sMASK] <unused_0> <sop> <eop> <ENC> <dBLOCK>`` live inside
  ``ice_text.model`` (pieces 130000..130007 of the real file), pad is ``<pad>`` (piece 3).
- ``encode(text)`` appends ``[gMASK] <sop>``; ``build_inputs_with_special_tokens(a, b)`` gives
  ``a + [gMASK, <sop>] + b + [<eop>]``; batches are padded on the left with the pad id.
- token id = piece id + ``num_image_tokens``; ids below ``num_image_tokens`` are image tokens.

About ``num_image_tokens``: the tokenizer class of ChatGLM-6B defaults it to 20000 (the GLM-130B
icetk layout: 20000 image ids, then the 130k text pieces, so [MASK] = 150000 and vocab 150528).
ChatGLM-6B since v0.1.0 and VisualGLM-6B dropped the image rows from the embedding (vocab 130528)
and load the tokenizer with ``num_image_tokens`` 0 (ChatGLM-6B issues #965 and #987: the current
vocabulary has 130344 pieces, "set num_image_tokens to 0"). That is what makes [MASK] = 130000,
<sop> = 130004, <eop> = 130005 and pad = 3. So the default here is 0, the layout the VisualGLM-6B
weights need; pass 20000 for the legacy 150528-vocab layout.

The embedding has 130528 rows but only 130344 pieces: ids in between have no text. ``decode``
treats them (and any id past the vocabulary) as <unk>; generation should mask those logits.
"""

from __future__ import annotations

import os
import re
import shutil
from functools import cached_property
from pathlib import Path
from typing import Sequence

from remoteglm.errors import RemoteGLMError

VOCAB_FILE = "ice_text.model"
SPECIAL_TOKENS = ["[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>", "<dBLOCK>"]
MAX_BLANK_LENGTH = 80
NEWLINE_TOKEN = "<n>"
TAB_TOKEN = "<|tab|>"

# Ids of the real ChatGLM-6B / VisualGLM-6B tokenizer (ice_text.model, num_image_tokens 0).
# Documentation and a reference for tests: the code always asks the model file for ids.
OFFICIAL_IDS = {
    "[MASK]": 130000,
    "[gMASK]": 130001,
    "[sMASK]": 130002,
    "<unused_0>": 130003,
    "<sop>": 130004,
    "<eop>": 130005,
    "<ENC>": 130006,
    "<dBLOCK>": 130007,
    "<pad>": 3,
}
OFFICIAL_NUM_IMAGE_TOKENS = 0  # what VisualGLM-6B/ChatGLM-6B >= v0.1.0 use (see module doc)
LEGACY_NUM_IMAGE_TOKENS = 20000  # the GLM-130B icetk layout (vocab 150528)
OFFICIAL_NUM_PIECES = 130344  # pieces in the real ice_text.model
OFFICIAL_VOCAB_SIZE = 130528  # rows of the VisualGLM-6B word embedding (pieces padded up)

_MISSING_HINT = (
    f"get {VOCAB_FILE} from the THUDM/chatglm-6b or THUDM/visualglm-6b Hugging Face repository "
    "and pass its path (or its directory) with --tokenizer"
)


def blank_token(n: int) -> str:
    return f"<|blank_{n}|>"


_BLANKS = re.compile(" {2,%d}" % MAX_BLANK_LENGTH)
_BLANK_TOKENS = re.compile(r"<\|blank_(\d+)\|>")
# Chinese ideographs (CJK unified + extension A + compatibility + supplementary planes),
# CJK punctuation and full-width forms: what English mode must not emit.
_CJK = re.compile("[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0002ffff]")
# UTF-8 lead bytes of U+4000..U+9FFF: with byte fallback an out-of-vocabulary Chinese character
# is spelled as <0xE4>..<0xE9> + two continuation bytes, so suppressing Chinese means these too.
_CJK_LEAD_BYTES = {f"<0x{b:02X}>" for b in range(0xE4, 0xEA)}


def preprocess(text: str) -> str:
    text = text.replace("\n", NEWLINE_TOKEN).replace("\t", TAB_TOKEN)
    # Longest run first, like the official replace loop from 80 down to 2; a run longer than
    # 80 becomes <|blank_80|> followed by the rest.
    return _BLANKS.sub(lambda m: blank_token(len(m.group(0))), text)


def _postprocess(text: str) -> str:
    text = text.replace(NEWLINE_TOKEN, "\n").replace(TAB_TOKEN, "\t")
    return _BLANK_TOKENS.sub(
        lambda m: " " * int(m.group(1)) if 2 <= int(m.group(1)) <= MAX_BLANK_LENGTH else m.group(0), text
    )


def resolve_vocab_file(path: str | os.PathLike) -> Path:
    """``ice_text.model`` itself, or a directory holding it; a clear error otherwise."""
    p = Path(path).expanduser()
    if p.is_dir():
        f = p / VOCAB_FILE
        if not f.is_file():
            raise RemoteGLMError(f"no {VOCAB_FILE} in directory {p}: {_MISSING_HINT}")
        return f
    if not p.exists():
        raise RemoteGLMError(f"tokenizer file not found: {p}: {_MISSING_HINT}")
    return p


class ChatGLMTokenizer:
    """The ChatGLM-6B tokenizer (ids and behaviour of the official one) on a local model file."""

    def __init__(self, vocab_file: str | Path, num_image_tokens: int = OFFICIAL_NUM_IMAGE_TOKENS):
        import sentencepiece as spm

        self.vocab_file = resolve_vocab_file(vocab_file)
        self.num_image_tokens = int(num_image_tokens)
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(self.vocab_file))
        except (OSError, RuntimeError) as e:
            raise RemoteGLMError(
                f"{self.vocab_file} is not a sentencepiece model ({str(e).strip().splitlines()[-1]}): {_MISSING_HINT}"
            ) from None
        missing = [t for t in SPECIAL_TOKENS + ["<pad>", NEWLINE_TOKEN] if self.sp.PieceToId(t) == self.sp.unk_id()]
        if missing:
            raise RemoteGLMError(
                f"{self.vocab_file} is not a ChatGLM tokenizer model (no {', '.join(missing)} pieces): {_MISSING_HINT}"
            )
        self.mask_token_id = self._piece_id("[MASK]")
        self.gmask_token_id = self._piece_id("[gMASK]")
        self.smask_token_id = self._piece_id("[sMASK]")
        self.bos_token_id = self._piece_id("<sop>")
        self.eos_token_id = self._piece_id("<eop>")
        self.pad_token_id = self._piece_id("<pad>")
        self.unk_token_id = self.sp.unk_id() + self.num_image_tokens
        self.bos_token, self.eos_token, self.pad_token = "<sop>", "<eop>", "<pad>"
        self.mask_token, self.gmask_token = "[MASK]", "[gMASK]"
        self.padding_side = "left"

    @classmethod
    def from_pretrained(cls, path: str | Path, num_image_tokens: int = OFFICIAL_NUM_IMAGE_TOKENS) -> "ChatGLMTokenizer":
        """Load from ``ice_text.model`` or a directory containing it (a model directory works)."""
        return cls(resolve_vocab_file(path), num_image_tokens=num_image_tokens)

    def _piece_id(self, piece: str) -> int:
        return self.sp.PieceToId(piece) + self.num_image_tokens

    # ---- sizes and special ids -------------------------------------------------------------
    @property
    def num_text_tokens(self) -> int:
        return self.sp.GetPieceSize()

    @property
    def vocab_size(self) -> int:
        return self.num_image_tokens + self.num_text_tokens

    def __len__(self) -> int:
        return self.vocab_size

    @cached_property
    def special_token_ids(self) -> frozenset[int]:
        """The 8 GLM specials plus sentencepiece control pieces (<unk>, <s>, </s>, <pad>)."""
        ids = {self._piece_id(t) for t in SPECIAL_TOKENS}
        ids |= {i + self.num_image_tokens for i in range(self.num_text_tokens) if self.sp.IsControl(i) or self.sp.IsUnknown(i)}
        ids.add(self.pad_token_id)
        return frozenset(ids)

    # ---- encoding --------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        return self.sp.EncodeAsPieces(preprocess(text))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [i + self.num_image_tokens for i in self.sp.EncodeAsIds(preprocess(text))]
        return self.build_inputs_with_special_tokens(ids) if add_special_tokens else ids

    def build_inputs_with_special_tokens(self, a: list[int], b: list[int] | None = None) -> list[int]:
        out = list(a) + [self.gmask_token_id, self.bos_token_id]
        if b is not None:
            out += list(b) + [self.eos_token_id]
        return out

    def __call__(
        self,
        text: str | list[str],
        padding: bool | str = False,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
        max_length: int | None = None,
    ) -> dict:
        """HF-style batch encoding: ``input_ids`` and ``attention_mask`` (1 = real token).

        ``padding=True``/``"longest"`` pads on the left with the pad id to the longest sequence;
        ``"max_length"`` pads to ``max_length``. ``return_tensors="pt"`` gives LongTensors.
        """
        single = isinstance(text, str)
        seqs = [self.encode(t, add_special_tokens=add_special_tokens) for t in ([text] if single else text)]
        if padding not in (False, True, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding must be True, False, 'longest' or 'max_length', got {padding!r}")
        if padding and padding != "do_not_pad":
            target = max((len(s) for s in seqs), default=0)
            if padding == "max_length":
                if max_length is None:
                    raise ValueError("padding='max_length' needs max_length")
                if target > max_length:
                    raise ValueError(f"a sequence has {target} tokens, more than max_length={max_length}")
                target = max_length
            masks = [[0] * (target - len(s)) + [1] * len(s) for s in seqs]
            seqs = [[self.pad_token_id] * (target - len(s)) + s for s in seqs]
        else:
            masks = [[1] * len(s) for s in seqs]
        if return_tensors is None:
            return {"input_ids": seqs[0] if single else seqs, "attention_mask": masks[0] if single else masks}
        if return_tensors != "pt":
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt' or None")
        if len({len(s) for s in seqs}) > 1:
            raise ValueError("sequences have different lengths: pass padding=True to return tensors")
        import torch

        return {
            "input_ids": torch.tensor(seqs, dtype=torch.long),
            "attention_mask": torch.tensor(masks, dtype=torch.long),
        }

    # ---- decoding --------------------------------------------------------------------------
    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (list, tensor or int). Pad is always dropped, like the official.

        With ``skip_special_tokens`` image ids, specials and ids past the vocabulary are dropped;
        without, image ids show as ``<image_N>``, specials as their piece text, ids past the
        vocabulary as ``<unk>``. For streaming, decode the whole answer each step and hold back
        a trailing U+FFFD: a character spelled in byte pieces is incomplete until its last byte.
        """
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        out: list[str] = []
        run: list[int] = []  # consecutive text pieces, decoded together so bytes merge into chars

        def flush() -> None:
            if run:
                out.append(self.sp.DecodeIds(run))
                run.clear()

        for i in (int(x) for x in ids):
            if i < 0:
                raise ValueError(f"negative token id {i}")
            if i == self.pad_token_id:
                continue
            if i < self.num_image_tokens:
                if not skip_special_tokens:
                    flush()
                    out.append(f"<image_{i}>")
                continue
            if i >= self.vocab_size:  # an embedding padding row: no text, like <unk>
                if not skip_special_tokens:
                    flush()
                    out.append(self.sp.IdToPiece(self.sp.unk_id()))
                continue
            if i in self.special_token_ids:
                if not skip_special_tokens:
                    flush()
                    out.append(self.sp.IdToPiece(i - self.num_image_tokens))
                continue
            run.append(i - self.num_image_tokens)
        flush()
        return _postprocess("".join(out))

    def batch_decode(self, batch, skip_special_tokens: bool = True) -> list[str]:
        if hasattr(batch, "tolist"):
            batch = batch.tolist()
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in batch]

    def get_vocab(self) -> dict[str, int]:
        vocab = {f"<image_{i}>": i for i in range(self.num_image_tokens)}
        vocab.update({self.sp.IdToPiece(i): i + self.num_image_tokens for i in range(self.num_text_tokens)})
        return vocab

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]):
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(t) for t in tokens]

    def _token_to_id(self, token: str) -> int:
        m = re.fullmatch(r"<image_(\d+)>", token)
        if m and int(m.group(1)) < self.num_image_tokens:
            return int(m.group(1))
        return self._piece_id(token)

    def convert_ids_to_tokens(self, ids):
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, int):
            return self._id_to_token(ids)
        return [self._id_to_token(int(i)) for i in ids]

    def _id_to_token(self, i: int) -> str:
        if i < 0:
            raise ValueError(f"negative token id {i}")
        if i < self.num_image_tokens:
            return f"<image_{i}>"
        if i >= self.vocab_size:  # an embedding padding row
            return self.sp.IdToPiece(self.sp.unk_id())
        return self.sp.IdToPiece(i - self.num_image_tokens)

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        return _postprocess(self.sp.DecodePieces(list(tokens)))

    # ---- language helpers ------------------------------------------------------------------
    @cached_property
    def chinese_token_ids(self) -> frozenset[int]:
        """Ids whose piece holds a Chinese character or CJK punctuation (or a CJK UTF-8 lead byte).

        Used to suppress Chinese while generating in English mode.
        """
        ids = set()
        for i in range(self.num_text_tokens):
            piece = self.sp.IdToPiece(i)
            if _CJK.search(piece) or (self.sp.IsByte(i) and piece in _CJK_LEAD_BYTES):
                ids.add(i + self.num_image_tokens)
        return frozenset(ids)

    def is_chinese_token(self, id: int) -> bool:
        return int(id) in self.chinese_token_ids

    # ---- saving ----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Copy the model file into ``directory`` as ``ice_text.model`` (atomic); return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        dst = directory / VOCAB_FILE
        if dst.exists() and dst.resolve() == self.vocab_file.resolve():
            return dst
        from remoteglm.io import write_atomic

        write_atomic(dst, lambda tmp: shutil.copyfile(self.vocab_file, tmp))
        return dst

    def __repr__(self) -> str:
        return f"ChatGLMTokenizer({str(self.vocab_file)!r}, vocab_size={self.vocab_size}, num_image_tokens={self.num_image_tokens})"
