"""Importers for the sets users already have, written as VisualGLM fine-tune records.

* **RSVQA-LR / RSVQA-HR** (Lobry et al. 2020): per split ``<prefix>_split_<split>_questions.json``
  ``{"questions": [{"id", "question", "type", "img_id", "answers_ids", "active", ...}]}``,
  ``..._answers.json`` ``{"answers": [{"id", "question_id", "answer", "active", ...}]}`` and
  ``..._images.json`` ``{"images": [{"id", "questions_ids", "active", ...}]}``; images
  ``<img_id>.tif`` in ``Images_LR/`` (LR, prefix ``LR``) or ``Data/`` (HR, prefix ``USGS``, with a
  second test set ``test_phili``). Questions go through the caption pipeline's cached translator
  (:class:`~remoteglm.data.translate.Translator`); answers never reach the LLM: they are mapped by
  rule (:func:`answer_zh`). Records: ``{"img", "prompt": 中文问题, "label": 中文答案, "task": "vqa",
  "qtype", "qid"}`` (val/test also ``question_en``, ``answer_en``), one file per official split.
* **Folder-per-class scene sets** (AID, NWPU-RESISC45, UC Merced Land Use, WHU-RS19): one folder
  per class, its name resolved through the glossary (:func:`~remoteglm.data.glossary.folder_class`);
  the official split lists where the set has them (``resisc45-train.txt`` ...), else the seeded
  per-class split of the caption sets (:func:`~remoteglm.data.datasets.assign_splits`). Records:
  ``{"img", "prompt": CLASSIFY_PROMPT with the set's Chinese classes, "label", "task": "classify",
  "class"}``.

Both write atomically, skip a rebuild when nothing changed, give each image the split its content
has in the other builders' outputs (:mod:`~remoteglm.data.splits`), and report bad layouts as one
RemoteGLMError line. Command line: ``python -m remoteglm.data.importers {rsvqa,scenes} --help``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import RemoteGLMError, cli_entry
from .build import check_no_leak, image_path
from .cache import ResultCache
from .datasets import SPLITS, assign_splits
from .glossary import (
    CLASS_NAMES_ZH,
    CLASSES,
    SCENE_SETS,
    class_names_zh,
    folder_class,
    folder_key,
)
from .instructions import classify_prompt
from ..io import check_writable, drop_stale_temps, read_json, write_json_atomic, write_text_atomic
from .llm import LLMClient, LLMConfig, Usage, redact
from .pipeline import STAMP, _stamp, failure_advice
from .splits import Registry, Source, SplitCheck, default_registry
from .translate import (
    PROMPT_VERSION,
    TranslateConfig,
    Translator,
    distinct_sentences,
    estimate,
    normalise,
)

IMPORT_VERSION = "import-v1"  # bump when what this module writes changes: outputs are rebuilt
SAMPLE_CHARS = 300

# ---- answers by rule ---------------------------------------------------------------------------
YES_NO_ZH = {"yes": "是", "no": "否"}
# RSVQA's other closed answers (the rural_urban questions of RSVQA-LR).
OTHER_ANSWERS_ZH = {"rural": "农村", "urban": "城市"}
AREA_UNIT_ZH = "平方米"
_NUM = r"\d+(?:\.\d+)?"
_UNIT = r"(?:m2|m\^2|m²|sq\.?\s*m|sqm|square\s+met(?:er|re)s?)"
_QTY = rf"(?P<{{n}}>{_NUM})\s*(?P<{{u}}>{_UNIT})?"
_NUMBER_RE = re.compile(rf"{_QTY.format(n='n', u='u')}")
_BETWEEN_RE = re.compile(rf"between\s+{_QTY.format(n='a', u='ua')}\s+and\s+{_QTY.format(n='b', u='ub')}")
_MORE_RE = re.compile(rf"(?:more|greater|larger|bigger)\s+than\s+{_QTY.format(n='n', u='u')}|(?:over|above)\s+"
                      rf"{_QTY.format(n='n2', u='u2')}")
_LESS_RE = re.compile(rf"(?:less|fewer|smaller)\s+than\s+{_QTY.format(n='n', u='u')}|(?:under|below)\s+"
                      rf"{_QTY.format(n='n2', u='u2')}")


def _clean_answer(answer: str) -> str:
    return re.sub(r"\s+", " ", str(answer)).strip().lower().rstrip(".").strip()


def answer_zh(answer: str) -> str | None:
    """The Chinese label of an RSVQA answer, by rule (no LLM); None when no rule knows it.

    yes / no -> 是 / 否; a number stays that number ("12" -> "12"); an area keeps its number with
    平方米 ("0m2" -> "0平方米", "10631m2" -> "10631平方米"); RSVQA's binned answers keep their
    bounds ("between 10 and 100" -> "10到100之间", "between 100m2 and 1000m2" -> "100到1000平方米之间",
    "more than 1000m2" -> "超过1000平方米", "less than 10" -> "少于10"); rural / urban -> 农村 / 城市.
    """
    a = _clean_answer(answer)
    if a in YES_NO_ZH:
        return YES_NO_ZH[a]
    if a in OTHER_ANSWERS_ZH:
        return OTHER_ANSWERS_ZH[a]
    m = _NUMBER_RE.fullmatch(a)
    if m:
        return m.group("n") + (AREA_UNIT_ZH if m.group("u") else "")
    m = _BETWEEN_RE.fullmatch(a)
    if m:
        unit = AREA_UNIT_ZH if (m.group("ua") or m.group("ub")) else ""
        return f"{m.group('a')}到{m.group('b')}{unit}之间"
    for rx, word in ((_MORE_RE, "超过"), (_LESS_RE, "少于")):
        m = rx.fullmatch(a)
        if m:
            n, u = (m.group("n"), m.group("u")) if m.group("n") else (m.group("n2"), m.group("u2"))
            return f"{word}{n}{AREA_UNIT_ZH if u else ''}"
    return None


def question_zh(translation: str) -> str:
    """A translated question as a prompt: whatever the LLM ended it with (。 / ？ / none), it ends with ？."""
    return re.sub(r"[\s。.！!？?]+$", "", translation.strip()) + "？"


# ---- RSVQA: files --------------------------------------------------------------------------------
RSVQA_NAMES = {"lr": "RSVQA-LR", "rsvqalr": "RSVQA-LR", "hr": "RSVQA-HR", "rsvqahr": "RSVQA-HR", "usgs": "RSVQA-HR"}
_PREFIX_NAME = {"lr": "RSVQA-LR", "usgs": "RSVQA-HR", "hr": "RSVQA-HR"}
RSVQA_IMAGE_DIRS = {"RSVQA-LR": ("Images_LR", "Images", "images", "Data"),
                    "RSVQA-HR": ("Data", "Images_HR", "Images", "images")}
_SPLIT_FILE = re.compile(r"^(?P<prefix>.*?)[_-]?(?P<split>train|val|valid|validation|test(?:[_-][a-z0-9]+)?)"
                         r"[_-](?P<kind>questions|answers|images)\.json$", re.IGNORECASE)
_SHARED_FILE = re.compile(r"^(?P<prefix>.*?)[_-]?(?P<kind>questions|answers)\.json$", re.IGNORECASE)
_KINDS = ("questions", "answers", "images")
EXPECTED_RSVQA = ("<prefix>_split_{train,val,test}_{questions,answers,images}.json (RSVQA-LR: LR_split_..., "
                  "RSVQA-HR: USGS_split_..., plus USGS_split_test_phili_...)")


def canonical_rsvqa_name(name: str) -> str:
    key = folder_key(name)
    if key in RSVQA_NAMES:
        return RSVQA_NAMES[key]
    raise RemoteGLMError(f"unknown RSVQA set '{name}': pass --name RSVQA-LR or RSVQA-HR")


def _split_name(split: str) -> str:
    s = split.lower().replace("-", "_")
    return "val" if s in ("valid", "validation") else s


def _prefix_key(prefix: str) -> str:
    return folder_key(re.sub(r"[_-]?split$", "", prefix, flags=re.IGNORECASE))


def _split_order(split: str) -> tuple:
    return (SPLITS.index(split), "") if split in SPLITS else (len(SPLITS), split)


def find_rsvqa_files(root: Path, name: str | None = None) -> tuple[str, dict[str, dict[str, Path]]]:
    """(set name, split -> {"questions", "answers", "images"} -> path) for the RSVQA files in ``root``."""
    if not root.exists():
        raise RemoteGLMError(f"RSVQA folder not found: {root}; pass --root DIR (the folder holding {EXPECTED_RSVQA})")
    if not root.is_dir():
        raise RemoteGLMError(f"{root} is a file; pass --root the folder that holds the RSVQA JSON files")
    per_prefix: dict[str, dict[str, dict[str, Path]]] = {}
    shared: dict[str, dict[str, Path]] = {}
    for p in sorted(root.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        m = _SPLIT_FILE.match(p.name)
        if m:
            per_prefix.setdefault(_prefix_key(m["prefix"]), {}).setdefault(_split_name(m["split"]), {})[
                m["kind"].lower()] = p
            continue
        m = _SHARED_FILE.match(p.name)
        if m:
            shared.setdefault(_prefix_key(m["prefix"]), {})[m["kind"].lower()] = p
    if not per_prefix:
        found = ", ".join(p.name for p in sorted(root.glob("*.json"))[:5]) or "no JSON files"
        raise RemoteGLMError(f"{root}: no RSVQA split files (found {found}); expected {EXPECTED_RSVQA}")
    if name is not None:
        wanted = canonical_rsvqa_name(name)
        keys = [k for k in per_prefix if _PREFIX_NAME.get(k) == wanted] or (list(per_prefix) if len(per_prefix) == 1 else [])
        if not keys:
            raise RemoteGLMError(f"{root}: no {wanted} files (prefixes here: {', '.join(sorted(per_prefix))}); "
                                 f"check --name or --root")
        prefix = keys[0]
    elif len(per_prefix) == 1:
        prefix = next(iter(per_prefix))
    else:
        raise RemoteGLMError(f"{root}: files of several RSVQA sets ({', '.join(sorted(per_prefix))}); put each set in "
                             "its own folder or pass --name RSVQA-LR / RSVQA-HR")
    set_name = canonical_rsvqa_name(name) if name else _PREFIX_NAME.get(prefix) or _name_from_path(root)
    splits = per_prefix[prefix]
    for split, files in sorted(splits.items(), key=lambda kv: _split_order(kv[0])):
        for kind in ("questions", "answers"):
            if kind not in files and kind in shared.get(prefix, shared.get("", {})):
                files[kind] = shared.get(prefix, shared.get("", {}))[kind]
        missing = [k for k in _KINDS if k not in files]
        if missing:
            have = ", ".join(files[k].name for k in _KINDS if k in files)
            raise RemoteGLMError(f"{root}: split '{split}' has {have} but no {' or '.join(missing)} file "
                                 f"(expected e.g. {next(iter(files.values())).name.rsplit('_', 1)[0]}_{missing[0]}.json); "
                                 "copy it from the same download")
    return set_name, dict(sorted(splits.items(), key=lambda kv: _split_order(kv[0])))


def _name_from_path(root: Path) -> str:
    for part in reversed(root.resolve().parts):
        key = folder_key(part)
        if key.endswith("lr"):
            return "RSVQA-LR"
        if key.endswith("hr"):
            return "RSVQA-HR"
    raise RemoteGLMError(f"{root}: cannot tell RSVQA-LR from RSVQA-HR by the file names; pass --name")


# ---- RSVQA: entries ------------------------------------------------------------------------------
@dataclass
class VQAItem:
    qid: object
    split: str
    img_id: object
    filename: str
    question: str  # English, as in the file
    answer: str  # English, as in the file
    answer_zh: str
    qtype: str


@dataclass
class VQASet:
    name: str
    root: Path
    image_dir: Path
    splits: list[str]
    items: list[VQAItem]
    warnings: list[str] = field(default_factory=list)
    left_out: Counter = field(default_factory=Counter)  # answers no rule maps -> questions left out

    def questions(self) -> list[str]:
        return [it.question for it in self.items]


def _entries(path: Path, key: str, alt: tuple[str, ...] = ()) -> list:
    obj = read_json(path, f"RSVQA {key} file")
    for k in (key, *alt):
        if isinstance(obj, dict) and isinstance(obj.get(k), list):
            return obj[k]
    got = f"a JSON {type(obj).__name__}" + (f" with keys {sorted(obj)[:5]}" if isinstance(obj, dict) else "")
    raise RemoteGLMError(f'{path}: expected {{"{key}": [...]}} (an RSVQA {key} file), got {got}')


def _index(path: Path, entries: list, what: str) -> dict:
    out = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise RemoteGLMError(f"{path}: {what}[{i}] is a JSON {type(e).__name__}, not an object; fix that entry")
        key = e.get("id", i)
        if isinstance(key, (dict, list)) or key is None:
            raise RemoteGLMError(f"{path}: {what}[{i}] has id {key!r}; ids are numbers")
        if key in out:
            raise RemoteGLMError(f"{path}: {what} id {key!r} appears twice (entries {list(out).index(key)} and {i})")
        out[key] = e
    return out


def _active(e: dict) -> bool:
    return e.get("active", True) is not False


class _Files:
    """Each JSON file read and indexed once (a questions file may be shared by all splits)."""

    def __init__(self):
        self.seen: dict[tuple[Path, str], tuple[list, dict]] = {}

    def get(self, path: Path, key: str, alt: tuple[str, ...] = ()) -> tuple[list, dict]:
        if (path, key) not in self.seen:
            entries = _entries(path, key, alt)
            self.seen[(path, key)] = entries, _index(path, entries, key)
        return self.seen[(path, key)]


def _mismatch(n: int, text: str, split: str) -> RemoteGLMError:
    return RemoteGLMError(f"{text} ({n} in all): the questions, answers and images files of split '{split}' do not "
                          "belong together; use the three files of one download")


def _split_items(split: str, files: dict[str, Path], cache: _Files,
                 filenames: dict[str, str]) -> tuple[list[object], list[tuple]]:
    """(active image ids, [(qid, img_id, filename, question, answer, type)] of the active questions) of one split."""
    qpath, apath, ipath = files["questions"], files["answers"], files["images"]
    _, qs = cache.get(qpath, "questions")
    _, ans = cache.get(apath, "answers", ("annotations",))
    images, _ = cache.get(ipath, "images")
    active = [(i, im) for i, im in enumerate(images) if isinstance(im, dict) and _active(im)]
    if not active:
        raise RemoteGLMError(f"{ipath}: no active images (every entry has \"active\": false, or none is listed); "
                             "check that it is an RSVQA images file")
    by_img: dict | None = None
    out, bad_q, bad_img, bad_a, bad_aq = [], [], [], [], []
    for i, im in active:
        img_id = im.get("id", i)
        qids = im.get("questions_ids")
        if qids is None:  # no list on the image: the questions that name it
            if by_img is None:
                by_img = {}
                for k, q in qs.items():
                    by_img.setdefault(q.get("img_id"), []).append(k)
            qids = by_img.get(img_id, [])
        if not isinstance(qids, list):
            raise RemoteGLMError(f"{ipath}: image {img_id!r} 'questions_ids' is a JSON {type(qids).__name__}, not a list")
        fn = filenames.get(str(img_id), f"{img_id}.tif")
        for qid in qids:
            q = qs.get(qid)
            if q is None:
                bad_q.append((img_id, qid))
                continue
            if not _active(q):
                continue
            if "img_id" in q and q["img_id"] != img_id:
                bad_img.append((qid, q["img_id"], img_id))
                continue
            text, qtype, aids = q.get("question"), q.get("type"), q.get("answers_ids")
            if not isinstance(text, str) or not text.strip():
                raise RemoteGLMError(f"{qpath}: question {qid!r} has no 'question' text (got {text!r}); fix that entry")
            if not isinstance(qtype, str) or not qtype.strip():
                raise RemoteGLMError(f"{qpath}: question {qid!r} has no 'type' (presence, comparison, count, "
                                     "rural_urban, area); fix that entry")
            if not isinstance(aids, list) or not aids:
                raise RemoteGLMError(f"{qpath}: question {qid!r} has no 'answers_ids' list; fix that entry")
            found = [ans[a] for a in aids if a in ans]
            if not found:
                bad_a.append((qid, aids[0]))
                continue
            a = next((x for x in found if _active(x)), found[0])
            if a.get("question_id", qid) != qid:
                bad_aq.append((a.get("id"), a.get("question_id"), qid))
                continue
            answer = a.get("answer")
            if not isinstance(answer, (str, int, float)) or isinstance(answer, bool):
                raise RemoteGLMError(f"{apath}: answer {a.get('id')!r} has no 'answer' string (got {answer!r})")
            out.append((qid, img_id, fn, text.strip(), str(answer), qtype.strip().lower()))
    if bad_q:
        img, qid = bad_q[0]
        raise _mismatch(len(bad_q), f"{ipath.name} lists question ids that {qpath.name} does not have "
                                    f"(e.g. image {img!r} -> question {qid!r})", split)
    if bad_img:
        qid, named, lister = bad_img[0]
        raise _mismatch(len(bad_img), f"{qpath.name}: questions belong to another image than the one listing them in "
                                      f"{ipath.name} (e.g. question {qid!r}: img_id {named!r}, listed by image {lister!r})",
                        split)
    if bad_a:
        qid, aid = bad_a[0]
        raise _mismatch(len(bad_a), f"{qpath.name}: questions point to answer ids that {apath.name} does not have "
                                    f"(e.g. question {qid!r} -> answer {aid!r})", split)
    if bad_aq:
        aid, named, asker = bad_aq[0]
        raise _mismatch(len(bad_aq), f"{apath.name}: answers belong to another question than the one pointing to them "
                                     f"(e.g. answer {aid!r}: question_id {named!r}, asked by question {asker!r})", split)
    return [im.get("id", i) for i, im in active], out


def default_rsvqa_images(root: Path, name: str) -> Path:
    for d in RSVQA_IMAGE_DIRS[name]:
        if (root / d).is_dir():
            return root / d
    return root / RSVQA_IMAGE_DIRS[name][0]


def load_rsvqa(root: str | Path, name: str | None = None, images: str | Path | None = None,
               limit: int | None = None) -> VQASet:
    """Read an RSVQA-LR / RSVQA-HR folder: every official split, answers mapped by rule."""
    root = Path(root)
    set_name, splits = find_rsvqa_files(root, name)
    image_dir = Path(images) if images else default_rsvqa_images(root, set_name)
    filenames = {p.stem: p.name for p in image_dir.iterdir() if p.is_file()} if image_dir.is_dir() else {}
    cache = _Files()
    vs = VQASet(set_name, root, image_dir, list(splits), [])
    img_split: dict[object, str] = {}
    for split, files in splits.items():
        active, rows = _split_items(split, files, cache, filenames)
        if limit is not None:
            keep = set(list(dict.fromkeys(r[1] for r in rows))[:limit])
            rows = [r for r in rows if r[1] in keep]
        for img in active:
            if img in img_split:
                raise RemoteGLMError(f"image {img!r} is active in both the {img_split[img]} and the {split} images files: "
                                     "a split would leak into another; use the official files unchanged")
            img_split[img] = split
        for qid, img, fn, q, a, t in rows:
            zh = answer_zh(a)
            if zh is None:
                vs.left_out[a] += 1
                continue
            vs.items.append(VQAItem(qid, split, img, fn, q, a, zh, t))
    if vs.left_out:
        n = sum(vs.left_out.values())
        examples = ", ".join(f"{a!r} x{k}" for a, k in vs.left_out.most_common(3))
        vs.warnings.append(f"{n} question(s) whose answer no rule maps were left out ({examples}); RSVQA answers are "
                           "yes/no, numbers, areas in m2 and rural/urban")
    if not vs.items:
        raise RemoteGLMError(f"{root}: no question with an answer left to import; check that these are RSVQA files")
    if not image_dir.is_dir():
        vs.warnings.append(f"image folder not found: {image_dir} (pass --images DIR; outputs still name the expected paths)")
    else:
        missing = sorted({it.filename for it in vs.items} - set(filenames.values()))
        if missing:
            total = len({it.filename for it in vs.items})
            vs.warnings.append(f"{len(missing)} of {total} images missing from {image_dir} (first: {', '.join(missing[:5])})")
    return vs


# ---- shared output helpers -----------------------------------------------------------------------
@dataclass
class ImportSummary:
    name: str
    kind: str  # "vqa" or "classify"
    items: int = 0  # questions / images imported
    distinct: int = 0
    cache_hits: int = 0
    translated: int = 0
    failed: int = 0
    left_out: int = 0
    usage: Usage = field(default_factory=Usage)
    outputs: list[Path] = field(default_factory=list)
    split_counts: dict = field(default_factory=dict)  # split -> {"images", "records"}
    estimate: dict | None = None
    seconds: float = 0.0
    up_to_date: bool = False
    detail: str = ""  # one line about the source (split source, classes)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _write_if_changed(s: ImportSummary, out_dir: Path, stamp: str, files: dict[Path, object]) -> None:
    """Write ``files`` (path -> JSON object) atomically unless the last build wrote the same ones."""
    stamp_file, counts_file = out_dir / STAMP, out_dir / ".split_counts.json"
    if (all(p.exists() for p in files) and stamp_file.exists()
            and stamp_file.read_text(encoding="utf-8").strip() == stamp):
        s.up_to_date = True
        drop_stale_temps(out_dir)  # nothing is written, so the writes do not do it
        s.outputs.extend(files)
        return
    for p, obj in files.items():
        s.outputs.append(write_json_atomic(p, obj))
    write_json_atomic(counts_file, s.split_counts)
    write_text_atomic(stamp_file, stamp + "\n")


def print_import_summary(s: ImportSummary) -> None:
    if s.estimate is not None:
        e = s.estimate
        _say(f"dry run: {s.name}, {s.items} questions, {s.distinct} distinct, {s.cache_hits} cached")
        _say(f"  would translate {e['sentences']} questions in ~{e['calls']} calls, "
             f"~{e['tokens_in']:,} tokens in / ~{e['tokens_out']:,} out (rough); answers need no LLM")
        return
    if s.kind == "vqa":
        u = s.usage
        _say(f"translate: {s.name}, {s.items} questions, {s.distinct} distinct: {s.cache_hits} from cache, "
             f"{s.translated} new, {s.failed} failed; answers by rule (no LLM)")
        _say(f"LLM: {u.calls} calls ({u.retries} retries), tokens in {u.tokens_in:,} / out {u.tokens_out:,}")
    if s.detail:
        _say(s.detail)
    what = "questions" if s.kind == "vqa" else "records"
    for split, c in s.split_counts.items():
        _say(f"  {split}: {c['images']} images, {c['records']} {what}")
    verb = "up to date" if s.up_to_date else "wrote"
    for p in s.outputs:
        _say(f"{verb} {p}" if p.name != "failures.json" else f"wrote {p} (what is still missing, and why)")
    _say(f"took {s.seconds:.1f} s")


# ---- RSVQA: the job --------------------------------------------------------------------------------
@dataclass
class RSVQAConfig:
    root: Path
    images: Path | None = None
    name: str | None = None
    out_dir: Path | None = None  # default data/<name>_zh
    cache: Path = Path("data/cache/llm_cache.sqlite")
    llm: LLMConfig = field(default_factory=LLMConfig)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    dry_run: bool = False
    limit: int | None = None  # first N images of each split
    progress: bool = True
    splits: Path | None = None  # the split registry (splits.py); default: splits.json beside out_dir
    command: str = ""  # the command line that runs this import


def vqa_records(vs: VQASet, translations: dict[str, str], out_dir: Path) -> dict[str, list[dict]]:
    """Fine-tune records per split for the items whose question is translated."""
    out: dict[str, list[dict]] = {split: [] for split in vs.splits}
    for it in vs.items:
        zh = translations.get(normalise(it.question))
        if zh is None:
            continue
        rec = {"img": image_path(vs.image_dir, it.filename, out_dir), "prompt": question_zh(zh), "label": it.answer_zh,
               "task": "vqa", "qtype": it.qtype, "qid": it.qid}
        if it.split != "train":
            rec.update(question_en=it.question, answer_en=it.answer)
        out[it.split].append(rec)
    for split in vs.splits:  # no image of any other split in train (test_phili included)
        if split != "train":
            check_no_leak({"train": out.get("train", []), "val": out[split]})
    return out


def _vqa_failures(vs: VQASet, tr) -> list[dict]:
    by_q: dict[str, dict] = {}
    for it in vs.items:
        k = normalise(it.question)
        if k in tr.failed:
            f = by_q.setdefault(k, {"question": it.question, "problem": tr.failed[k], "reply_sample": tr.samples.get(k, ""),
                                    "questions": 0, "splits": [], "first_qids": []})
            f["questions"] += 1
            if it.split not in f["splits"]:
                f["splits"].append(it.split)
            if len(f["first_qids"]) < 5:
                f["first_qids"].append(it.qid)
    return list(by_q.values())


def import_rsvqa(cfg: RSVQAConfig) -> ImportSummary:
    """RSVQA -> Chinese VQA fine-tune files; raises RemoteGLMError (one line) on bad input or unfinished work.

    Like the caption pipeline: every answer is cached as it arrives, a rerun asks only for what is
    missing and a finished one makes no call; questions still failing after every round are left out
    of the files, listed in ``failures.json``, and the error says whether a rerun can help."""
    t0 = time.time()
    if cfg.limit is not None and cfg.limit < 1:
        raise RemoteGLMError(f"--limit must be at least 1 (got {cfg.limit})")
    reg = None if cfg.dry_run else Registry(cfg.splits or default_registry(cfg.out_dir))
    vs = load_rsvqa(cfg.root, cfg.name, cfg.images, cfg.limit)
    for w in vs.warnings:
        _say(f"warning: {w}")
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("data") / f"{vs.name}_zh"
    check_writable(out_dir, "--out-dir")
    splits = None
    if reg is not None:  # RSVQA's splits are official: checked against the other builders' before any work
        command = cfg.command or shlex.join(["python", "-m", "remoteglm.data.importers", "rsvqa", "--root",
                                             str(cfg.root), "--out-dir", str(out_dir)])
        splits = SplitCheck(reg, Source(out_dir, f"{vs.name} questions", command), vs.items,
                            lambda it: vs.image_dir / it.filename, lambda it: True, _say)
        vs.items = splits.kept
    s = ImportSummary(vs.name, "vqa", items=len(vs.items), left_out=sum(vs.left_out.values()))
    cache = ResultCache(cfg.cache, readonly=cfg.dry_run)
    try:
        translator = Translator(None, cache, cfg.translate, cfg.llm.model)
        distinct = distinct_sentences(vs.questions())
        if cfg.dry_run:
            todo = translator.pending(distinct)[1]
            s.distinct, s.cache_hits = len(distinct), len(distinct) - len(todo)
            s.estimate = estimate(todo, cfg.translate.batch_size)
            return s
        client = LLMClient(cfg.llm)  # connects only when something is not cached
        translator.client = client
        s.usage = client.usage
        tr = translator.run(vs.questions(), progress=cfg.progress)
    finally:
        cache.close()
    s.distinct, s.cache_hits, s.translated, s.failed = tr.distinct, tr.cache_hits, tr.new, len(tr.failed)
    records = vqa_records(vs, tr.translations, out_dir)
    done = sum(len(r) for r in records.values())
    for split in vs.splits:
        s.split_counts[split] = {"images": len({r["img"] for r in records[split]}), "records": len(records[split])}
    failures = _vqa_failures(vs, tr) if (tr.failed or tr.aborted) else []
    if done:
        files: dict[Path, object] = {out_dir / f"{vs.name}_{split}.json": records[split] for split in vs.splits}
        used = Counter(normalise(it.question) for it in vs.items)
        files[out_dir / f"{vs.name}_questions_zh.json"] = {
            "dataset": vs.name, "model": cfg.llm.model, "prompt_version": PROMPT_VERSION,
            "questions": [{"en": en, "zh": question_zh(tr.translations[en]), "count": n}
                          for en, n in used.items() if en in tr.translations]}
        stamp = _stamp(IMPORT_VERSION, vs.name, cfg.llm.model, str(vs.image_dir.absolute()), str(out_dir.absolute()),
                       [(it.qid, it.split, it.filename, it.question, it.answer, it.qtype) for it in vs.items],
                       sorted((k, v) for k, v in tr.translations.items() if k in used))
        _write_if_changed(s, out_dir, stamp, files)
        splits.register()
    failures_file = out_dir / "failures.json"
    if failures:
        s.outputs.append(write_json_atomic(failures_file, failures))
    elif failures_file.exists():
        failures_file.unlink()
    s.seconds = time.time() - t0
    if failures or not done:
        print_import_summary(s)
        what = f"{done} of {len(vs.items)} questions written" if done else "no question complete, nothing written"
        raise RemoteGLMError(
            f"{len(tr.failed) or 'some'} distinct questions still not done after every round ({what}; each is listed in "
            f"{failures_file}): " + failure_advice(tr.aborted_kind if tr.aborted else "", tr.aborted,
                                                   [f["problem"] for f in failures]))
    return s


# ---- scene sets: folders -------------------------------------------------------------------------
IMAGE_EXTS = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".bmp")
# Path words that name a set (whole tokens of a folder name, lower case).
_SCENE_TOKENS = {"aid": "AID", "nwpu": "NWPU-RESISC45", "resisc45": "NWPU-RESISC45", "nwpuresisc45": "NWPU-RESISC45",
                 "ucm": "UCM", "ucmerced": "UCM", "merced": "UCM", "ucmercedlanduse": "UCM", "whurs19": "WHU-RS19",
                 "rs19": "WHU-RS19"}
_SPLIT_LIST = re.compile(r"^(?P<prefix>.*?)[-_.]?(?P<split>train|val|valid|validation|test)\.txt$", re.IGNORECASE)


def canonical_scene_name(name: str) -> str:
    key = folder_key(name)
    for s in SCENE_SETS:
        if key == folder_key(s):
            return s
    if key in _SCENE_TOKENS:
        return _SCENE_TOKENS[key]
    raise RemoteGLMError(f"unknown scene set '{name}'; choose one of {', '.join(SCENE_SETS)}")


@dataclass
class SceneImage:
    filename: str  # relative to the set's root, with "/" ("Airport/airport_1.jpg")
    cls: str
    split: str = ""


@dataclass
class SceneSet:
    name: str
    root: Path
    images: list[SceneImage]
    folders: dict[str, str]  # class id -> folder name
    split_source: str  # "official: <files>" or "seeded"
    warnings: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return list(CLASSES[self.name])

    @property
    def classes_zh(self) -> list[str]:
        return class_names_zh(self.name)


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and not p.name.startswith("__")


def _is_image(p: Path) -> bool:
    return p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_EXTS


def _subdirs(p: Path) -> list[Path]:
    return sorted(d for d in p.iterdir() if d.is_dir() and _visible(d))


def _any_class(folder: str) -> bool:
    return any(folder_class(s, folder) for s in SCENE_SETS)


def _name_from_tokens(paths: list[Path]) -> str | None:
    for p in paths:
        for part in reversed(p.resolve().parts):
            tokens = [t for t in re.split(r"[^0-9a-z]+", part.lower()) if t]
            for t in [folder_key(part), *tokens]:
                if t in _SCENE_TOKENS:
                    return _SCENE_TOKENS[t]
    return None


def _fits(name: str, folders: list[str]) -> bool:
    return all(folder_class(name, f) for f in folders)


def _unknown_folders_error(root: Path, name: str, unknown: list[str], folders: list[str]) -> RemoteGLMError:
    hints = []
    for f in unknown[:5]:
        close = difflib.get_close_matches(folder_key(f), CLASSES[name], n=1, cutoff=0.6)
        hints.append(f"{f!r} (did you mean {close[0]}?)" if close else repr(f))
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    other = [s for s in SCENE_SETS if s != name and _fits(s, folders)]
    fit = f", or pass --name {other[0]} (these folders are its classes)" if other else ""
    classes = ", ".join(CLASSES[name])
    return RemoteGLMError(f"{root}: {len(unknown)} folder(s) are not {name} classes: {', '.join(hints)}{more}; "
                          f"{name} has {len(CLASSES[name])} classes ({classes}): rename or remove those folders{fit}")


def _pick_name(root: Path, start: Path, folders: list[str], name: str | None) -> str:
    if name:
        return canonical_scene_name(name)
    fitting = [s for s in SCENE_SETS if _fits(s, folders)]
    by_path = _name_from_tokens([root, start])
    if by_path and (by_path in fitting or not fitting):
        return by_path
    if len(fitting) == 1:
        return fitting[0]
    exact = [s for s in fitting if len(CLASSES[s]) == len(folders)]
    if len(exact) == 1:
        return exact[0]
    if fitting:
        raise RemoteGLMError(f"{root}: cannot tell which scene set this is (its folders fit {', '.join(fitting)}): "
                             "pass --name")
    best = max(SCENE_SETS, key=lambda s: sum(1 for f in folders if folder_class(s, f)))
    return best


def _list_entry(line: str) -> str:
    """A split list's line as a lower-case path with "/": its first field ("airplane_001.jpg 0" too)."""
    return line.split()[0].replace("\\", "/").lower()


