"""VisualGLM's training sample: (prompt, label[, history]) -> input ids and labels, and the batch
collation. Layout per sample (as the official VisualGLM fine-tune)::

    tok("<img>") + [pad] * image_length + tok("</img>问：{prompt}\\n答：") + [gMASK, <sop>] + tok(label) + [<eop>]

A record with a history (a conversation) puts those turns before its question, as the chat sends
them; the loss is on ``label`` only. A grounding record's boxes are written in the family's form
(``codec``, ``remoteglm.data.box_text``) before anything is tokenised.

i.e. ``remoteglm.model.prompt.encode_prompt`` (the prompt the CLI, web demo, API and evaluation
send, id for id) followed by the answer, with the loss only on the answer (labels are
``IGNORE_INDEX`` up to and including ``<sop>``). ``max_source_length`` counts the prompt text
only, so the image slots never eat the question; truncation is counted, not silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from remoteglm.data.box_text import render_record
from remoteglm.model.image import image_size
from remoteglm.model.prompt import encode_prompt

IGNORE_INDEX = -100  # label of a position without loss (torch's CrossEntropyLoss default)


def record_texts(record, codec) -> tuple[str, str]:
    """(prompt, label) of a record with its boxes in the family's form (``codec``), on its image's
    upright size read from the header; the texts as they are for a record without boxes."""
    size = image_size(record.img) if record.prompt_boxes or record.label_boxes else None
    return render_record(record, codec, size)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt_truncated: bool
    label_truncated: bool


@dataclass
class SampleEncoder:
    """Turns (prompt, label) into the VisualGLM training layout; counts what it had to cut."""

    tokenizer: Any
    max_source_length: int = 64
    max_target_length: int = 256
    image_length: int = 32
    codec: Any = None  # the family's box codec (Family.box_codec): writes a grounding record's boxes
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.pre_image = encode_prompt(self.tokenizer, "", image_length=self.image_length).pre_image

    def encode_record(self, record) -> Encoded:
        """A ``remoteglm.data.records.Record``, its boxes written by ``codec``."""
        return self.encode(*record_texts(record, self.codec), record.history)

    def encode(self, prompt: str, label: str, history: Sequence[tuple[str, str]] = ()) -> Encoded:
        tok = self.tokenizer
        # The serving prompt itself (with a conversation's earlier turns, as the chat sends them);
        # a question past max_source_length is cut, "问：" and the "\n答：" cue kept; turns that do
        # not fit go first, oldest first.
        history, dropped = list(history), False
        while True:
            source = encode_prompt(tok, prompt, history or None, image_length=self.image_length,
                                   max_text_tokens=self.max_source_length)
            if not (source.truncated and history):
                break
            history, dropped = history[1:], True
        answer = tok.encode(label, add_special_tokens=False)
        label_cut = len(answer) > self.max_target_length - 2
        if label_cut:
            answer = answer[: self.max_target_length - 2]
        context = len(source.ids)  # everything up to and including <sop>
        ids = source.ids + answer + [tok.eos_token_id]
        labels = [IGNORE_INDEX] * context + ids[context:]
        return Encoded(ids, labels, source.truncated or dropped, label_cut)


def collate(batch: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sample (padding is causal after <sop>, so it never leaks back)."""
    n = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), n), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE_INDEX, dtype=torch.long)
    for k, b in enumerate(batch):
        ids[k, : len(b["input_ids"])] = torch.tensor(b["input_ids"])
        labels[k, : len(b["labels"])] = torch.tensor(b["labels"])
    out = {"input_ids": ids, "labels": labels}
    for key in ("image", "image_embeds"):
        if key in batch[0]:
            out[key] = torch.stack([b[key] for b in batch])
    return out
