"""Fine-tune records (the same files as the VisualGLM path: caption, classification and
multi-task records, conversations with ``history``) -> chat-template samples for the
transformers engine, with the loss only on the answer.

    prompt = render(chat_messages(q, history), add_generation_prompt=True)   # what serving sends
    answer = render(..., answer=label)[len(prompt):]                          # e.g. "label<|im_end|>\\n"

Image placeholders expand to one token per merged patch (``Processor.encode``); labels are -100
on the prompt. A grounding record's boxes are written in the family's form first (``codec``: the
family's ``box_codec`` at the run's min/max pixels; ``remoteglm.data.box_text``). A sample over
``max_length`` has its answer cut (counted), or, if the prompt alone does not fit, is reported
before training starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.model.hf_folder import Processor, chat_messages
from remoteglm.data.records import Record
from remoteglm.model.sample import IGNORE_INDEX, record_texts
from remoteglm.train.data import check_images


@dataclass
class HFEncoder:
    processor: Processor
    max_length: int = 1024
    codec: Any = None  # the family's box codec at the run's resolution (writes a record's boxes)

    def __post_init__(self):
        tok = self.processor.tokenizer
        marks = set(tok.all_special_tokens) | {str(t) for t in tok.added_tokens_decoder.values()}
        self._marks = sorted(marks, key=len, reverse=True)  # the special tokens a template may put after an answer

    def answer_text(self, prompt_text: str, prompt: str, label: str, history=()) -> str:
        """The assistant turn as the template renders it after ``prompt_text`` (the label and the
        template's end-of-turn marks), or the label alone when the template renders anything else
        there: a template that rewrites earlier turns, or one that prints the answer in another form."""
        p = self.processor
        full = p.render(chat_messages(prompt, history, True, label), add_generation_prompt=False)
        tail = full[len(prompt_text):] if full.startswith(prompt_text) else ""
        rest = tail[len(label):]
        for mark in self._marks:
            rest = rest.replace(mark, "")
        if tail.startswith(label) and not rest.strip():  # nothing but end-of-turn marks after it
            return tail
        return label  # the stop token is added by ``encode``

    def encode(self, record: Record, grid_thw) -> dict:
        p = self.processor
        question, label = record_texts(record, self.codec)
        prompt_text = p.render(chat_messages(question, record.history, True), add_generation_prompt=True)
        prompt = p.encode(prompt_text, grid_thw)
        answer = p.tokenizer(self.answer_text(prompt_text, question, label, record.history), add_special_tokens=False)["input_ids"]
        if not any(t in p.stop_ids for t in answer):
            answer.append(p.stop_ids[0])  # the model must learn to stop
        room = self.max_length - len(prompt)
        if room < 2:
            raise RemoteGLMError(f"{record.img}: the prompt is {len(prompt)} tokens (image tokens included), not less than "
                                 f"--max_length {self.max_length}: lower --max_pixels or raise --max_length")
        cut = len(answer) > room
        if cut:  # keep the stop token (not what the template puts after it, e.g. "\n")
            stop = next(t for t in answer if t in p.stop_ids)
            answer = answer[: room - 1] + [stop]
        ids = prompt + answer
        return {"input_ids": ids, "labels": [IGNORE_INDEX] * len(prompt) + answer,
                "mm_token_type_ids": p.token_types(ids), "truncated": cut}


class HFDataset(torch.utils.data.Dataset):
    """Lazy: each item decodes its image (bounded by ``remoteglm.model.image``) when asked."""

    def __init__(self, records: Sequence[Record], encoder: HFEncoder):
        kept, problems = check_images(records)
        if problems:
            shown = "; ".join(problems[:5]) + (f"; ... {len(problems) - 5} more" if len(problems) > 5 else "")
            print(f"warning: skipping {len(records) - len(kept)} sample(s) whose image is missing or unreadable: {shown}")
        if not kept:
            raise RemoteGLMError("no training sample has a readable image; check the img paths (relative to the JSON file)")
        for r in kept:  # a box off its image: one line now, not mid-training
            record_texts(r, encoder.codec)
        self.records, self.encoder = list(kept), encoder
        self.skipped = len(records) - len(kept)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        from remoteglm.model.image import load_image

        r = self.records[i]
        pix = self.encoder.processor.images([load_image(r.img)])
        item = self.encoder.encode(r, pix["image_grid_thw"])
        item.update(pix)
        return item


def collate(batch: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad the token rows; concatenate the images' patch rows and grid rows (the models'
    flattened-patch input)."""
    n = max(len(b["input_ids"]) for b in batch)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.tensor([b[key] + [value] * (n - len(b[key])) for b in batch], dtype=torch.long)

    out = {"input_ids": pad("input_ids", pad_id), "labels": pad("labels", IGNORE_INDEX),
           "mm_token_type_ids": pad("mm_token_type_ids", 0),
           "attention_mask": torch.tensor([[1] * len(b["input_ids"]) + [0] * (n - len(b["input_ids"])) for b in batch])}
    if all("pixel_values" in b for b in batch):
        out["pixel_values"] = torch.cat([b["pixel_values"] for b in batch])
        out["image_grid_thw"] = torch.cat([b["image_grid_thw"] for b in batch])
    return out
