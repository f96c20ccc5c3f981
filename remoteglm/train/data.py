"""Fine-tuning samples: VisualGLM fine-tune JSON or a Chinese Karpathy dataset -> token tensors.

Layout per sample (as the official VisualGLM fine-tune):

    tok("<img>") + [pad] * image_length + tok("</img>问：{prompt}\\n答：") + [gMASK, <sop>] + tok(label) + [<eop>]

A record with ``"history": [[q1, a1], ...]`` (a conversation) puts those turns before its question,
``</img>问：{q1}\\n答：{a1}\\n问：{prompt}\\n答：``, as the chat sends them; the loss is on ``label``.

i.e. ``remoteglm.model.prompt.encode_prompt`` (the prompt the CLI, web demo, API and evaluation
send, id for id) followed by the answer, with the loss only on the answer (labels are -100 up to
and including ``<sop>``). Unlike the official loader, ``max_source_length`` counts the prompt
text only, so the image slots never eat the question, truncation is counted and reported instead
of silent, and images are read lazily in the DataLoader workers instead of being preloaded into RAM.
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from remoteglm.data.instructions import SENTENCE_PROMPTS
from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json
from remoteglm.model.prompt import encode_prompt

IGNORE_INDEX = -100


@dataclass
class Record:
    img: Path
    prompt: str
    label: str
    history: tuple[tuple[str, str], ...] = ()  # earlier turns of a conversation record, oldest first


def _history(path: Path, i: int, value: Any) -> tuple[tuple[str, str], ...]:
    """A record's optional ``"history": [[question, answer], ...]`` (ChatGLM's fine-tune convention)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
            isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in value):
        raise RemoteGLMError(f"{path}: item {i} 'history' must be a list of [question, answer] string pairs")
    return tuple((q, a) for q, a in value)


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def resolve_image(img: str, base: Path) -> Path:
    """Image paths are relative to the JSON file's directory; fall back to the working directory."""
    p = Path(img)
    if p.is_absolute():
        return p
    cand = base / p
    if cand.exists():
        return cand
    return p if p.exists() else cand


def load_records(path: str | Path, split: str = "train", seed: int = 42,
                 image_root: str | Path | None = None) -> list[Record]:
    """Read a fine-tune JSON list or a Chinese Karpathy dataset (``images[].sentences[].raw``).

    A Karpathy dataset gives one record per Chinese sentence of each image in ``split``, with a
    description question drawn (seeded) from the pool its built fine-tune files use
    (``remoteglm.data.instructions.SENTENCE_PROMPTS``). ``image_root`` (else the dataset's own
    ``image_root`` field, else the JSON's folder) is where relative image paths are looked up.
    """
    path = Path(path)
    data = read_json(path, "fine-tune data", hint="; pass a fine-tune JSON ({img, prompt, label} list) or a "
                     "dataset_<name>_zh.json (e.g. data/sample/sample_train.json)")
    base = Path(image_root) if image_root else path.parent
    if image_root is None and isinstance(data, dict) and data.get("image_root"):
        base = path.parent / data["image_root"]
    records: list[Record] = []
    if isinstance(data, list):
        for i, item in enumerate(data):
            if not isinstance(item, dict) or not {"img", "prompt", "label"} <= item.keys():
                raise RemoteGLMError(f"{path}: item {i} is not an {{\"img\", \"prompt\", \"label\"}} object")
            if not str(item["label"]).strip():
                raise RemoteGLMError(f"{path}: item {i} has an empty label")
            records.append(Record(resolve_image(str(item["img"]), base), str(item["prompt"]), str(item["label"]),
                                  _history(path, i, item.get("history"))))
    elif isinstance(data, dict) and isinstance(data.get("images"), list):
        rng = random.Random(seed)
        for im in data["images"]:
            if im.get("split", "train") != split:
                continue
            img = resolve_image(os.path.join(im.get("filepath", ""), im["filename"]), base)
            for s in im.get("sentences", []):
                text = (s.get("raw") or "").strip()
                if text:
                    records.append(Record(img, rng.choice(SENTENCE_PROMPTS), text))
    else:
        raise RemoteGLMError(
            f"{path}: unknown format; expected a list of {{img, prompt, label}} or a Karpathy-style "
            "{\"images\": [...]} dataset (run translation_en2zh.py to make one)")
    if not records:
        raise RemoteGLMError(f"{path}: no training samples found (split '{split}')")
    return records


