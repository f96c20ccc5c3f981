"""RSVQA-LR / RSVQA-HR (Lobry et al. 2020) as they are downloaded, read and checked.

Per split ``<prefix>_split_<split>_questions.json``
``{"questions": [{"id", "question", "type", "img_id", "answers_ids", "active", ...}]}``,
``..._answers.json`` ``{"answers": [{"id", "question_id", "answer", "active", ...}]}`` and
``..._images.json`` ``{"images": [{"id", "questions_ids", "active", ...}]}``; images
``<img_id>.tif`` in ``Images_LR/`` (LR, prefix ``LR``) or ``Data/`` (HR, prefix ``USGS``, with a
second test set ``test_phili``). Answers never reach the LLM: they are mapped by rule
(:func:`answer_zh`); a question whose answer no rule maps is left out and counted. Files that do
not belong together, or an image active in two splits, are one RemoteGLMError line.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RemoteGLMError
from ..io import read_json
from .datasets import split_name, split_order
from .glossary import folder_key

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


def _prefix_key(prefix: str) -> str:
    return folder_key(re.sub(r"[_-]?split$", "", prefix, flags=re.IGNORECASE))


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
            per_prefix.setdefault(_prefix_key(m["prefix"]), {}).setdefault(split_name(m["split"]), {})[
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
    for split, files in sorted(splits.items(), key=lambda kv: split_order(kv[0])):
        for kind in ("questions", "answers"):
            if kind not in files and kind in shared.get(prefix, shared.get("", {})):
                files[kind] = shared.get(prefix, shared.get("", {}))[kind]
        missing = [k for k in _KINDS if k not in files]
        if missing:
            have = ", ".join(files[k].name for k in _KINDS if k in files)
            raise RemoteGLMError(f"{root}: split '{split}' has {have} but no {' or '.join(missing)} file "
                                 f"(expected e.g. {next(iter(files.values())).name.rsplit('_', 1)[0]}_{missing[0]}.json); "
                                 "copy it from the same download")
    return set_name, dict(sorted(splits.items(), key=lambda kv: split_order(kv[0])))


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
