"""One split per image content across every builder (issue 18, item 8): UC Merced in miniature.

UCM_captions and the UC Merced scene folders are the same images under other names and folders.
Built independently, the caption set's test images turned up in the scene set's train split. Here
30 real (tiny) images are imported both ways, in both orders, and every content hash must end up
in one split across both outputs; official splits that disagree are refused before anything is
written; fine-tuning a mix that leaks is one error line before any model loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from datahelp import karpathy_from_list, run_cli, ucm_list, write_json
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
# Caption numbers 1-10, 101-110, 201-210: classes agricultural, airplane, baseballdiamond in UCM's order.
FOLDERS = ("agricultural", "airplane", "baseballdiamond")
NUMBERS = [c * 100 + i + 1 for c in range(3) for i in range(10)]
# The caption set's official split: per class 6 train, 2 val, 2 test.
OFFICIAL = ["train"] * 6 + ["val"] * 2 + ["test"] * 2


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ucm_family(base: Path, caption_splits: list[str] | None = None) -> dict:
    """UCM_captions (Karpathy dataset.json, imgs/N.tif) and UCMerced_LandUse/Images/<class>/<class>NN.tif:
    the same 30 images (distinct bytes each, PIL-made), named and laid out as the two downloads are."""
    caps = base / "UCM_captions"
    scenes = base / "UCMerced_LandUse" / "Images"
    (caps / "imgs").mkdir(parents=True)
    items = ucm_list()
    chosen = [items[n - 1] for n in NUMBERS]
    assert [it["imged_id"] for it in chosen] == [f"{n}.tif" for n in NUMBERS]
    write_json(caps / "dataset.json", karpathy_from_list(chosen, caption_splits or OFFICIAL))
    pairs = {}
    for k, n in enumerate(NUMBERS):
        img = Image.new("RGB", (8, 8), (k * 8, 255 - k * 8, (k * 37) % 256))
        img.putpixel((k % 8, k // 8), (1, 2, 3))
        img.save(caps / "imgs" / f"{n}.tif", format="TIFF")
        folder = FOLDERS[k // 10]
        scene = scenes / folder / f"{folder}{k % 10:02d}.tif"
        scene.parent.mkdir(parents=True, exist_ok=True)
        scene.write_bytes((caps / "imgs" / f"{n}.tif").read_bytes())
        pairs[f"{n}.tif"] = scene
    return {"captions": caps / "dataset.json", "scenes": base / "UCMerced_LandUse", "pairs": pairs,
            "cap_out": base / "UCM_zh", "scene_out": base / "UCM_classify"}


def build_captions(fam: dict, srv, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("--input", str(fam["captions"]), "--out_dir", str(fam["cap_out"]), "--base_url", srv.base_url,
                   "--model", "fake", "--cache", str(tmp_path / "cache.sqlite"), *extra)


def build_scenes(fam: dict, *extra: str) -> subprocess.CompletedProcess:
    return importers("scenes", "--root", str(fam["scenes"]), "--out_dir", str(fam["scene_out"]), *extra)


def importers(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "REMOTEGLM_DEBUG", "OPENAI_BASE_URL")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "remoteglm.data.importers", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT, check=False)


def content_splits(out: Path, prefix: str) -> dict[str, set[str]]:
    """content hash -> the splits whose fine-tune file names an image with that content."""
    got: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        for rec in json.loads((out / f"{prefix}_{split}.json").read_text(encoding="utf-8")):
            got.setdefault(sha(out / rec["img"]), set()).add(split)
    return got


def assert_one_split_per_content(fam: dict) -> dict[str, str]:
    caps = content_splits(fam["cap_out"], "UCM")
    scenes = content_splits(fam["scene_out"], "UCM_classify")
    assert len(caps) == len(scenes) == 30
    both = {d: caps[d] | scenes[d] for d in caps}
    mixed = {d: s for d, s in both.items() if len(s) > 1}
    assert not mixed, f"{len(mixed)} images are in two splits: {sorted(map(sorted, mixed.values()))[:3]}"
    return {d: next(iter(s)) for d, s in both.items()}


def official_by_content(fam: dict, splits: list[str] | None = None) -> dict[str, str]:
    return {sha(fam["captions"].parent / "imgs" / f"{n}.tif"): (splits or OFFICIAL)[i % len(splits or OFFICIAL)]
            for i, n in enumerate(NUMBERS)}


def warnings_of(r: subprocess.CompletedProcess) -> list[str]:
    """Warning lines, less the one every miniature scene set gets (18 of UCM's 21 classes have no folder)."""
    return [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ") and "have no folder here" not in ln]


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def test_scenes_built_after_the_captions_follow_their_official_split(fake_llm, tmp_path):
    fam = ucm_family(tmp_path)
    srv = fake_llm()
    r = build_captions(fam, srv, tmp_path)
    assert r.returncode == 0, r.stderr
    r = build_scenes(fam)
    assert r.returncode == 0, r.stderr
    assert assert_one_split_per_content(fam) == official_by_content(fam)
    assert not warnings_of(r), r.stderr
    assert "30 image(s) take the split that UCM captions" in r.stderr, r.stderr
    # both registered, one split per content; a rerun of either changes nothing
    reg = json.loads((tmp_path / "splits.json").read_text(encoding="utf-8"))
    assert len(reg["sources"]) == 2
    written = (tmp_path / "splits.json").stat().st_mtime_ns
    assert "up to date" in build_scenes(fam).stderr
    assert (tmp_path / "splits.json").stat().st_mtime_ns == written


def test_captions_built_after_the_scenes_win_and_say_how_to_rebuild_them(fake_llm, tmp_path, capsys):
    fam = ucm_family(tmp_path)
    srv = fake_llm()
    r = build_scenes(fam)
    assert r.returncode == 0, r.stderr
    r = build_captions(fam, srv, tmp_path)
    assert r.returncode == 0, r.stderr
    warned = warnings_of(r)
    assert len(warned) == 1, r.stderr
    assert "UCM scenes" in warned[0] and "leak" in warned[0], warned[0]
    command = warned[0].split("rebuild it: ", 1)[1]
    assert command == shlex.join(["python", "-m", "remoteglm.data.importers", "scenes", "--root", str(fam["scenes"]),
                                  "--out_dir", str(fam["scene_out"])])

    # until then, fine-tuning on the stale scene files is refused before any model loads
    from remoteglm.train.finetune import main

    rc = main(["--from_pretrained", "random:visualglm-tiny", "--train_data", str(fam["scene_out"] / "UCM_classify_train.json"),
               "--save", str(tmp_path / "runs"), "--train_iters", "1"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "held out" in lines[0] and "UCM captions" in lines[0] and str(tmp_path / "splits.json") in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()

    # the printed command, as printed, fixes it; afterwards nothing warns
    r = importers(*shlex.split(command)[3:])
    assert r.returncode == 0 and not warnings_of(r), r.stderr
    assert assert_one_split_per_content(fam) == official_by_content(fam)
    r = build_captions(fam, srv, tmp_path)
    assert r.returncode == 0 and not warnings_of(r), r.stderr


def _disagreeing_lists(fam: dict) -> None:
    """Official scene lists that put the caption set's test images into train (and its train into test)."""
    lists = {"train": [], "val": [], "test": []}
    for i, scene in enumerate(fam["pairs"].values()):
        lists[{"train": "test", "val": "val", "test": "train"}[OFFICIAL[i % 10]]].append(scene.name)
    for split, names in lists.items():
        (fam["scenes"] / f"ucm-{split}.txt").write_text("\n".join(names) + "\n")


def test_official_splits_that_disagree_are_refused_before_anything_is_written(fake_llm, tmp_path):
    srv = fake_llm()
    fam = ucm_family(tmp_path / "a")
    _disagreeing_lists(fam)
    assert build_scenes(fam).returncode == 0
    line = one_error_line(build_captions(fam, srv, tmp_path))
    # 6 train images per class are scene-test, 2 test images scene-train: 24 of 30 would leak
    assert "official" in line and "UCM scenes" in line and "24 image(s)" in line, line
    assert srv.requests == 0 and not fam["cap_out"].exists() and not (tmp_path / "cache.sqlite").exists()

    # the other order: the scene lists are refused against the caption set's split
    fam = ucm_family(tmp_path / "b")
    _disagreeing_lists(fam)
    assert build_captions(fam, srv, tmp_path).returncode == 0
    line = one_error_line(build_scenes(fam))
    assert "official" in line and "UCM captions" in line and "24 image(s)" in line, line
    assert not fam["scene_out"].exists()


def test_copies_of_one_image_within_a_set_get_one_split(tmp_path):
    fam = ucm_family(tmp_path)
    scenes = fam["scenes"] / "Images"
    # seeded split: a byte copy of one image in another class folder follows that image's split
    copy = scenes / "airplane" / "airplane10.tif"
    copy.write_bytes((scenes / "agricultural" / "agricultural00.tif").read_bytes())
    r = build_scenes(fam, "--seeded_split")
    assert r.returncode == 0, r.stderr
    got = content_splits(fam["scene_out"], "UCM_classify")
    assert all(len(s) == 1 for s in got.values()), got
    # official lists with the copy in train and the original in test: the train copy is left out
    names = sorted(p.relative_to(scenes).as_posix() for p in scenes.rglob("*.tif"))
    lists = {"train": [n for n in names if n != "agricultural/agricultural00.tif"],
             "test": ["agricultural/agricultural00.tif"]}
    for split, ns in lists.items():
        (fam["scenes"] / f"ucm-{split}.txt").write_text("\n".join(ns) + "\n")
    r = build_scenes(fam)
    assert r.returncode == 0, r.stderr
    assert any("1 train image(s)" in w and "left out of train" in w for w in warnings_of(r)), r.stderr
    got = content_splits_partial(fam["scene_out"], "UCM_classify")
    assert got[sha(copy)] == {"test"}


def content_splits_partial(out: Path, prefix: str) -> dict[str, set[str]]:
    got: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        f = out / f"{prefix}_{split}.json"
        for rec in json.loads(f.read_text(encoding="utf-8")) if f.exists() else []:
            got.setdefault(sha(out / rec["img"]), set()).add(split)
    return got


@pytest.mark.parametrize("damage, said", [
    ("{not json", "malformed JSON"),
    ('{"version": 1, "sources": []}', "not a split registry"),
])
def test_a_damaged_registry_is_one_line_and_nothing_is_written(tmp_path, damage, said):
    fam = ucm_family(tmp_path)
    (tmp_path / "splits.json").write_text(damage)
    line = one_error_line(build_scenes(fam))
    assert said in line and "splits.json" in line, line
    assert not fam["scene_out"].exists() and (tmp_path / "splits.json").read_text() == damage


def test_rsvqa_registers_its_official_splits_and_drops_train_copies_of_test_images(fake_llm, tmp_path):
    from test_data_importers import write_rsvqa

    truth = write_rsvqa(tmp_path / "RSVQA_LR")  # train images 0-4, val 5-6, test 7-8
    images = tmp_path / "RSVQA_LR" / "Images_LR"
    (images / "2.tif").write_bytes((images / "8.tif").read_bytes())  # a train image that is a test image
    srv = fake_llm()
    r = importers("rsvqa", "--root", str(tmp_path / "RSVQA_LR"), "--out_dir", str(tmp_path / "RSVQA-LR_zh"),
                  "--base_url", srv.base_url, "--model", "m", "--cache", str(tmp_path / "c.sqlite"), "--no_progress")
    assert r.returncode == 0, r.stderr
    assert any("1 train image(s) of RSVQA-LR questions" in w and "left out of train" in w for w in warnings_of(r))
    train = json.loads((tmp_path / "RSVQA-LR_zh" / "RSVQA-LR_train.json").read_text(encoding="utf-8"))
    assert {rec["img"].rsplit("/", 1)[1] for rec in train} == {"0.tif", "1.tif", "3.tif", "4.tif"}
    reg = json.loads((tmp_path / "splits.json").read_text(encoding="utf-8"))
    (src,) = reg["sources"].values()
    got = {Path(rel).name: (split, official) for rel, (_s, _m, _d, split, official) in src["files"].items()}
    want = {f"{img}.tif": (split, 1) for split, rows in truth.items() for _q, img, *_ in rows if img != 2}
    assert got == want