def check_leaks(train: Sequence[Record], valid: Sequence[Record], train_files: Sequence[str | Path]) -> None:
    """Refuse, in one line and before any model loads, a mix that would leak: a train image whose
    content (not its name) is a validation image, or one that the split registry beside the
    training files (remoteglm.data.splits, written by the data builders) holds out as val/test."""
    from remoteglm.data.splits import held_out_by_registry, same_content

    images = list(dict.fromkeys(r.img for r in train))
    both = same_content(images, dict.fromkeys(r.img for r in valid))
    if both:
        img, copy = next(iter(both.items()))
        same = "is" if Path(img).resolve() == Path(copy).resolve() else "has the same bytes as"
        raise RemoteGLMError(f"{len(both)} train image(s) are also validation images (e.g. train {img} {same} "
                             f"validation {copy}): the validation loss would measure memory; use splits made together "
                             "(the same data builder run, or data/splits.json)")
    registry, held, stale = held_out_by_registry(train_files, images)
    if held:
        img, split, source = held[0]
        fix = (f"rebuild the stale source first: {'; '.join(stale)}" if stale else
               "leave that training file out, or rebuild it so that its splits follow the registry")
        raise RemoteGLMError(f"{len(held)} train image(s) are held out (val/test) in the split registry {registry} "
                             f"(e.g. {img} is {split} in {source}): training on them leaks into that evaluation; {fix}")


def check_images(records: Sequence[Record]) -> tuple[list[Record], list[str]]:
    """Drop records whose image is missing, not a readable image or over the pixel limit (read
    from its header, before PIL looks further); return (kept, problems)."""
    from remoteglm.model.image import open_image

    status: dict[Path, str | None] = {}
    for r in records:
        if r.img in status:
            continue
        if not r.img.exists():
            status[r.img] = f"{r.img}: missing"
            continue
        try:
            with open_image(r.img) as im:
                im.verify()
            status[r.img] = None
        except RemoteGLMError as e:  # (names the file)
            status[r.img] = str(e)
        except Exception as e:  # PIL raises many types for broken files
            status[r.img] = f"{r.img}: unreadable ({type(e).__name__})"
    kept = [r for r in records if status[r.img] is None]
    problems = [why for why in status.values() if why]
    return kept, problems


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
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.pre_image = encode_prompt(self.tokenizer, "", image_length=self.image_length).pre_image

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


class FinetuneDataset(torch.utils.data.Dataset):
    """Lazy image-text dataset. ``features`` (optional) maps an image path to its cached
    [image_length, hidden] embedding, used instead of decoding the image."""

    def __init__(self, records: Sequence[Record], encoder: SampleEncoder,
                 image_size: int = 224, features: Callable[[Path], torch.Tensor] | None = None):
        kept, problems = check_images(records)
        self.skipped = len(records) - len(kept)
        self.problems = problems
        if problems:
            shown = "; ".join(problems[:5]) + (f"; ... {len(problems) - 5} more" if len(problems) > 5 else "")
            _warn(f"skipping {self.skipped} sample(s) whose image is missing or unreadable: {shown}")
        if not kept:
            raise RemoteGLMError("no usable samples: every image is missing or unreadable; check the img paths "
                                 "(relative to the JSON file's folder)")
        self.records = list(kept)
        self.encoder = encoder
        self.image_size = image_size
        self.features = features
        self.encoded = [encoder.encode(r.prompt, r.label, r.history) for r in self.records]
        self.prompt_truncated = sum(e.prompt_truncated for e in self.encoded)
        self.label_truncated = sum(e.label_truncated for e in self.encoded)
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.records)

    def report(self) -> str:
        n = len(self.records)
        msg = f"{n} samples"
        if self.skipped:
            msg += f", {self.skipped} skipped (missing/unreadable image)"
        if self.prompt_truncated or self.label_truncated:
            msg += (f"; truncated: {self.prompt_truncated} prompt(s) > max_source_length={self.encoder.max_source_length}, "
                    f"{self.label_truncated} answer(s) > max_target_length={self.encoder.max_target_length} "
                    "(raise --max_source_length / --max_target_length to keep them whole)")
        return msg

    def _image(self, i: int) -> dict[str, torch.Tensor]:
        from remoteglm.model.image import preprocess_image

        path = self.records[i].img
        if self.features is not None:
            return {"image_embeds": self.features(path)}
        return {"image": preprocess_image(path, self.image_size)}

    def __getitem__(self, i: int) -> dict[str, Any]:
        # An image that verified but fails to decode (e.g. truncated) is skipped, not fatal:
        # take the next one so the epoch goes on.
        for step in range(len(self.records)):
            j = (i + step) % len(self.records)
            if j in self._bad:
                continue
            try:
                img = self._image(j)
            except RemoteGLMError as e:
                self._bad.add(j)
                _warn(f"skipping sample {j}: {e}")
                continue
            e = self.encoded[j]
            return {"input_ids": e.input_ids, "labels": e.labels, **img}
        raise RemoteGLMError("every image failed to load; nothing to train on")


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
