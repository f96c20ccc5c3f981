"""Every object category of the detection sets (DIOR 20, DOTA 18 with v1.5/v2.0's additions) has one
Chinese name in the glossary, the same as the scene class of the same name."""

from __future__ import annotations

import re

import pytest

from remoteglm.data.glossary import CLASS_NAMES_ZH, DETECTION_CLASSES, object_name_zh


@pytest.mark.parametrize("dataset,count", [("DIOR", 20), ("DOTA", 18)])
def test_every_detection_category_has_a_chinese_name(dataset, count):
    classes = DETECTION_CLASSES[dataset]
    assert len(set(classes)) == count
    names = {c: object_name_zh(c) for c in classes}
    assert [c for c, zh in names.items() if not zh or not re.fullmatch(r"[\u4e00-\u9fff]+", zh)] == []
    assert len(set(names.values())) == count  # no two categories of a set share a name


def test_a_category_is_named_like_the_scene_class_of_the_same_name():
    assert object_name_zh("storage-tank") == object_name_zh("storagetank") == CLASS_NAMES_ZH["UCM"]["storagetanks"]
    assert object_name_zh("harbor") == CLASS_NAMES_ZH["UCM"]["harbor"]
    assert object_name_zh("plane") == object_name_zh("airplane")
    assert object_name_zh("Tree") is None