def _split_lists(dirs: list[Path], images: list[SceneImage]) -> tuple[dict[str, list[str]], list[Path]] | None:
    """The official split lists among ``dirs`` that name these images (the best-matching group)."""
    by_base: dict[str, list[SceneImage]] = {}
    for im in images:
        by_base.setdefault(Path(im.filename).name.lower(), []).append(im)
    groups: dict[tuple[Path, str], dict[str, Path]] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            m = _SPLIT_LIST.match(p.name)
            if m and p.is_file():
                groups.setdefault((d, m["prefix"].lower()), {})[_split_name(m["split"])] = p
    best = None
    for files in groups.values():
        if "train" not in files or not ({"val", "test"} & set(files)):
            continue
        lines = {split: [ln.strip() for ln in p.read_text(encoding="utf-8", errors="replace").splitlines()
                         if ln.strip() and not ln.lstrip().startswith("#")] for split, p in files.items()}
        total = sum(len(v) for v in lines.values())
        hits = sum(1 for v in lines.values() for ln in v if Path(_list_entry(ln)).name in by_base)
        if total and hits * 2 >= total and (best is None or hits > best[0]):
            best = (hits, lines, list(files.values()))
    return (best[1], best[2]) if best else None


def _apply_split_lists(ss: SceneSet, lines: dict[str, list[str]], files: list[Path]) -> None:
    by_rel = {im.filename.lower(): im for im in ss.images}
    by_base: dict[str, list[SceneImage]] = {}
    for im in ss.images:
        by_base.setdefault(Path(im.filename).name.lower(), []).append(im)
    unknown = 0
    for split in sorted(lines, key=_split_order):
        for ln in lines[split]:
            rel = _list_entry(ln)
            if rel in by_rel:  # "airplane/airplane_001.jpg"
                hits = [by_rel[rel]]
            else:  # "airplane_001.jpg": the one image of that name (or those whose path ends so)
                same = by_base.get(Path(rel).name, [])
                hits = same if len(same) == 1 else [im for im in same if im.filename.lower().endswith("/" + rel)]
            if not hits:
                unknown += 1
                continue
            for im in hits:
                if im.split and im.split != split:
                    raise RemoteGLMError(f"{im.filename} is in both the {im.split} and the {split} split list "
                                         f"({', '.join(p.name for p in files)}): the lists would leak; fix them")
                im.split = split
    unlisted = [im for im in ss.images if not im.split]
    if unlisted:
        ss.warnings.append(f"{len(unlisted)} image(s) are in no official split list (first: {unlisted[0].filename}): "
                           "left out")
        ss.images = [im for im in ss.images if im.split]
    if unknown:
        ss.warnings.append(f"{unknown} line(s) of the split lists name no image here (missing files?)")
    ss.split_source = "official: " + ", ".join(p.name for p in files)


