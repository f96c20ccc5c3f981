"""Outputs: the Chinese Karpathy-style dataset and the VisualGLM fine-tune files.

``dataset_<name>_zh.json`` keeps every image, split and sentence (English beside Chinese).
``<name>_{train,val,test}.json`` are lists of ``{"img", "prompt", "label"}`` (plus ``task`` and,
for val/test, ``references``). ``img`` is relative to the folder of the JSON file; training code
resolves it against that folder first, then the working directory.

With ``tasks`` (``--tasks``) the files hold the kinds asked for (see ``kinds.py``): caption,
description, classify, presence, count, attribute and conversation records, the last with
``"history": [[question, answer], ...]`` before its ``prompt``/``label`` turn; ``mix``
(``--mix``) weights the kinds of the train file.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import RemoteGLMError
from ..io import read_json
from .datasets import SPLITS, CaptionSet
from .glossary import tokenize_zh
from .instructions import DESCRIPTION_PROMPTS, PARAGRAPH_PROMPTS, SENTENCE_PROMPTS, classify_prompt, pick
from .kinds import mix_records
from .rewrite import source_key
from .translate import normalise


def build_zh_dataset(cs: CaptionSet, translations: dict[str, str], labels: dict[str, str] | None = None,
                     meta: dict | None = None, instructions: dict[str, list[dict]] | None = None) -> dict:
    """The Chinese Karpathy-style dataset: same images, splits and sentence counts as ``cs``;
    ``instructions`` (tasks.py, per file name) go to each image's ``instructions`` list."""
    names_zh = dict(zip(cs.classes, cs.classes_zh))
    images, sentid = [], 0
    for im in cs.images:
        sents = []
        for en in im.sentences:
            zh = translations[normalise(en)]
            sents.append({"raw": zh, "raw_en": en, "tokens": tokenize_zh(zh), "sentid": sentid})
            sentid += 1
        entry = {"filename": im.filename, "imgid": im.imgid, "split": im.split,
                 "class": im.cls, "class_zh": names_zh.get(im.cls), "sentences": sents}
        if labels is not None:
            entry["label"] = labels[source_key([s["raw"] for s in sents])]
        if instructions is not None:
            entry["instructions"] = instructions.get(im.filename, [])
        images.append(entry)
    return {"dataset": cs.name, **(meta or {}), "classes": cs.classes, "classes_zh": cs.classes_zh, "images": images}


def load_zh_dataset(path: str | Path) -> dict:
    """Read a ``dataset_<name>_zh.json`` written by this pipeline, checking its shape."""
    data = read_json(path, "Chinese dataset")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise RemoteGLMError(f"{path}: not a Chinese dataset (no 'images' list); build it with translation_en2zh.py")
    for im in data["images"]:
        if not isinstance(im, dict) or not im.get("sentences") or "raw" not in im["sentences"][0]:
            name = im.get("filename", "?") if isinstance(im, dict) else "?"
            raise RemoteGLMError(f"{path}: image {name} has no Chinese sentences; rebuild it with translation_en2zh.py")
    return data


def image_path(image_dir: str | Path, filename: str, json_dir: str | Path) -> str:
    """Path of an image relative to the folder of the JSON that names it (absolute across drives)."""
    full = Path(image_dir, filename).absolute()
    try:
        return Path(os.path.relpath(full, Path(json_dir).absolute())).as_posix()
    except ValueError:  # Windows: another drive
        return full.as_posix()


