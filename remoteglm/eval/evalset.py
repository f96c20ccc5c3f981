"""What gets evaluated: images of one split with all their Chinese references and scene class,
read from a Chinese Karpathy dataset (``dataset_<name>_zh.json``) or a split's fine-tune JSON
(``<name>_test.json``), plus the leakage guard against the training file.

A fine-tune JSON may also hold (detected by each record's ``task``):

- ``task: "classify"`` records of a folder-per-class scene set ({img, prompt, label: the Chinese
  class}): images with a class and no caption, evaluated by classification only;
- ``task: "vqa"`` records of RSVQA ({img, prompt: the Chinese question, label, qtype}): the
  questions of ``EvalSet.questions``; the instruction data's ``presence`` and ``count`` records
  join them where their answer is 是/否 or a number.

- grounding records (``kind``: refer / identify / grounded / detect / count, with ``prompt_boxes`` /
  ``label_boxes``): the items of ``EvalSet.grounding`` (remoteglm/eval/grounded.py).

Records of other tasks (conversations, attribute questions of the instruction data) are not
evaluated; ``EvalSet.skipped`` counts them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from remoteglm.data.splits import same_content
from remoteglm.errors import RemoteGLMError
from remoteglm.data.instructions import CLASSIFY_PROMPT, classify_prompt
from remoteglm.eval.classify import classes_in_prompt
from remoteglm.eval.grounded import KINDS as GROUNDING_KINDS, GroundingItem, read_item
from remoteglm.eval.vqa import QTYPES, answer_kind, canonical_qtype, expected_value
from remoteglm.io import read_json
from remoteglm.model.prompt import DEFAULT_PROMPT

CAPTION_PROMPT = DEFAULT_PROMPT  # the official VisualGLM default prompt, 描述这张图片。


@dataclass
class EvalImage:
    key: str  # unique id shown in the report (the dataset filename)
    path: Path
    references: list[str]
    class_zh: str | None = None
    classify_prompt: str | None = None


@dataclass
class VQAQuestion:
    qid: str        # "q<index in the file>"
    key: str        # the image's key (EvalImage.key)
    path: Path
    prompt: str
    label: str
    qtype: str      # presence / comparison / count / rural_urban / area (or the file's own name)
    kind: str       # how it is answered: yesno / count / rural_urban / area (remoteglm.eval.normalize)


@dataclass
class EvalSet:
    source: Path
    kind: str  # "dataset" or "finetune"
    name: str
    split: str
    images: list[EvalImage]  # every image: with captions, a class, or only questions
    classes: list[str] = field(default_factory=list)
    questions: list[VQAQuestion] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # records of tasks not evaluated, per task
    grounding: list[GroundingItem] = field(default_factory=list)

    @property
    def has_classes(self) -> bool:
        return bool(self.classes) and any(im.class_zh for im in self.images)

    @property
    def caption_images(self) -> list[EvalImage]:
        return [im for im in self.images if im.references]

    @property
    def tasks(self) -> list[str]:
        """What this set can evaluate: caption, classify, vqa, grounding."""
        return [t for t, has in (("caption", bool(self.caption_images)), ("classify", self.has_classes),
                                 ("vqa", bool(self.questions)), ("grounding", bool(self.grounding))) if has]


def load_eval_set(path: str | os.PathLike, split: str = "test", image_root: str | os.PathLike | None = None,
                  limit: int | None = None, classify_template: str = CLASSIFY_PROMPT) -> EvalSet:
    """Images to evaluate. A Karpathy dataset gives the images of ``split``; a fine-tune JSON
    is one split already (``split`` is then only a label)."""
    from remoteglm.data.records import image_base, resolve_image

    path = Path(path)
    data = read_json(path, "evaluation data", hint="; pass dataset_<name>_zh.json (translation_en2zh.py writes "
                     "it) or a split's fine-tune JSON (e.g. data/sample/sample_test.json)")
    base = image_base(path, data, image_root)
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        es = _from_dataset(path, data, split, base, resolve_image, classify_template)
    elif isinstance(data, list):
        es = _from_finetune(path, data, split, base, resolve_image, classify_template)
    else:
        raise RemoteGLMError(f"{path}: unknown format; expected a Chinese Karpathy dataset ({{\"images\": [...]}}) "
                             "or a fine-tune list of {img, prompt, label}")
    if not es.images:
        splits = sorted({im.get("split", "?") for im in data["images"]}) if es.kind == "dataset" else []
        hint = f" (splits in the file: {', '.join(splits)})" if splits else ""
        if es.kind == "dataset":
            raise RemoteGLMError(f"{path}: no images with references in split '{split}'{hint}; choose another --split")
        tasks = ", ".join(sorted(es.skipped)) or "none"
        raise RemoteGLMError(f"{path}: no captions, scene-class (task \"classify\"), VQA (task \"vqa\") or grounding "
                             f"(kind {'/'.join(GROUNDING_KINDS)}) records "
                             f"to evaluate (tasks in the file: {tasks})")
    if limit is not None:
        if limit < 1:
            raise RemoteGLMError(f"--limit must be >= 1 (got {limit})")
        es.images = es.images[:limit]
        kept = {im.key for im in es.images}
        es.questions = [q for q in es.questions if q.key in kept]
        es.grounding = [g for g in es.grounding if g.key in kept]
    missing = [im.path for im in es.images if not im.path.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise RemoteGLMError(f"image {missing[0]} not found{more}: image paths are relative to the JSON's folder; "
                             "pass --image_root DIR if the images live elsewhere")
    return es


def _has_text(s: str) -> bool:
    """A reference must hold a letter or character: one of punctuation only scores nothing."""
    return re.search(r"[^\W_]", s) is not None


def _dataset_classes(data: dict) -> list[str]:
    from remoteglm.data.glossary import CLASS_NAMES_ZH, CLASSES

    if data.get("classes_zh"):
        return [str(c) for c in data["classes_zh"]]
    name = str(data.get("dataset", ""))
    for known in CLASSES:
        if name.lower() == known.lower() or name.lower().startswith(known.lower() + "_"):
            return [CLASS_NAMES_ZH[known][c] for c in CLASSES[known]]
    return []


def _from_dataset(path, data, split, base, resolve_image, template) -> EvalSet:
    from remoteglm.data.glossary import CLASS_NAMES_ZH

    classes = _dataset_classes(data)
    en_to_zh = {en: zh for table in CLASS_NAMES_ZH.values() for en, zh in table.items()}
    if data.get("classes") and data.get("classes_zh"):
        en_to_zh.update(zip(data["classes"], data["classes_zh"]))
    prompt = classify_prompt(classes, template) if classes else None
    images, seen = [], set()
    for im in data["images"]:
        if not isinstance(im, dict) or im.get("split", "test") != split:
            continue
        fn = im.get("filename")
        if not fn:
            raise RemoteGLMError(f"{path}: an image entry has no 'filename'")
        refs = [r for r in (str(s.get("raw", "")).strip() for s in im.get("sentences", [])) if _has_text(r)]
        if not refs:
            raise RemoteGLMError(f"{path}: image {fn} has no Chinese sentences ('raw'); rebuild the dataset with translation_en2zh.py")
        key = os.path.join(im.get("filepath", ""), fn)
        if key in seen:
            raise RemoteGLMError(f"{path}: image {key} is listed twice in split '{split}'")
        seen.add(key)
        cls = im.get("class_zh") or en_to_zh.get(im.get("class", ""))
        if cls and classes and cls not in classes:
            raise RemoteGLMError(f"{path}: image {fn} has class {cls!r}, which is not in classes_zh {classes}")
        images.append(EvalImage(key, resolve_image(key, base), refs, cls if classes else None, prompt))
    return EvalSet(path, "dataset", str(data.get("dataset") or path.stem), split, images, classes)


def _drop_paragraphs(labels: list[str]) -> list[str]:
    """A label that just joins two or more of the other labels (the "详细描述" record) is not an
    extra reference."""
    out = []
    for lab in labels:
        inside = sum(1 for other in labels if other != lab and other in lab)
        if inside < 2:
            out.append(lab)
    return out or labels


CAPTION_TASKS = (None, "caption")  # records whose labels are reference captions
# Records asked as VQA questions: RSVQA's (task "vqa", with a qtype), and the presence / count
# questions of the instruction data (remoteglm.data.tasks) where their answer is 是/否 or a number.
VQA_TASKS = {"vqa": None, "presence": "presence", "count": "count"}


def _vqa_question(path, i, rec, key, img_path) -> VQAQuestion:
    label = str(rec["label"]).strip()
    raw_type = rec.get("qtype")
    qtype = canonical_qtype(raw_type) or (str(raw_type).strip() if raw_type else None)
    kind = answer_kind(qtype, label)
    if kind is None:
        raise RemoteGLMError(f"{path}: item {i} (VQA) has qtype {raw_type!r} and label {label!r}: give a qtype "
                             f"({', '.join(QTYPES)}) or a label 是/否, a number, 农村/城市 or an area in 平方米")
    if expected_value(label, kind) is None:
        raise RemoteGLMError(f"{path}: item {i} (VQA, {qtype or kind}) has label {label!r}, which is not a "
                             f"{kind} answer (是/否, a number, 农村/城市 or an area in 平方米)")
    return VQAQuestion(f"q{i}", key, img_path, str(rec["prompt"]), label, qtype or kind, kind)


def _from_finetune(path, data, split, base, resolve_image, template) -> EvalSet:
    groups: dict[str, dict] = {}
    classes: list[str] = []
    explicit: list[str] = []  # labels of task "classify" records, in file order
    questions: list[VQAQuestion] = []
    skipped: dict[str, int] = {}
    grounding: list[GroundingItem] = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or not {"img", "prompt", "label"} <= rec.keys():
            raise RemoteGLMError(f"{path}: item {i} is not an {{\"img\", \"prompt\", \"label\"}} object")
        if rec.get("kind") in GROUNDING_KINDS:
            img = str(rec["img"])
            groups.setdefault(img, {"labels": [], "refs": None, "cls": None, "prompt": None})
            grounding.append(read_item(path, i, rec, img, resolve_image(img, base)))
            continue
        task = rec.get("task")
        g = groups.setdefault(str(rec["img"]), {"labels": [], "refs": None, "cls": None, "prompt": None})
        label = str(rec["label"]).strip()
        if task in VQA_TASKS:
            img = str(rec["img"])
            if VQA_TASKS[task] and not rec.get("qtype"):
                rec = {**rec, "qtype": VQA_TASKS[task]}
            try:
                questions.append(_vqa_question(path, i, rec, img, resolve_image(img, base)))
            except RemoteGLMError:
                if task == "vqa":
                    raise
                skipped[str(task)] = skipped.get(str(task), 0) + 1  # an instruction answer that is a sentence
            continue
        listed = classes_in_prompt(str(rec["prompt"]))
        is_cls = task == "classify" or (task is None and label in listed)
        if is_cls:
            g["cls"], g["prompt"] = label, str(rec["prompt"])
            if task == "classify" and label:
                explicit.append(label)
            if len(listed) > len(classes):
                classes = listed
        elif task in CAPTION_TASKS:
            if rec.get("references"):
                g["refs"] = [str(r).strip() for r in rec["references"] if _has_text(str(r))]
            if _has_text(label):
                g["labels"].append(label)
        else:
            skipped[str(task)] = skipped.get(str(task), 0) + 1
    # classes a scene set's prompts do not list (or a prompt that lists none) still count
    classes = classes + [c for c in dict.fromkeys(explicit) if c not in classes]
    asked = {q.key for q in questions} | {g.key for g in grounding}
    images = []
    for img, g in groups.items():
        refs = g["refs"] or _drop_paragraphs(list(dict.fromkeys(g["labels"])))
        cls = g["cls"] if g["cls"] in classes else None
        if not refs and cls is None and img not in asked:
            continue
        prompt = g["prompt"] or (classify_prompt(classes, template) if classes and refs else None)
        images.append(EvalImage(img, resolve_image(img, base), refs, cls, prompt))
    for im in images:  # captioned images without a classification record still get the common prompt
        if im.classify_prompt is None and classes and im.references:
            im.classify_prompt = classify_prompt(classes, template)
    return EvalSet(path, "finetune", path.stem, split, images, classes, questions, skipped, grounding)


# ---- leakage guard -----------------------------------------------------------------------------------
def training_images(train_files: Sequence[str | os.PathLike], image_root=None) -> dict[Path, str]:
    """Resolved image path -> training file, for every image a training file uses (its train
    split, for a Karpathy dataset)."""
    from remoteglm.data.records import load_records

    out: dict[Path, str] = {}
    for f in train_files:
        for r in load_records(f, "train", image_root=image_root):
            out.setdefault(Path(r.img).resolve(), str(f))
    return out


def find_leaks(images: Sequence[EvalImage], train: dict[Path, str]) -> list[tuple[EvalImage, str]]:
    """Evaluation images that a training file also uses: the same file, or a byte-identical copy
    under another name (content hashes are taken only for files of a matching size)."""
    match = same_content([im.path for im in images], train)
    return [(im, train[match[im.path]]) for im in images if im.path in match]


def recorded_train_data(checkpoint: str | os.PathLike) -> list[str]:
    """Training files a fine-tune run folder recorded (``train_summary.json`` key ``train_data``),
    existing ones only; [] when the folder records none."""
    f = Path(checkpoint) / "train_summary.json"
    if not f.is_file():
        return []
    try:
        files = read_json(f, require_object=True).get("train_data") or []
    except RemoteGLMError:  # a damaged summary records nothing usable
        return []
    if isinstance(files, str):
        files = [files]
    return [str(x) for x in files if Path(x).is_file()]