def load_scene_folders(root: str | Path, name: str | None = None, split_files: str | Path | None = None,
                       seeded: bool = False, val: float = 0.1, test: float = 0.1,
                       content: Callable[[Path], str | None] | None = None) -> SceneSet:
    """Read a folder-per-class scene set; one-line RemoteGLMError on a bad layout. ``content``
    (image path -> content hash) orders the seeded split (else the file paths do)."""
    start = Path(root)
    if not start.exists():
        raise RemoteGLMError(f"scene folder not found: {start}; pass --root DIR (the folder holding one folder per class)")
    if not start.is_dir():
        raise RemoteGLMError(f"{start} is a file; pass --root the folder that holds one folder per class")
    base = start  # wrappers such as UCMerced_LandUse/Images/ or NWPU-RESISC45/NWPU-RESISC45/
    while True:
        subs = _subdirs(base)
        if len(subs) == 1 and not any(_is_image(p) for p in base.iterdir()) and not _any_class(subs[0].name):
            base = subs[0]
            continue
        break
    subs = _subdirs(base)
    if not subs:
        n = sum(1 for p in base.iterdir() if _is_image(p))
        raise RemoteGLMError(f"{base}: no class folders (found {n} image file(s) directly in it); a scene set needs one "
                             "folder per class, e.g. AID/Airport/airport_1.jpg")
    folders = [d.name for d in subs]
    set_name = _pick_name(base, start, folders, name)
    unknown = [f for f in folders if folder_class(set_name, f) is None]
    if unknown:
        raise _unknown_folders_error(base, set_name, unknown, folders)
    by_class: dict[str, str] = {}
    for f in folders:
        c = folder_class(set_name, f)
        if c in by_class:
            raise RemoteGLMError(f"{base}: folders {by_class[c]!r} and {f!r} are both the {set_name} class {c}; "
                                 "merge them into one folder")
        by_class[c] = f
    images, empty = [], []
    for d in subs:
        files = sorted(p.name for p in d.iterdir() if _is_image(p))
        if not files:
            empty.append(d.name)
        images.extend(SceneImage(f"{d.name}/{fn}", folder_class(set_name, d.name)) for fn in files)
    if empty:
        raise RemoteGLMError(f"{base}: {len(empty)} class folder(s) have no images ({', '.join(repr(e) for e in empty[:5])}; "
                             f"images are {', '.join(IMAGE_EXTS)}): put the images back or remove the folder(s)")
    ss = SceneSet(set_name, base, images, {c: by_class[c] for c in CLASSES[set_name] if c in by_class}, "seeded")
    absent = [c for c in CLASSES[set_name] if c not in by_class]
    if absent:
        ss.warnings.append(f"{len(absent)} of {len(CLASSES[set_name])} {set_name} classes have no folder here "
                           f"({', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}): the classification prompt "
                           f"still lists all {len(CLASSES[set_name])}")
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise RemoteGLMError(f"--val and --test are fractions with val + test < 1 (got {val} and {test})")
    found = None
    if not seeded:
        dirs = [Path(split_files)] if split_files else list(dict.fromkeys([base, start, base.parent, start.parent]))
        found = _split_lists(dirs, images)
        if found is None and split_files:
            raise RemoteGLMError(f"{split_files}: no split lists (<name>-train.txt with -val.txt or -test.txt) that name "
                                 f"the images of {base}")
    if found:
        _apply_split_lists(ss, *found)
    else:
        assign_splits(ss.images, val=val, test=test, content=content and (lambda fn: content(base / fn)))
        key = "SHA-256 of the image" if content else "SHA-1 of the file path"
        ss.split_source = (f"seeded: {round((1 - val - test) * 100)}/{round(val * 100)}/{round(test * 100)} per class "
                           f"({key}), as the caption sets without a split")
    empty_splits = [sp for sp in SPLITS if not any(im.split == sp for im in ss.images)]
    if empty_splits:
        ss.warnings.append(f"no image in {' or '.join(empty_splits)}: the classes are too small for the split fractions")
    return ss


