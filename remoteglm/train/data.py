"""The fine-tune dataset of the VisualGLM trainer: records (``remoteglm.data.records``) -> encoded
samples (``remoteglm.model.sample``) with lazily read images; missing or unreadable images are
counted and skipped, and the leak check keeps validation images out of training.

Images are read lazily in the DataLoader workers instead of being preloaded into RAM (as the
official loader does).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from remoteglm.data.records import Record
from remoteglm.errors import RemoteGLMError
from remoteglm.model.sample import SampleEncoder


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


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


def training_records(opts) -> tuple[list[Record], list[Record]]:
    """Every family's training data, read and checked before any model loads: the records of
    ``--train_data`` and ``--valid_data`` (a Karpathy dataset's prompts drawn with ``--seed``), one
    line for a split with no samples, one none of whose images exist, or a leak (``check_leaks``)."""
    from remoteglm.data.records import load_records

    train = [r for p in opts.train_data for r in load_records(p, "train", opts.seed, opts.image_root)]
    valid = [r for p in opts.valid_data or [] for r in load_records(p, "val", opts.seed, opts.image_root)]
    for split, recs, files in (("train", train, opts.train_data), ("valid", valid, opts.valid_data or [])):
        if files and not recs:
            raise RemoteGLMError(f"no {split} samples in {' '.join(map(str, files))}")
        if recs and not any(r.img.is_file() for r in recs):
            raise RemoteGLMError(f"none of the {len(recs)} {split} images exist (first: {recs[0].img}); "
                                 "fix the img paths or pass --image_root (IMAGE_ROOT) to the folder that holds them")
    check_leaks(train, valid, opts.train_data)
    return train, valid


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
        self.encoded = [encoder.encode_record(r) for r in self.records]
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
