"""RSVQA-LR/HR and folder-per-class scene sets through remoteglm.data.importers.

The fixtures are small copies of the real layouts, built here: RSVQA's three JSON files per split
(LR prefix ``LR_split_``, images in Images_LR/; HR prefix ``USGS_split_``, images in Data/, a second
test set ``test_phili``, images that do not list their questions, answers without ``active``) and
the class folders of AID, NWPU-RESISC45, UC Merced and WHU-RS19 with their official spellings.
The LLM is the fault-injecting fake (tests/data/fake_llm.py) on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fake_llm import FakeLLM

from remoteglm.data.glossary import (
    CLASS_NAMES_ZH,
    CLASSES,
    SCENE_SETS,
    class_names_zh,
    folder_class,
)
from remoteglm.data.instructions import classify_prompt
from remoteglm.data.rsvqa import answer_zh, load_rsvqa, question_zh
from remoteglm.data.scenes import ScenesConfig, import_scenes, load_scene_folders
from remoteglm.data.translate import check_translation, normalise
from remoteglm.errors import RemoteGLMError

ROOT = Path(__file__).resolve().parents[2]
TIF = b"II*\x00\x08\x00\x00\x00\x00\x00\x00\x00"  # a TIFF header: the importers never decode images
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")

# Faults that reach the translator's checks (not the HTTP layer's retries): refusals, chatter,
# broken or renumbered JSON, dropped items, English left in, another term, mood words.
CONTENT_FAULTS = {"refuse": 0.1, "preamble": 0.05, "partial": 0.05, "renumber": 0.05, "drop_key": 0.05,
                  "english": 0.05, "wrong_term": 0.05, "mood": 0.05}


def importers(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "REMOTEGLM_DEBUG", "OPENAI_BASE_URL")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "remoteglm.data.importers", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT, check=False)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    return errors[0]


# ---- RSVQA fixtures ---------------------------------------------------------------------------------
OBJECTS = ["road", "building", "water area", "farmland", "residential building", "commercial building"]


def lr_questions(k: int) -> list[tuple[str, str, str]]:
    """(type, question, answer) for image k: every RSVQA-LR type, answers as the JSON files give them."""
    a, b = OBJECTS[k % len(OBJECTS)], OBJECTS[(k + 1) % len(OBJECTS)]
    return [("presence", f"Is there a {a}?", "yes"), ("presence", f"Is a {b} present?", "no"),
            ("comparison", f"Are there more {a}s than {b}s?", "no"),
            ("comparison", f"Is the number of {a}s equal to the number of {b}s?", "yes"),
            ("count", f"How many {a}s are there?", str(k * 7)), ("count", f"How many {b}s are there?", "1203"),
            ("rural_urban", "Is it a rural or an urban area?", "rural" if k % 2 else "urban")]


def hr_questions(k: int) -> list[tuple[str, str, str]]:
    a, b = OBJECTS[k % len(OBJECTS)], OBJECTS[(k + 2) % len(OBJECTS)]
    areas = ["0m2", f"{k * 311 + 5}m2", "between 100m2 and 1000m2", "more than 1000m2"]
    return [("presence", f"Is there a {a}?", "no"), ("comparison", f"Is the number of {a}s smaller than the number of {b}s?", "yes"),
            ("count", f"How many {b}s are there?", str(k)), ("area", f"What is the area covered by {a}s?", areas[k % 4])]


def write_rsvqa(root: Path, hr: bool = False, splits: dict[str, list[int]] | None = None) -> dict[str, list[tuple]]:
    """An RSVQA folder; returns split -> [(qid, img_id, type, question, answer)] of the active questions."""
    prefix, img_dir = ("USGS", "Data") if hr else ("LR", "Images_LR")
    splits = splits or ({"train": [0, 1, 2, 3], "val": [4, 5], "test": [6, 7], "test_phili": [8, 9]} if hr
                        else {"train": [0, 1, 2, 3, 4], "val": [5, 6], "test": [7, 8]})
    (root / img_dir).mkdir(parents=True, exist_ok=True)
    qid = aid = 0
    truth: dict[str, list[tuple]] = {}
    for split, imgs in splits.items():
        questions, answers, images = [], [], []
        for k in imgs:
            (root / img_dir / f"{k}.tif").write_bytes(TIF + bytes([k]))  # one content per image
            ids = []
            for t, q, a in (hr_questions(k) if hr else lr_questions(k)):
                questions.append({"id": qid, "date_added": 1.5e9, "img_id": k, "people_id": 0, "type": t,
                                  "question": q, "answers_ids": [aid], "active": True})
                answers.append({"id": aid, "date_added": 1.5e9, "question_id": qid, "people_id": 0, "answer": a}
                               | ({} if hr else {"active": True}))
                truth.setdefault(split, []).append((qid, k, t, q, a))
                ids.append(qid)
                qid, aid = qid + 1, aid + 1
            # a retired question: inactive, never imported
            questions.append({"id": qid, "img_id": k, "type": "presence", "question": "Is there a zebra?",
                              "answers_ids": [aid], "active": False})
            answers.append({"id": aid, "question_id": qid, "answer": "maybe"})
            ids.append(qid)
            qid, aid = qid + 1, aid + 1
            images.append({"id": k, "date_added": 1.5e9, "people_id": 0, "active": True}
                          | ({"original_name": f"tile_{k}.tif"} if hr else {"questions_ids": ids}))
        images.append({"id": 99, "questions_ids": [], "active": False})  # an inactive image
        for kind, entries in (("questions", questions), ("answers", answers), ("images", images)):
            (root / f"{prefix}_split_{split}_{kind}.json").write_text(json.dumps({kind: entries}))
    return truth


def read_records(out: Path, name: str, split: str) -> list[dict]:
    return json.loads((out / f"{name}_{split}.json").read_text(encoding="utf-8"))


# ---- answers by rule ----------------------------------------------------------------------------------
@pytest.mark.parametrize("answer, zh", [
    ("yes", "是"), ("No", "否"), ("no.", "否"), ("0", "0"), ("12", "12"), ("1203", "1203"), ("2.5", "2.5"),
    ("rural", "农村"), ("Urban", "城市"),
    ("0m2", "0平方米"), ("10631m2", "10631平方米"), ("1000 m2", "1000平方米"), ("25 m²", "25平方米"),
    ("between 0m2 and 10m2", "0到10平方米之间"), ("between 100m2 and 1000m2", "100到1000平方米之间"),
    ("more than 1000m2", "超过1000平方米"), ("between 10 and 100", "10到100之间"), ("more than 1000", "超过1000"),
    ("less than 10", "少于10"),
    ("maybe", None), ("", None), ("a road", None),
])
def test_answers_map_by_rule(answer, zh):
    assert answer_zh(answer) == zh


def test_a_translated_question_ends_with_a_question_mark():
    assert question_zh("图中有道路吗。") == "图中有道路吗？"
    assert question_zh("有多少栋建筑？") == "有多少栋建筑？"
    assert question_zh("一道路?。") == "一道路？"


def test_question_translations_pass_the_checks_only_for_english_questions():
    assert check_translation("is there a road?", "图中有道路吗？") == []
    assert check_translation("how many buildings are there?", "有多少栋建筑？") == []
    assert check_translation("there is a road", "图中有道路吗？")  # a caption answered with a question
    assert check_translation("is there a road?", "好的。有道路吗？")  # chatter is still refused


# ---- RSVQA end to end -------------------------------------------------------------------------------------
def _rsvqa_args(srv, tmp_path, root, *extra):
    return ["rsvqa", "--root", str(root), "--out_dir", str(tmp_path / "out"), "--base_url", srv.base_url,
            "--model", "m", "--cache", str(tmp_path / "cache.sqlite"), "--no_progress", "--concurrency", "2",
            "--batch_size", "6", *extra]


def _until_done(args, runs: int = 4) -> subprocess.CompletedProcess:
    """Rerun until finished, as a user does when some items are still failing after every round."""
    for _ in range(runs):
        r = importers(*args)
        if r.returncode == 0:
            return r
        assert "still not done after every round" in r.stderr and "Traceback" not in r.stderr, r.stderr
    raise AssertionError(r.stderr)


def test_rsvqa_lr_end_to_end_against_a_misbehaving_llm(tmp_path):
    truth = write_rsvqa(tmp_path / "RSVQA_LR")
    english = {normalise(q) for rows in truth.values() for _, _, _, q, _ in rows}
    answers = {a for rows in truth.values() for *_, a in rows}
    with FakeLLM(rates=CONTENT_FAULTS, counts={"refuse": 2, "server_error": 1, "mood": 1}, seed=5,
                 retry_after=[{"retry-after-ms": "10"}]) as srv:
        r = _until_done(_rsvqa_args(srv, tmp_path, tmp_path / "RSVQA_LR"))
        assert "answers by rule (no LLM)" in r.stderr
        assert {"refuse", "server_error", "mood"} <= set(srv.fault_log)
        asked = set(srv.sentence_requests)
        # only questions reach the LLM: no yes/no, number or rural/urban answer is ever sent
        assert asked == english and not asked & answers and not any(re.fullmatch(r"\d+", s) for s in asked)
        out = tmp_path / "out"
        for split, rows in truth.items():
            recs = read_records(out, "RSVQA-LR", split)
            assert len(recs) == len(rows)  # the inactive question and image are not imported
            by_qid = {rec["qid"]: rec for rec in recs}
            for qid, img, qtype, q, a in rows:
                rec = by_qid[qid]
                assert rec["task"] == "vqa" and rec["qtype"] == qtype and rec["img"] == f"../RSVQA_LR/Images_LR/{img}.tif"
                assert rec["label"] == {"yes": "是", "no": "否", "rural": "农村", "urban": "城市"}.get(a, a)
                assert rec["prompt"].endswith("？") and re.search(r"[\u4e00-\u9fff]", rec["prompt"])
                assert not re.search(r"抱歉|好的|以下是|宁静|美丽|```|[A-Za-z]{2}", rec["prompt"]), rec["prompt"]
                if split != "train":
                    assert (rec["question_en"], rec["answer_en"]) == (q, a)
        imgs = {split: {rec["img"] for rec in read_records(out, "RSVQA-LR", split)} for split in truth}
        assert not imgs["train"] & imgs["val"] and not imgs["train"] & imgs["test"] and not imgs["val"] & imgs["test"]
        table = json.loads((out / "RSVQA-LR_questions_zh.json").read_text(encoding="utf-8"))
        assert {normalise(q["en"]) for q in table["questions"]} == english
        # a finished job: the rerun makes no call and rewrites nothing
        mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.json")}
        calls = srv.requests
        time.sleep(0.01)
        r = importers(*_rsvqa_args(srv, tmp_path, tmp_path / "RSVQA_LR"))
        assert r.returncode == 0 and srv.requests == calls, r.stderr
        assert "up to date" in r.stderr and "LLM: 0 calls" in r.stderr
        assert {p: p.stat().st_mtime_ns for p in out.glob("*.json")} == mtimes
        assert not srv.asked_after_valid()  # nothing answered validly was asked again
        assert not (out / "failures.json").exists()


def test_rsvqa_hr_layout_areas_and_the_second_test_set(fake_llm, tmp_path):
    truth = write_rsvqa(tmp_path / "RSVQA_HR", hr=True)
    srv = fake_llm(counts={"refuse": 1, "partial": 1}, seed=2)
    r = _until_done(_rsvqa_args(srv, tmp_path, tmp_path / "RSVQA_HR"))
    assert "test_phili: 2 images, 8 questions" in r.stderr
    out = tmp_path / "out"
    labels = {}
    for split, rows in truth.items():
        recs = {rec["qid"]: rec for rec in read_records(out, "RSVQA-HR", split)}
        assert set(recs) == {row[0] for row in rows}
        for qid, img, qtype, q, a in rows:
            assert recs[qid]["qtype"] == qtype and recs[qid]["img"] == f"../RSVQA_HR/Data/{img}.tif"
            labels[a] = recs[qid]["label"]
    assert labels["0m2"] == "0平方米" and labels["between 100m2 and 1000m2"] == "100到1000平方米之间"
    assert labels["more than 1000m2"] == "超过1000平方米" and labels["1560m2"] == "1560平方米"
    assert labels["yes"] == "是" and labels["no"] == "否" and labels["7"] == "7"
    train = {rec["img"] for rec in read_records(out, "RSVQA-HR", "train")}
    assert not train & {rec["img"] for rec in read_records(out, "RSVQA-HR", "test_phili")}
    assert not any(a in srv.sentence_requests for a in labels)


def test_rsvqa_dry_run_and_limit(fake_llm, tmp_path):
    write_rsvqa(tmp_path / "RSVQA_LR")
    srv = fake_llm()
    r = importers(*_rsvqa_args(srv, tmp_path, tmp_path / "RSVQA_LR", "--dry_run"))
    assert r.returncode == 0 and "would translate" in r.stderr and "answers need no LLM" in r.stderr, r.stderr
    assert srv.requests == 0 and not (tmp_path / "out").exists() and not (tmp_path / "cache.sqlite").exists()
    r = importers(*_rsvqa_args(srv, tmp_path, tmp_path / "RSVQA_LR", "--limit", "1"))
    assert r.returncode == 0, r.stderr
    assert "train: 1 images, 7 questions" in r.stderr and "val: 1 images, 7 questions" in r.stderr


def test_an_unreachable_endpoint_writes_nothing_and_says_so(tmp_path):
    from remoteglm.compat import free_port

    write_rsvqa(tmp_path / "RSVQA_LR")
    r = importers("rsvqa", "--root", str(tmp_path / "RSVQA_LR"), "--out_dir", str(tmp_path / "out"), "--base_url",
                  f"http://127.0.0.1:{free_port()}/v1", "--model", "m", "--cache", str(tmp_path / "c.sqlite"),
                  "--retries", "0", "--no_progress")
    line = one_error_line(r)
    assert "nothing written" in line and "cannot be reached" in line
    assert json.loads((tmp_path / "out" / "failures.json").read_text(encoding="utf-8"))


def test_a_question_that_keeps_failing_leaves_the_rest_written(fake_llm, tmp_path):
    """The fake drops words it does not know ("fewer ... than"): the length check refuses that
    translation every time. The other questions are written, failures.json names this one, and a
    rerun asks for it alone."""
    root = tmp_path / "RSVQA_LR"
    truth = write_rsvqa(root)
    stuck = "Are there fewer buildings than farmlands?"
    _drop(root / "LR_split_val_questions.json", "questions",
          lambda qs: [q | {"question": stuck} if q["id"] == truth["val"][0][0] else q for q in qs])
    srv = fake_llm()
    line = one_error_line(importers(*_rsvqa_args(srv, tmp_path, root)))
    total = sum(len(rows) for rows in truth.values())
    assert f"1 distinct questions still not done after every round ({total - 1} of {total} questions written" in line
    assert "translation far shorter than the English" in line and "a rerun asks only for these" in line
    failures = json.loads((tmp_path / "out" / "failures.json").read_text(encoding="utf-8"))
    assert [(f["question"], f["questions"], f["splits"]) for f in failures] == [(stuck, 1, ["val"])]
    val = read_records(tmp_path / "out", "RSVQA-LR", "val")
    assert len(val) == len(truth["val"]) - 1 and truth["val"][0][0] not in {rec["qid"] for rec in val}
    before = Counter(srv.sentence_requests)
    one_error_line(importers(*_rsvqa_args(srv, tmp_path, root)))
    assert set(Counter(srv.sentence_requests) - before) == {normalise(stuck)}


def test_an_interrupted_job_resumes_without_asking_again(fake_llm, tmp_path):
    """A first run that covered part of the set (here: --limit 1) leaves its answers in the cache;
    the full run asks only for the rest, and every file gets the mode of a plain open() under the umask."""
    root = tmp_path / "RSVQA_LR"
    write_rsvqa(root)
    srv = fake_llm(counts={"refuse": 1})
    assert importers(*_rsvqa_args(srv, tmp_path, root, "--limit", "1")).returncode == 0
    first = set(srv.sentence_requests)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "REMOTEGLM_DEBUG", "OPENAI_BASE_URL")}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-m", "remoteglm.data.importers", *_rsvqa_args(srv, tmp_path, root)],
                       capture_output=True, text=True, timeout=120, env=env, cwd=ROOT, check=False,
                       preexec_fn=lambda: os.umask(0o027))
    assert r.returncode == 0, r.stderr
    assert first and not srv.asked_after_valid()
    for p in (tmp_path / "out").glob("*.json"):
        assert p.stat().st_mode & 0o777 == 0o640, p


def _drop(path: Path, key: str, fn):
    obj = json.loads(path.read_text())
    obj[key] = fn(obj[key])
    path.write_text(json.dumps(obj))


def _bad_missing_file(root):
    (root / "LR_split_val_answers.json").unlink()


def _bad_answer_id(root):
    _drop(root / "LR_split_train_questions.json", "questions",
          lambda qs: [q | {"answers_ids": [10_000]} if q["id"] == 3 else q for q in qs])


def _bad_question_id(root):
    _drop(root / "LR_split_test_images.json", "images",
          lambda ims: [im | {"questions_ids": im["questions_ids"] + [55_555]} if im["id"] == 7 else im for im in ims])


def _bad_img_id(root):
    _drop(root / "LR_split_train_questions.json", "questions",
          lambda qs: [q | {"img_id": 4} if q["id"] == 0 else q for q in qs])


def _bad_answer_owner(root):
    _drop(root / "LR_split_train_answers.json", "answers",
          lambda ans: [a | {"question_id": 1} if a["id"] == 2 else a for a in ans])


def _bad_two_splits(root):
    _drop(root / "LR_split_val_images.json", "images", lambda ims: ims + [{"id": 0, "questions_ids": [], "active": True}])


def _bad_json(root):
    (root / "LR_split_train_images.json").write_text('{"images": [')


def _bad_shape(root):
    (root / "LR_split_train_questions.json").write_text("[]")


def _bad_no_files(root):
    for p in root.glob("*.json"):
        p.unlink()


def _bad_no_type(root):
    _drop(root / "LR_split_train_questions.json", "questions",
          lambda qs: [{k: v for k, v in q.items() if k != "type"} if q["id"] == 0 else q for q in qs])


@pytest.mark.parametrize("damage, expected", [
    (_bad_missing_file, "split 'val' has LR_split_val_questions.json, LR_split_val_images.json but no answers file"),
    (_bad_answer_id, "questions point to answer ids that LR_split_train_answers.json does not have (e.g. question 3 -> answer 10000)"),
    (_bad_question_id, "LR_split_test_images.json lists question ids that LR_split_test_questions.json does not have"),
    (_bad_img_id, "belong to another image than the one listing them"),
    (_bad_answer_owner, "answers belong to another question than the one pointing to them"),
    (_bad_two_splits, "image 0 is active in both the train and the val images files"),
    (_bad_json, "malformed JSON at line 1"),
    (_bad_shape, 'expected {"questions": [...]} (an RSVQA questions file), got a JSON list'),
    (_bad_no_files, "no RSVQA split files (found no JSON files); expected <prefix>_split_"),
    (_bad_no_type, "question 0 has no 'type'"),
])
def test_bad_rsvqa_layouts_are_one_line_and_ask_nothing(fake_llm, tmp_path, damage, expected):
    root = tmp_path / "RSVQA_LR"
    write_rsvqa(root)
    damage(root)
    srv = fake_llm()
    line = one_error_line(importers(*_rsvqa_args(srv, tmp_path, root)))
    assert expected in line, line
    assert srv.requests == 0 and not (tmp_path / "out").exists()


def test_unknown_answers_and_missing_images_are_warnings(tmp_path):
    root = tmp_path / "RSVQA_LR"
    write_rsvqa(root)
    _drop(root / "LR_split_train_answers.json", "answers",
          lambda ans: [a | {"answer": "a few"} if a["id"] in (0, 1) else a for a in ans])
    (root / "Images_LR" / "3.tif").unlink()
    vs = load_rsvqa(root)
    assert vs.name == "RSVQA-LR" and vs.splits == ["train", "val", "test"]
    assert any("2 question(s) whose answer no rule maps were left out ('a few' x2)" in w for w in vs.warnings)
    assert any("1 of 9 images missing" in w and "3.tif" in w for w in vs.warnings)
    assert not any(it.qid in (0, 1) for it in vs.items)


# ---- scene sets -------------------------------------------------------------------------------------------
# The class folders as each set ships them (spelling and case as in the official downloads).
SCENE_FOLDERS = {
    "AID": ["Airport", "BareLand", "BaseballField", "Beach", "Bridge", "Center", "Church", "Commercial",
            "DenseResidential", "Desert", "Farmland", "Forest", "Industrial", "Meadow", "MediumResidential", "Mountain",
            "Park", "Parking", "Playground", "Pond", "Port", "RailwayStation", "Resort", "River", "School",
            "SparseResidential", "Square", "Stadium", "StorageTanks", "Viaduct"],
    "NWPU-RESISC45": ["airplane", "airport", "baseball_diamond", "basketball_court", "beach", "bridge", "chaparral",
                      "church", "circular_farmland", "cloud", "commercial_area", "dense_residential", "desert", "forest",
                      "freeway", "golf_course", "ground_track_field", "harbor", "industrial_area", "intersection",
                      "island", "lake", "meadow", "medium_residential", "mobile_home_park", "mountain", "overpass",
                      "palace", "parking_lot", "railway", "railway_station", "rectangular_farmland", "river",
                      "roundabout", "runway", "sea_ice", "ship", "snowberg", "sparse_residential", "stadium",
                      "storage_tank", "tennis_court", "terrace", "thermal_power_station", "wetland"],
    "UCM": ["agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral", "denseresidential",
            "forest", "freeway", "golfcourse", "harbor", "intersection", "mediumresidential", "mobilehomepark",
            "overpass", "parkinglot", "river", "runway", "sparseresidential", "storagetanks", "tenniscourt"],
    "WHU-RS19": ["Airport", "Beach", "Bridge", "Commercial", "Desert", "Farmland", "footballField", "Forest",
                 "Industrial", "Meadow", "Mountain", "Park", "Parking", "Pond", "Port", "railwayStation", "Residential",
                 "River", "Viaduct"],
}
SCENE_ROOTS = {"AID": "AID", "NWPU-RESISC45": "NWPU-RESISC45", "UCM": "UCMerced_LandUse/Images", "WHU-RS19": "WHU-RS19"}


def scene_file(name: str, folder: str, i: int) -> str:
    stem = folder.lower()
    return {"AID": f"{stem}_{i + 1}.jpg", "NWPU-RESISC45": f"{stem}_{i + 1:03d}.jpg", "UCM": f"{stem}{i:02d}.tif",
            "WHU-RS19": f"{stem}_{i + 1:02d}.jpg"}[name]


def write_scenes(base: Path, name: str, per_class: int = 10, folders: list[str] | None = None) -> Path:
    root = base / SCENE_ROOTS[name]
    for folder in folders or SCENE_FOLDERS[name]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            # each image its own bytes: copies of one image would share one split
            (root / folder / scene_file(name, folder, i)).write_bytes((TIF if name == "UCM" else PNG) + f"{folder}{i}".encode())
    return base / SCENE_ROOTS[name].split("/")[0]


def test_the_glossary_covers_every_class_of_the_four_sets():
    assert {n: len(CLASSES[n]) for n in SCENE_SETS} == {"AID": 30, "NWPU-RESISC45": 45, "UCM": 21, "WHU-RS19": 19}
    for name in SCENE_SETS:
        zh = class_names_zh(name)
        assert len(set(zh)) == len(zh) and all(re.fullmatch(r"[\u4e00-\u9fff]{2,6}", z) for z in zh), (name, zh)
        assert set(CLASS_NAMES_ZH[name]) == set(CLASSES[name])
        # every official folder is one class, all classes are covered, none twice
        resolved = [folder_class(name, f) for f in SCENE_FOLDERS[name]]
        assert sorted(resolved) == sorted(CLASSES[name]), name
    assert CLASSES["AID"] == CLASSES["RSICD"]  # RSICD's classes are AID's


@pytest.mark.parametrize("name, folder, cls", [
    ("AID", "Parking", "parking"), ("AID", "parking_lot", "parking"), ("AID", "ParkingLot", "parking"),
    ("NWPU-RESISC45", "Parking", "parkinglot"), ("UCM", "parking_lot", "parkinglot"), ("UCM", "ParkingLot", "parkinglot"),
    ("UCM", "storage_tank", "storagetanks"), ("NWPU-RESISC45", "StorageTanks", "storagetank"),
    ("AID", "storage_tank", "storagetanks"), ("WHU-RS19", "football_field", "footballfield"),
    ("WHU-RS19", "Railway Station", "railwaystation"), ("UCM", "Harbour", "harbor"), ("AID", "harbor", "port"),
    ("NWPU-RESISC45", "Commercial", "commercialarea"), ("UCM", "building", "buildings"), ("AID", "Airprot", None),
    ("UCM", "cloud", None),
])
def test_folder_spellings(name, folder, cls):
    assert folder_class(name, folder) == cls


@pytest.mark.parametrize("name", SCENE_SETS)
def test_scene_sets_end_to_end(tmp_path, name):
    root = write_scenes(tmp_path, name)
    out = tmp_path / "out"
    r = importers("scenes", "--root", str(root), "--out_dir", str(out))
    assert r.returncode == 0, r.stderr
    assert f"scenes: {name}, {len(CLASSES[name])} of {len(CLASSES[name])} classes" in r.stderr and "seeded" in r.stderr
    prompt = classify_prompt(class_names_zh(name))
    per = Counter()
    imgs = {}
    for split in ("train", "val", "test"):
        recs = json.loads((out / f"{name}_classify_{split}.json").read_text(encoding="utf-8"))
        imgs[split] = {rec["img"] for rec in recs}
        for rec in recs:
            assert rec["prompt"] == prompt and rec["task"] == "classify"
            assert rec["label"] == CLASS_NAMES_ZH[name][rec["class"]]
            assert (tmp_path / "out" / rec["img"]).resolve().is_file()
            per[(rec["class"], split)] += 1
    for c in CLASSES[name]:  # 80/10/10 of each class
        assert (per[(c, "train")], per[(c, "val")], per[(c, "test")]) == (8, 1, 1), c
    assert not imgs["train"] & imgs["val"] and not imgs["train"] & imgs["test"] and not imgs["val"] & imgs["test"]
    meta = json.loads((out / f"{name}_classes.json").read_text(encoding="utf-8"))
    assert meta["classes_zh"] == class_names_zh(name) and meta["dataset"] == name
    assert sum(meta["counts"]["train"].values()) == len(imgs["train"]) and not list(out.glob(".*.tmp"))
    # reproducible: a second run finds everything up to date
    r2 = importers("scenes", "--root", str(root), "--out_dir", str(out))
    assert r2.returncode == 0 and "up to date" in r2.stderr


def test_the_seeded_split_is_the_same_wherever_the_set_lies(tmp_path):
    a = load_scene_folders(write_scenes(tmp_path / "a", "AID", per_class=20))
    b = load_scene_folders(write_scenes(tmp_path / "b", "AID", per_class=20))
    assert [(im.filename, im.split) for im in a.images] == [(im.filename, im.split) for im in b.images]
    c = load_scene_folders(tmp_path / "a" / "AID", val=0.2, test=0.3)
    assert Counter(im.split for im in c.images if im.cls == "airport") == {"train": 10, "val": 4, "test": 6}


def test_an_out_dir_that_cannot_be_made_is_one_line_before_any_work(fake_llm, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(RemoteGLMError, match="--out_dir .*a_file is a file, not a folder"):
        import_scenes(ScenesConfig(write_scenes(tmp_path / "s", "AID", per_class=2), out_dir=blocker / "out"))
    write_rsvqa(tmp_path / "RSVQA_LR")
    srv = fake_llm()
    r = importers("rsvqa", "--root", str(tmp_path / "RSVQA_LR"), "--out_dir", str(blocker / "out"), "--base_url",
                  srv.base_url, "--model", "m", "--cache", str(tmp_path / "c.sqlite"), "--no_progress")
    assert "is a file, not a folder" in one_error_line(r) and srv.requests == 0
    assert not (tmp_path / "c.sqlite").exists() and blocker.read_text() == "x"


def test_official_split_lists_are_used_where_the_set_has_them(tmp_path):
    base = tmp_path / "resisc45"
    write_scenes(base, "NWPU-RESISC45", per_class=5)
    files = {split: [] for split in ("train", "val", "test")}
    for folder in SCENE_FOLDERS["NWPU-RESISC45"]:
        names = [scene_file("NWPU-RESISC45", folder, i) for i in range(5)]
        files["train"] += names[:3]
        files["val"].append(names[3])
        if folder != "wetland":  # one image the lists do not name
            files["test"].append(names[4])
    files["test"].append("ghost_001.jpg")
    for split, names in files.items():
        (base / f"resisc45-{split}.txt").write_text("\n".join(names) + "\n")
    ss = load_scene_folders(base)  # the lists lie beside the image folder's parent, as TorchGeo keeps them
    assert ss.name == "NWPU-RESISC45" and ss.split_source.startswith("official: resisc45-")
    assert Counter(im.split for im in ss.images) == {"train": 135, "val": 45, "test": 44}
    assert any("1 image(s) are in no official split list" in w for w in ss.warnings)
    assert any("1 line(s) of the split lists name no image here" in w for w in ss.warnings)
    seeded = load_scene_folders(base, seeded=True)
    assert seeded.split_source.startswith("seeded") and len(seeded.images) == 225
    s = import_scenes(ScenesConfig(base, out_dir=tmp_path / "out"))
    assert s.split_counts["test"]["records"] == 44


def _bad_unknown(base):
    root = write_scenes(base, "AID", per_class=2)
    (root / "Airport").rename(root / "Airprot")
    (root / "Lighthouse").mkdir()
    (root / "Lighthouse" / "x.jpg").write_bytes(PNG)
    return root, "2 folder(s) are not AID classes: 'Airprot' (did you mean airport?), 'Lighthouse'; AID has 30 classes"


def _bad_empty(base):
    root = write_scenes(base, "WHU-RS19", per_class=2)
    for p in (root / "Viaduct").iterdir():
        p.unlink()
    (root / "Viaduct" / "notes.txt").write_text("")
    return root, "1 class folder(s) have no images ('Viaduct'"


def _bad_flat(base):
    root = base / "AID"
    root.mkdir()
    (root / "airport_1.jpg").write_bytes(PNG)
    return root, "no class folders (found 1 image file(s) directly in it)"


def _bad_twice(base):
    root = write_scenes(base, "AID", per_class=2)
    (root / "parking_lot").mkdir()
    (root / "parking_lot" / "p.jpg").write_bytes(PNG)
    return root, "folders 'Parking' and 'parking_lot' are both the AID class parking"


def _bad_ambiguous(base):
    root = write_scenes(base, "AID", per_class=2, folders=["Airport", "Beach", "Bridge"])
    moved = base / "some_scenes"
    root.rename(moved)
    return moved, "its folders fit AID, NWPU-RESISC45, WHU-RS19): pass --name"


def _bad_missing(base):
    return base / "nowhere", "scene folder not found"


@pytest.mark.parametrize("damage", [_bad_unknown, _bad_empty, _bad_flat, _bad_twice, _bad_ambiguous, _bad_missing])
def test_bad_scene_layouts_are_one_line(tmp_path, damage):
    root, expected = damage(tmp_path)
    line = one_error_line(importers("scenes", "--root", str(root), "--out_dir", str(tmp_path / "out")))
    assert expected in line, line
    assert not (tmp_path / "out").exists()


def test_folders_of_another_set_say_which_set_they_are(tmp_path):
    root = write_scenes(tmp_path, "UCM", per_class=2)
    line = one_error_line(importers("scenes", "--root", str(root), "--name", "AID", "--out_dir", str(tmp_path / "o")))
    assert "folder(s) are not AID classes" in line and "or pass --name UCM (these folders are its classes)" in line
    line = one_error_line(importers("scenes", "--root", str(root), "--name", "EuroSAT"))
    assert "unknown scene set 'EuroSAT'" in line


def test_a_missing_class_is_a_warning_and_the_prompt_keeps_every_class(tmp_path):
    folders = [f for f in SCENE_FOLDERS["UCM"] if f != "tenniscourt"]
    root = write_scenes(tmp_path, "UCM", per_class=10, folders=folders)
    s = import_scenes(ScenesConfig(root, out_dir=tmp_path / "out"))
    recs = json.loads((tmp_path / "out" / "UCM_classify_train.json").read_text(encoding="utf-8"))
    assert s.items == 200 and "网球场" in recs[0]["prompt"] and "网球场" not in {r["label"] for r in recs}
    (root / "Images" / "tennis").mkdir()
    (root / "Images" / "tennis" / "a.tif").write_bytes(TIF)
    with pytest.raises(RemoteGLMError, match="1 folder\\(s\\) are not UCM classes: 'tennis'"):
        load_scene_folders(root, name="UCM")


def test_help_lists_both_importers_and_the_llm_options():
    r = importers("--help")
    assert r.returncode == 0 and "rsvqa" in r.stdout and "scenes" in r.stdout
    r = importers("rsvqa", "--help")
    assert r.returncode == 0 and "--base_url" in r.stdout and "--api_key_env" in r.stdout and "--cache" in r.stdout