@dataclass
class ScenesConfig:
    root: Path
    name: str | None = None
    out_dir: Path | None = None  # default data/<name>_classify
    split_files: Path | None = None
    seeded: bool = False
    val: float = 0.1
    test: float = 0.1
    splits: Path | None = None  # the split registry (splits.py); default: splits.json beside out_dir
    command: str = ""  # the command line that runs this import


def scene_records(ss: SceneSet, out_dir: Path) -> dict[str, list[dict]]:
    """One scene-classification record per image, with the ONE classification prompt."""
    prompt = classify_prompt(ss.classes_zh)
    names = CLASS_NAMES_ZH[ss.name]
    order = {c: i for i, c in enumerate(ss.classes)}
    out: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for im in sorted(ss.images, key=lambda im: (order[im.cls], im.filename)):
        out.setdefault(im.split, []).append({"img": image_path(ss.root, im.filename, out_dir), "prompt": prompt,
                                             "label": names[im.cls], "task": "classify", "class": im.cls})
    check_no_leak(out)
    return out


def import_scenes(cfg: ScenesConfig) -> ImportSummary:
    """A folder-per-class scene set -> classification fine-tune files (no LLM involved)."""
    t0 = time.time()
    reg = Registry(cfg.splits or default_registry(cfg.out_dir))
    ss = load_scene_folders(cfg.root, cfg.name, cfg.split_files, cfg.seeded, cfg.val, cfg.test, content=reg.digest)
    for w in ss.warnings:
        _say(f"warning: {w}")
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("data") / f"{ss.name}_classify"
    check_writable(out_dir, "--out-dir")
    # one split per image content across every builder: a seeded split takes the registered one
    official = ss.split_source.startswith("official")
    splits = SplitCheck(reg, Source(out_dir, f"{ss.name} scenes", cfg.command or _scenes_command(cfg, out_dir)),
                        ss.images, lambda im: ss.root / im.filename, lambda im: official, _say)
    ss.images = splits.kept
    records = scene_records(ss, out_dir)
    s = ImportSummary(ss.name, "classify", items=len(ss.images),
                      detail=f"scenes: {ss.name}, {len(ss.folders)} of {len(ss.classes)} classes, {len(ss.images)} images; "
                             f"split {ss.split_source}")
    counts = {split: Counter(r["class"] for r in recs) for split, recs in records.items()}
    s.split_counts = {split: {"images": len(recs), "records": len(recs)} for split, recs in records.items()}
    files: dict[Path, object] = {out_dir / f"{ss.name}_classify_{split}.json": recs for split, recs in records.items()}
    files[out_dir / f"{ss.name}_classes.json"] = {
        "dataset": ss.name, "classes": ss.classes, "classes_zh": ss.classes_zh, "folders": ss.folders,
        "split_source": ss.split_source, "image_root": os.path.relpath(ss.root.absolute(), out_dir.absolute()),
        "counts": {split: {c: counts[split].get(c, 0) for c in ss.classes} for split in records}}
    stamp = _stamp(IMPORT_VERSION, files[out_dir / f"{ss.name}_classes.json"],
                   [(im.filename, im.cls, im.split) for im in ss.images], str(out_dir.absolute()))
    _write_if_changed(s, out_dir, stamp, files)
    splits.register()
    s.seconds = time.time() - t0
    return s


