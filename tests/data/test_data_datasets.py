"""Loading English caption files: formats, classes, splits, one-line errors."""

from collections import Counter

import pytest
from datahelp import FIXTURES, karpathy_from_list, ucm_list, write_json

from remoteglm.data.datasets import (
    assign_splits, check_images, detect_format, load_captions, scene_class, split_caption,
)
from remoteglm.data.glossary import CLASS_NAMES_ZH, CLASSES, class_names_zh
from remoteglm.errors import RemoteGLMError


def test_remoteglm_list_ucm_real_file():
    cs = load_captions(FIXTURES / "UCM-en.json")
    assert (cs.name, cs.fmt, len(cs.images)) == ("UCM", "remoteglm", 2100)
    assert all(len(im.sentences) == 5 for im in cs.images)  # the two-space joins and stray spaces split right
    assert cs.images[0].sentences[0] == "There is a piece of farmland"
    # 21 classes in blocks of 100, alphabetical
    assert Counter(im.cls for im in cs.images) == {c: 100 for c in CLASSES["UCM"]}
    assert cs.images[99].cls == "agricultural" and cs.images[100].cls == "airplane"
    assert cs.images[-1].cls == "tenniscourt"
    # no split in the file: a documented 80/10/10 split per class, with a warning
    assert Counter(im.split for im in cs.images) == {"train": 1680, "val": 210, "test": 210}
    per_class = Counter((im.cls, im.split) for im in cs.images)
    assert all(per_class[(c, "test")] == 10 for c in CLASSES["UCM"])
    assert any("no split" in w for w in cs.warnings)
    assert cs.classes_zh[cs.classes.index("storagetanks")] == "储油罐"


def test_sydney_blocks():
    cs = load_captions(FIXTURES / "Sydney-en.json")
    assert cs.name == "Sydney" and len(cs.images) == 613
    counts = Counter(im.cls for im in cs.images)
    assert counts == {"residential": 242, "airport": 22, "meadow": 50, "river": 45, "ocean": 92,
                      "industrial": 96, "runway": 66}
    assert scene_class("Sydney", "243.tif") == "airport" and scene_class("Sydney", "242.tif") == "residential"
    assert scene_class("Sydney", "614.tif") is None


def test_rsicd_prefix_classes():
    assert scene_class("RSICD", "storagetanks_12.jpg") == "storagetanks"
    assert scene_class("RSICD", "railwaystation_3.jpg") == "railwaystation"
    assert scene_class("RSICD", "00017.jpg") is None
    assert scene_class("RSICD", "unknownthing_3.jpg") is None
    assert len(CLASSES["RSICD"]) == 30 and len(set(class_names_zh("RSICD"))) >= 28
    assert all(len(CLASS_NAMES_ZH[n]) == len(CLASSES[n]) for n in CLASSES)


def test_karpathy_keeps_official_split_and_detects_name(tmp_path):
    items = ucm_list(30, step=70)
    path = write_json(tmp_path / "UCM_captions" / "dataset.json", karpathy_from_list(items, ["test", "train", "val"]))
    cs = load_captions(path)
    assert (cs.fmt, cs.name) == ("karpathy", "UCM")
    assert [im.split for im in cs.images[:3]] == ["test", "train", "val"]
    assert not any("split" in w for w in cs.warnings)
    assert cs.images[1].cls == scene_class("UCM", items[1]["imged_id"])
    assert cs.images[0].sentences[0].endswith(" .")  # raw kept as given; normalised later


def test_split_is_reproducible_and_disjoint():
    a = load_captions(FIXTURES / "UCM-en.json")
    b = load_captions(FIXTURES / "UCM-en.json")
    assert [im.split for im in a.images] == [im.split for im in b.images]
    # a subset keeps proportions; assignment depends only on the file names
    sub = a.images[:200]
    assign_splits(sub)
    assert Counter(im.split for im in sub) == {"train": 160, "val": 20, "test": 20}


def test_split_caption_variants():
    assert split_caption("a b .  c d .  ") == ["a b", "c d"]
    assert split_caption("two curved  freeways .  cars .  ") == ["two curved  freeways", "cars"]
    assert split_caption("A farm. A road.") == ["A farm", "A road"]
    assert detect_format({"images": []}) == "karpathy"
    assert detect_format([{"imged_id": "1.tif", "caption": "x ."}]) == "remoteglm"
    assert detect_format([{"image": "1.tif"}]) is None


@pytest.mark.parametrize("content, needle", [
    (None, "not found"),
    ('{"images": [\n  {"filename": "1.tif",}\n]}', "line 2, column"),
    ('{"annotations": []}', "unknown caption format"),
    ('[{"imged_id": "1.tif", "caption": "   "}]', "empty captions"),
    ('{"images": []}', "no images"),
])
def test_bad_inputs_raise_one_line(tmp_path, content, needle):
    path = tmp_path / "dataset.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RemoteGLMError) as e:
        load_captions(path)
    msg = str(e.value)
    assert needle in msg and str(path) in msg and "\n" not in msg


def test_image_folder_check_warns(tmp_path):
    cs = load_captions(write_json(tmp_path / "ucm.json", ucm_list(4)), name="UCM")
    assert "not found" in check_images(cs, tmp_path / "imgs")[0]
    (tmp_path / "imgs").mkdir()
    for f in ("1.tif", "2.tif"):
        (tmp_path / "imgs" / f).write_bytes(b"x")
    (warning,) = check_images(cs, tmp_path / "imgs")
    assert "2 of 4 images missing" in warning and "3.tif" in warning
    for f in ("3.tif", "4.tif"):
        (tmp_path / "imgs" / f).write_bytes(b"x")
    assert check_images(cs, tmp_path / "imgs") == []


def test_unknown_name_warns_and_has_no_classes(tmp_path):
    cs = load_captions(write_json(tmp_path / "mine.json", ucm_list(3)))
    assert cs.name == "mine" and cs.classes == [] and all(im.cls is None for im in cs.images)
    assert any("not UCM, Sydney or RSICD" in w for w in cs.warnings)
    assert load_captions(tmp_path / "mine.json", name="ucm").name == "UCM"
