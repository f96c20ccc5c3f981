"""The detection / grounding annotation readers: Pascal VOC XML (real NEON tree boxes, a DIOR-RSVG
style sample), DOTA labelTxt and COCO-style JSON in their official formats, and one line naming
the file for every broken input."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from remoteglm.data.coco import read_coco
from remoteglm.data.dota import label_image, read_dota
from remoteglm.data.voc import read_voc
from remoteglm.errors import RemoteGLMError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "annotations"


@pytest.mark.parametrize("name", ["OSBS_029", "SOAP_061"])
def test_voc_reads_the_real_neon_tree_boxes(name):
    path = FIX / f"{name}.xml"
    root = ET.parse(path).getroot()  # an independent parse of the same file
    want = [tuple(float(o.find(f"bndbox/{t}").text) for t in ("xmin", "ymin", "xmax", "ymax"))
            for o in root.iter("object")]
    names = [o.find("name").text for o in root.iter("object")]
    got = read_voc(path)
    assert len(got.objects) == len(want) == {"OSBS_029": 61, "SOAP_061": 37}[name]
    assert [o.box.xyxy for o in got.objects] == want
    assert [o.category for o in got.objects] == names
    assert (got.image, got.width, got.height) == (root.find("filename").text, 400, 400)
    assert not any(o.difficult or o.polygon or o.text for o in got.objects)


def _voc(tmp_path, objects: str, size="<size><width>800</width><height>800</height></size>", name="a.xml"):
    p = tmp_path / name
    p.write_text(f"<annotation><filename>00001.jpg</filename>{size}{objects}</annotation>", encoding="utf-8")
    return p


def _obj(name="vehicle", box=(10, 20, 40, 60), extra=""):
    b = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name><bndbox>{b}</bndbox>{extra}</object>"


def test_voc_keeps_a_dior_rsvg_description_and_the_difficult_flag(tmp_path):
    p = _voc(tmp_path, _obj(extra="<description>The  vehicle\n on the left</description><difficult>1</difficult>")
             + _obj("storagetank", (700, 700, 800, 800)))
    got = read_voc(p)
    assert got.objects[0].text == "The vehicle on the left" and got.objects[0].difficult
    assert got.objects[1].box.xyxy == (700.0, 700.0, 800.0, 800.0) and got.objects[1].text == ""


def test_dota_reads_the_official_label_format():
    got = read_dota(FIX / "P0001.txt", (1000, 800))
    assert got.image == "P0001.png" == label_image("labelTxt/P0001.txt")
    assert got.gsd == pytest.approx(0.146343590398)
    assert [o.category for o in got.objects] == ["storage-tank", "storage-tank", "plane", "small-vehicle", "ship"]
    plane = got.objects[2]
    assert plane.polygon == (430.5, 380.0, 470.0, 395.5, 460.0, 420.0, 420.5, 405.0)
    assert plane.box.xyxy == (420.5, 380.0, 470.0, 420.0)  # the box around the rotated corners
    assert [o.difficult for o in got.objects] == [False, False, False, True, False]
    assert got.objects[4].box.xyxy == (998.0, 700.0, 1000.0, 760.0)  # a pixel of overhang is clipped


def test_coco_reads_images_boxes_and_categories():
    got = read_coco(FIX / "coco_small.json")
    data = json.loads((FIX / "coco_small.json").read_text())
    assert [(g.image, g.width, g.height) for g in got] == [("00010.jpg", 800, 800), ("00011.jpg", 800, 600)]
    names = {c["id"]: c["name"] for c in data["categories"]}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        img = got[a["image_id"] - 1]
        assert any(o.box.xyxy == (x, y, x + w, y + h) and o.category == names[a["category_id"]] for o in img.objects)
    assert [len(g.objects) for g in got] == [3, 1]


def _coco(tmp_path, **change):
    data = json.loads((FIX / "coco_small.json").read_text())
    for key, value in change.items():
        data[key] = value(data[key]) if callable(value) else value
    p = tmp_path / "coco.json"
    p.write_text(json.dumps(data), encoding="utf-8")
    return p


def _one_ann(**fields):
    return lambda anns: [dict(anns[0], **fields)] + anns[1:]


BROKEN = {
    "voc missing file": (lambda t: read_voc(t / "nope.xml"), "not found"),
    "voc malformed xml": (lambda t: read_voc(_voc(t, "<object>")), "malformed XML"),
    "voc malformed number": (lambda t: read_voc(_voc(t, _obj(box=(10, "2O", 40, 60)))), "'2O' is not a number"),
    "voc box outside": (lambda t: read_voc(_voc(t, _obj(box=(10, 20, 840, 60)))), "outside the 800 x 800"),
    "voc reversed box": (lambda t: read_voc(_voc(t, _obj(box=(40, 20, 10, 60)))), "empty or reversed"),
    "voc empty": (lambda t: read_voc(_voc(t, "")), "no objects"),
    "voc no size": (lambda t: read_voc(_voc(t, _obj(), size="")), "no <size>"),
    "voc no bndbox": (lambda t: read_voc(_voc(t, "<object><name>x</name></object>")), "no <bndbox>"),
    "dota missing file": (lambda t: read_dota(t / "P9.txt", (100, 100)), "not found"),
    "dota malformed number": (lambda t: read_dota(_txt(t, "1 1 9 1 9 x 1 9 plane 0"), (100, 100)),
                              "'x' is not a number"),
    "dota box outside": (lambda t: read_dota(_txt(t, "1 1 200 1 200 9 1 9 plane 0"), (100, 100)),
                         "outside the 100 x 100"),
    "dota fields": (lambda t: read_dota(_txt(t, "1 1 9 1 9 9 plane 0"), (100, 100)), "8 fields"),
    "dota difficult": (lambda t: read_dota(_txt(t, "1 1 9 1 9 9 1 9 plane 2"), (100, 100)), "not 0 or 1"),
    "dota empty": (lambda t: read_dota(_txt(t, "imagesource:GoogleEarth\ngsd:null"), (100, 100)), "no objects"),
    "coco missing file": (lambda t: read_coco(t / "none.json"), "not found"),
    "coco image id mismatch": (lambda t: read_coco(_coco(t, annotations=_one_ann(image_id=99))),
                               "image_id 99 is not among"),
    "coco category mismatch": (lambda t: read_coco(_coco(t, annotations=_one_ann(category_id=7))),
                               "category_id 7 is not among"),
    "coco box outside": (lambda t: read_coco(_coco(t, annotations=_one_ann(bbox=[700, 40, 200, 10]))),
                         "outside the 800 x 800"),
    "coco malformed number": (lambda t: read_coco(_coco(t, annotations=_one_ann(bbox=[1, "a", 2, 2]))),
                              "'a' is not a number"),
    "coco bbox shape": (lambda t: read_coco(_coco(t, annotations=_one_ann(bbox=[1, 2, 3]))), "[x, y, width, height]"),
    "coco empty": (lambda t: read_coco(_coco(t, annotations=[])), "no annotations"),
    "coco image size": (lambda t: read_coco(_coco(t, images=lambda ims: [dict(ims[0], width=0)] + ims[1:])),
                        "not a positive whole size"),
    "coco duplicate image": (lambda t: read_coco(_coco(t, images=lambda ims: ims + ims[:1])), "given twice"),
}


def _txt(tmp_path, text):
    p = tmp_path / "P0002.txt"
    p.write_text(text + "\n", encoding="utf-8")
    return p


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_annotation_is_one_line_naming_the_file(tmp_path, case):
    read, says = BROKEN[case]
    with pytest.raises(RemoteGLMError) as e:
        read(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and says in msg and str(tmp_path) in msg


def test_an_oversized_annotation_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import remoteglm.data.annotations as annotations

    monkeypatch.setattr(annotations, "MAX_IMAGE_FILE_BYTES", 100)
    p = _txt(tmp_path, "1 1 9 1 9 9 1 9 plane 0\n" * 10)
    with pytest.raises(RemoteGLMError, match="more than the 100"):
        read_dota(p, (100, 100))