def _scenes_command(cfg: ScenesConfig, out_dir: Path) -> str:
    """The command line that reruns this import (for a ScenesConfig made in code)."""
    args = ["python", "-m", "remoteglm.data.importers", "scenes", "--root", str(cfg.root), "--out-dir", str(out_dir)]
    for flag, value in (("--name", cfg.name), ("--split-files", cfg.split_files), ("--splits", cfg.splits)):
        if value:
            args += [flag, str(value)]
    if cfg.seeded:
        args.append("--seeded-split")
    for flag, value in (("--val", cfg.val), ("--test", cfg.test)):
        if value != 0.1:
            args += [flag, str(value)]
    return shlex.join(args)


# ---- command line ----------------------------------------------------------------------------------
EPILOG = """examples:
  # RSVQA-LR / RSVQA-HR: questions translated (cached, resumable), answers mapped by rule
  python -m remoteglm.data.importers rsvqa --root data/RSVQA_LR --dry-run
  python -m remoteglm.data.importers rsvqa --root data/RSVQA_HR --base-url https://api.deepseek.com/v1 \\
      --model deepseek-chat --api-key-env DEEPSEEK_API_KEY
  # folder-per-class scene sets: no LLM needed
  python -m remoteglm.data.importers scenes --root data/AID
  python -m remoteglm.data.importers scenes --root data/NWPU-RESISC45 --split-files data/resisc45

Both rebuild nothing when nothing changed; a bad layout is one error line."""