def build_finetune_records(zh: dict, image_dir: str | Path, json_dir: str | Path, seed: int = 42,
                           classify: bool = True, tasks: tuple[str, ...] | None = None,
                           mix: dict[str, float] | None = None) -> dict[str, list[dict]]:
    """VisualGLM fine-tune records per split from a Chinese dataset (see module docstring).

    train: one record per distinct Chinese sentence of an image (or one per image with its
    rewritten ``label``); val/test: one description record per image with all sentences as
    ``references``. With ``classify``, one scene-class record per image with a known class.
    With ``tasks``, the records of those kinds instead (``_kind_records``), the train file
    weighted by ``mix``.
    """
    classes = zh.get("classes_zh") or []
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    if tasks is not None:
        for im in zh["images"]:
            if im["split"] not in out:
                raise RemoteGLMError(f"image {im['filename']} has split '{im['split']}'; expected train, val or test")
            img = image_path(image_dir, im["filename"], json_dir)
            out[im["split"]].extend(_kind_records(im, img, seed, tasks, classes))
        if mix:
            out["train"] = mix_records(out["train"], mix, seed)
        check_no_leak(out)
        return out
    for im in zh["images"]:
        split, fn = im["split"], im["filename"]
        if split not in out:
            raise RemoteGLMError(f"image {fn} has split '{split}'; expected train, val or test")
        img = image_path(image_dir, fn, json_dir)
        zh_sents = list(dict.fromkeys(s["raw"] for s in im["sentences"]))
        if split == "train" and not im.get("label"):
            for k, sent in enumerate(zh_sents):
                out[split].append({"img": img, "prompt": pick(SENTENCE_PROMPTS, seed, fn, k), "label": sent,
                                   "task": "caption"})
        else:
            paragraph = bool(im.get("label"))
            rec = {"img": img, "prompt": pick(PARAGRAPH_PROMPTS if paragraph else SENTENCE_PROMPTS, seed, fn, 0),
                   "label": im.get("label") or zh_sents[0], "task": "caption"}
            if split != "train":
                rec["references"] = [s["raw"] for s in im["sentences"]]
            out[split].append(rec)
        if classify and classes and im.get("class_zh"):
            out[split].append({"img": img, "prompt": classify_prompt(classes), "label": im["class_zh"],
                               "task": "classify"})
    check_no_leak(out)
    return out


def _kind_records(im: dict, img: str, seed: int, kinds: tuple[str, ...], classes: list[str]) -> list[dict]:
    """One image's records of the given kinds (val/test caption and description ones carry
    ``references``; a conversation's earlier turns are its ``history``)."""
    fn, split = im["filename"], im["split"]
    refs = [s["raw"] for s in im["sentences"]]
    out = []
    if "caption" in kinds:
        sents = list(dict.fromkeys(refs)) if split == "train" else refs[:1]
        for k, sent in enumerate(sents):
            rec = {"img": img, "prompt": pick(SENTENCE_PROMPTS, seed, fn, k), "label": sent, "task": "caption"}
            out.append(rec if split == "train" else {**rec, "references": refs})
    if "description" in kinds and im.get("label"):
        rec = {"img": img, "prompt": pick(DESCRIPTION_PROMPTS, seed, fn, "desc"), "label": im["label"],
               "task": "description"}
        out.append(rec if split == "train" else {**rec, "references": refs})
    if "classify" in kinds and classes and im.get("class_zh"):
        out.append({"img": img, "prompt": classify_prompt(classes), "label": im["class_zh"], "task": "classify"})
    for item in im.get("instructions") or []:
        if item["task"] not in kinds:
            continue
        if item["task"] == "conversation":
            *history, (q, a) = item["turns"]
            out.append({"img": img, "prompt": q, "label": a, "history": [list(t) for t in history],
                        "task": "conversation"})
        else:
            out.append({"img": img, "prompt": item["question"], "label": item["answer"], "task": item["task"]})
    return out


def check_no_leak(records: dict[str, list[dict]]) -> None:
    """Raise if any image is in train and in val or test (RemoteGLM's data had this bug)."""
    train = {r["img"] for r in records.get("train", [])}
    for split in ("val", "test"):
        leaked = train & {r["img"] for r in records.get(split, [])}
        if leaked:
            raise RemoteGLMError(f"{len(leaked)} {split} image(s) also in train (e.g. {sorted(leaked)[0]})")
