"""An up-to-date rerun of ``python -m remoteglm.data.importers detection`` reads nothing: it lists
the inputs (path, size, mtime), finds the stamp of the last build and its outputs unchanged, and
says so in one line. Any change - an annotation touched or edited, an image replaced, a split list
or an option changed, an output deleted or edited, the split registry gone, a translation left
unfinished - is a full build.

The set is two DIOR-RSVG-like VOC files written here (800 x 800 images drawn here, each object with
an English description); reads are counted by wrapping the importer's own readers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

import remoteglm.data.grounding_import as gi
from remoteglm.data.importers import main
from scripted_server import ScriptedServer

OBJECTS = {
    "00001": [("storagetank", (40, 40, 200, 200), "a large storage tank on the upper left"),
              ("storagetank", (600, 600, 640, 640), "the small storage tank at the bottom right")],
    "00002": [("vehicle", (380, 380, 420, 420), "the car in the middle")],
}
GOOD = {"a large storage tank on the upper left": "左上方的一个大储油罐。",
        "the small storage tank at the bottom right": "右下角的小储油罐。",
        "the car in the middle": "中间的汽车。"}


def voc(image: str, objects) -> str:
    body = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox><description>{d}</description></object>"
                   for n, b, d in objects)
    return (f"<annotation><filename>{image}</filename><size><width>800</width><height>800</height></size>{body}"
            "</annotation>")


@pytest.fixture
def rsvg(tmp_path: Path) -> dict:
    root = tmp_path / "DIOR-RSVG"
    ann, images = root / "Annotations", root / "JPEGImages"
    ann.mkdir(parents=True), images.mkdir()
    for k, (stem, objects) in enumerate(OBJECTS.items()):
        Image.new("RGB", (800, 800), (10 * k, 20, 30)).save(images / f"{stem}.png")
        (ann / f"{stem}.xml").write_text(voc(f"{stem}.png", objects))
    (root / "train.txt").write_text("00001\n")
    (root / "test.txt").write_text("00002\n")
    out = tmp_path / "data" / "rsvg_grounding"
    args = ["--format", "voc", "--name", "rsvg", "--annotations", ann, "--images", images, "--split_files", root,
            "--out_dir", out, "--no_progress"]
    return {"root": root, "ann": ann, "images": images, "out": out, "args": args,
            "registry": tmp_path / "data" / "splits.json"}


@pytest.fixture
def reads(monkeypatch) -> list:
    """Every annotation file and image header the importer reads, in order."""
    seen: list = []
    read_voc, header_size = gi.read_voc, gi.header_size
    monkeypatch.setattr(gi, "read_voc", lambda p: seen.append(p) or read_voc(p))
    monkeypatch.setattr(gi, "header_size", lambda p: seen.append(p) or header_size(p))
    return seen


def run(capsys, *args) -> tuple[int, str]:
    rc = main(["detection", *map(str, args)])
    return rc, capsys.readouterr().err


def snapshot(*folders: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for f in folders for p in sorted(f.rglob("*"))
            if p.is_file()}


def records(out: Path) -> dict[str, list]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob("rsvg_*.json"))}


def up_to_date(capsys, args, reads: list) -> None:
    reads.clear()
    rc, err = run(capsys, *args)
    assert rc == 0, err
    assert err.count("\n") == 1 and err.startswith("up to date: "), err
    assert reads == []


def test_an_up_to_date_rerun_reads_nothing_writes_nothing_and_says_one_line(rsvg, reads, capsys):
    rc, err = run(capsys, *rsvg["args"])
    assert rc == 0, err
    assert reads  # the first build reads every XML and image header
    before = snapshot(rsvg["out"].parent)
    up_to_date(capsys, rsvg["args"], reads)
    assert snapshot(rsvg["out"].parent) == before  # the registry and every output untouched
    # the files the first build wrote are still what it wrote (the same records as a rebuild would give)
    assert set(records(rsvg["out"])) == {"rsvg_train.json", "rsvg_test.json"}
    # one record a line (the C encoder writes them: an indented file takes the pure-Python one)
    train = (rsvg["out"] / "rsvg_train.json").read_text(encoding="utf-8").splitlines()
    assert train[0] == "[" and train[-1] == "]" and len(train) == len(records(rsvg["out"])["rsvg_train.json"]) + 2


def _touch(p: Path) -> None:
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def _edit_keeping_time(p: Path, old: bytes, new: bytes) -> None:
    st = p.stat()
    data = p.read_bytes()
    assert old in data and len(old) == len(new)
    p.write_bytes(data.replace(old, new, 1))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only the content says


def _change(kind: str, rsvg: dict, tmp_path: Path) -> list:
    """Make one change; returns the extra arguments of the rerun."""
    ann, out = rsvg["ann"], rsvg["out"]
    if kind == "annotation touched":
        _touch(ann / "00002.xml")
    elif kind == "annotation edited":
        (ann / "00002.xml").write_text(voc("00002.png", [("vehicle", (300, 380, 420, 420), "the car in the middle")]))
    elif kind == "image replaced":
        Image.new("RGB", (800, 800), (200, 100, 0)).save(rsvg["images"] / "00002.png")
    elif kind == "split list changed":
        (rsvg["root"] / "train.txt").write_text("00002\n")
        (rsvg["root"] / "test.txt").write_text("00001\n")
    elif kind == "option changed":
        names = tmp_path / "names.json"
        names.write_text(json.dumps({"storagetank": "油罐"}, ensure_ascii=False), encoding="utf-8")
        return ["--names", names]
    elif kind == "output deleted":
        (out / "rsvg_test.json").unlink()
    elif kind == "output edited":
        _edit_keeping_time(out / "rsvg_train.json", "储油罐".encode(), "储水罐".encode())
    elif kind == "registry deleted":
        rsvg["registry"].unlink()
    return []


@pytest.mark.parametrize("kind", ["annotation touched", "annotation edited", "image replaced", "split list changed",
                                  "option changed", "output deleted", "output edited", "registry deleted"])
def test_each_kind_of_change_rebuilds_and_the_next_rerun_is_up_to_date_again(rsvg, reads, capsys, tmp_path, kind):
    rc, err = run(capsys, *rsvg["args"])
    assert rc == 0, err
    first = records(rsvg["out"])
    extra = _change(kind, rsvg, tmp_path)
    reads.clear()
    rc, err = run(capsys, *rsvg["args"], *extra)
    assert rc == 0, err
    assert not err.startswith("up to date: ") and reads, err  # read again: a full build
    got = records(rsvg["out"])
    if kind in ("annotation touched", "output deleted", "output edited", "registry deleted"):
        assert got == first  # the same inputs give the same files back, whole again
    elif kind == "annotation edited":
        assert [300, 380, 420, 420] in [b[:4] for r in got["rsvg_test.json"] for b in r["label_boxes"]]
    elif kind == "split list changed":
        assert {r["img"].rsplit("/", 1)[-1] for r in got["rsvg_train.json"]} == {"00002.png"}
    elif kind == "option changed":
        assert any("油罐" in r["prompt"] and "储油罐" not in r["prompt"] for r in got["rsvg_train.json"])
    registry = json.loads(rsvg["registry"].read_text(encoding="utf-8"))
    (source,) = registry["sources"].values()
    digests = {Path(k).name: v[2] for k, v in source["files"].items()}
    if kind == "image replaced":  # the registry holds the new content
        from remoteglm.io import file_digest

        assert digests["00002.png"] == file_digest(rsvg["images"] / "00002.png")
    up_to_date(capsys, [*rsvg["args"], *extra], reads)


class Endpoint(ScriptedServer):
    """Drops every connection while ``down``; else answers each description with its GOOD translation."""

    def __init__(self):
        self.down, self.asked = True, []
        super().__init__(self.answer)
        self.httpd.handle_error = lambda *a: None  # a dropped connection is the point, not a traceback

    def answer(self, body: dict, items: dict) -> str:
        if self.down:
            raise ConnectionAbortedError("the endpoint is down")
        self.asked.extend(items.values())
        return json.dumps({k: GOOD[en] for k, en in items.items()}, ensure_ascii=False)


def test_a_run_left_unfinished_is_never_up_to_date_and_a_finished_one_asks_nothing(rsvg, reads, capsys, tmp_path):
    srv = Endpoint()
    args = [*rsvg["args"], "--base_url", srv.base_url, "--model", "m", "--cache", tmp_path / "cache.sqlite",
            "--retries", "0", "--concurrency", "1"]
    try:
        rc, err = run(capsys, *args)
        assert rc == 2 and "still not translated" in err, err
        assert (rsvg["out"] / "failures.json").is_file()
        srv.down = False
        reads.clear()
        rc, err = run(capsys, *args)  # the same command: the translations still missing are asked for
        assert rc == 0, err
        assert sorted(srv.asked) == sorted(GOOD) and reads
        assert not (rsvg["out"] / "failures.json").exists()
        train = records(rsvg["out"])["rsvg_train.json"]
        assert any(r["prompt"] == "请框出图中左上方的一个大储油罐的位置。" for r in train)
        srv.asked.clear()
        up_to_date(capsys, args, reads)
        assert srv.asked == []
        # another model's translations are not these: a full build (the cache has none of its answers)
        reads.clear()
        rc, err = run(capsys, *[a if a != "m" else "m2" for a in args])
        assert rc == 0 and reads and sorted(srv.asked) == sorted(GOOD), err
    finally:
        srv.close()


def test_the_stamp_covers_the_modules_the_import_is_made_of_and_no_others():
    from remoteglm.data.rerun import sources

    files = {f for f, _, _ in sources(gi.__name__)}
    # its readers, rule builders, translation checks, and the packages' __init__ files
    assert {"remoteglm/data/voc.py", "remoteglm/data/dota.py", "remoteglm/data/referring.py",
            "remoteglm/data/faithful.py", "remoteglm/boxes.py", "remoteglm/__init__.py"} <= files
    # not the command line, the other importers or other stages: editing them rebuilds nothing
    assert not files & {"remoteglm/data/importers.py", "remoteglm/data/scenes.py", "remoteglm/data/pipeline.py"}
    assert not any(f.startswith(("remoteglm/serve/", "remoteglm/train/")) for f in files)


@pytest.mark.parametrize("how", ["the same file", "a symlink to it"])
def test_an_image_in_two_splits_is_one_line_however_it_is_named(rsvg, capsys, how):
    name = "00001.png"
    if how == "a symlink to it":
        name = "link.png"
        (rsvg["images"] / name).symlink_to(rsvg["images"] / "00001.png")
    (rsvg["ann"] / "00002.xml").write_text(voc(name, OBJECTS["00001"]))  # the test split's id names it
    rc, err = run(capsys, *rsvg["args"])
    assert rc != 0 and "is in both the train and the test split: they would leak" in err, err
    assert not rsvg["out"].exists()