def _llm_parent() -> argparse.ArgumentParser:
    """The translation CLI's "LLM endpoint" options, the same actions (one definition, in cli.py)."""
    from .cli import parser as caption_parser

    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("LLM endpoint")
    for g in caption_parser()._action_groups:
        if g.title == "LLM endpoint":
            for action in g._group_actions:
                group._add_action(action)
    return parent


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m remoteglm.data.importers",
        description="Import RSVQA-LR/HR and folder-per-class scene sets (AID, NWPU-RESISC45, UCM, WHU-RS19) as Chinese "
        "VisualGLM fine-tune files.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{rsvqa,scenes}")
    v = sub.add_parser("rsvqa", parents=[_llm_parent()], help="RSVQA-LR / RSVQA-HR JSON files -> VQA records",
                       description="RSVQA-LR / RSVQA-HR -> Chinese VQA fine-tune files: questions through the cached "
                       "translator, yes/no, numbers, areas and rural/urban answers by rule.")
    v.add_argument("--root", type=Path, required=True, help="folder with <prefix>_split_<split>_{questions,answers,"
                   "images}.json")
    v.add_argument("--images", type=Path, default=None,
                   help="image folder (default: Images_LR/ for LR, Data/ for HR, beside the JSON files); only checked")
    v.add_argument("--name", default=None, help="RSVQA-LR or RSVQA-HR (default: from the file prefix LR_ / USGS_)")
    v.add_argument("--out-dir", type=Path, default=None, help="output folder (default: data/<name>_zh)")
    v.add_argument("--limit", type=int, default=None, help="only the first N images of each split (a trial run)")
    v.add_argument("--dry-run", action="store_true", help="estimate calls and tokens; call nothing, write nothing")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    s = sub.add_parser("scenes", help="folder-per-class scene sets -> classification records",
                       description="A folder-per-class scene set (AID, NWPU-RESISC45, UCM, WHU-RS19) -> scene-"
                       "classification fine-tune files with the one classification prompt; no LLM.")
    s.add_argument("--root", type=Path, required=True, help="folder holding one folder per class")
    s.add_argument("--name", default=None, help=f"{', '.join(SCENE_SETS)} (default: from the path or the class folders)")
    s.add_argument("--out-dir", type=Path, default=None, help="output folder (default: data/<name>_classify)")
    s.add_argument("--split-files", type=Path, default=None,
                   help="folder with the official split lists (<name>-train.txt, -val.txt, -test.txt); default: looked "
                   "for beside --root and in its parent")
    s.add_argument("--seeded-split", action="store_true", help="ignore split lists: seeded 80/10/10 split per class")
    s.add_argument("--val", type=float, default=0.1, help="val fraction of the seeded split (default: %(default)s)")
    s.add_argument("--test", type=float, default=0.1, help="test fraction of the seeded split (default: %(default)s)")
    for sp in (v, s):
        sp.add_argument("--splits", type=Path, default=None,
                        help="split registry shared with the other builders: one split per image content across all "
                        "of them (default: splits.json beside the output folder, i.e. data/splits.json)")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    command = shlex.join(["python", "-m", "remoteglm.data.importers", *(sys.argv[1:] if argv is None else argv)])
    if a.command == "scenes":
        print_import_summary(import_scenes(ScenesConfig(a.root, a.name, a.out_dir, a.split_files, a.seeded_split,
                                                        a.val, a.test, a.splits, command)))
        return 0
    for flag, value in (("--concurrency", a.concurrency), ("--batch-size", a.batch_size)):
        if value < 1:
            raise RemoteGLMError(f"{flag} must be at least 1 (got {value})")
    if a.timeout <= 0 or a.retries < 0:
        raise RemoteGLMError("--timeout must be > 0 and --retries >= 0")
    cfg = RSVQAConfig(
        root=a.root, images=a.images, name=a.name, out_dir=a.out_dir, cache=a.cache,
        llm=LLMConfig(base_url=a.base_url, model=a.model, timeout=a.timeout, max_retries=a.retries,
                      api_key_env=a.api_key_env),
        translate=TranslateConfig(batch_size=a.batch_size, concurrency=a.concurrency),
        dry_run=a.dry_run, limit=a.limit, progress=not a.no_progress, splits=a.splits, command=command)
    try:
        print_import_summary(import_rsvqa(cfg))
    except RemoteGLMError as e:  # whatever a server echoed back, no key is printed
        raise RemoteGLMError(redact(str(e))) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
