"""Grounding records into training samples, for every family (issue 20): tasks built by rule from
the real NEON tree boxes (OSBS_029, SOAP_061) become fine-tune records in the shared format, and
both encoders (VisualGLM's SampleEncoder, the transformers families' HFEncoder) write their boxes
in the family's own text: reading the tokenised sample back with the family's codec gives every
box within 1 px of the annotation, and no <box> marker reaches the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remoteglm.data.records import load_records
from remoteglm.data.referring import BOX, grounding_tasks
from remoteglm.data.voc import read_voc
from remoteglm.errors import RemoteGLMError
from remoteglm.model.hf_folder import Processor
from remoteglm.model.hf_tiny import _texts, train_tokenizer
from remoteglm.model.image import image_size, load_image
from remoteglm.model.sample import IGNORE_INDEX, SampleEncoder
from remoteglm.model.tiny_tokenizer import train_tiny_tokenizer
from remoteglm.model.tokenizer import ChatGLMTokenizer
from remoteglm.registry import family_named
from remoteglm.train.hf_data import HFDataset, HFEncoder
from tests.families.conftest import HF_FAMILIES

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
ASSETS = ROOT / "remoteglm" / "model" / "assets"
# the real images of the real annotations (400 x 400), and Chinese names for their categories
SOURCES = {"OSBS_029": (FIX / "images" / "OSBS_029.tif", {"Tree": "树"}),
           "SOAP_061": (ROOT / "data" / "sample" / "images" / "SOAP_061.png", {"Alive": "活树", "Dead": "枯树"})}
# a resize that keeps a 400 x 400 image near its size: Qwen2.5-VL's pixel grid is then ~1 px
PIXELS = (28 * 28 * 4, 1_000_000)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Every task of both images as fine-tune records (Task.to_dict), read back by load_records."""
    items = []
    for name, (img, names) in SOURCES.items():
        items += [t.to_dict(str(img)) for t in grounding_tasks(read_voc(FIX / "annotations" / f"{name}.xml"), names.get)]
    f = tmp_path_factory.mktemp("grounding") / "train.json"
    f.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    recs = load_records(f)
    assert {r.kind for r in recs} == {"refer", "identify", "detect", "count", "grounded"}
    assert all(image_size(r.img) == (400, 400) for r in recs)
    return recs


def _near(got, want) -> bool:
    return len(got) == len(want) and all(
        max(abs(a - b) for a, b in zip(g.xyxy, w.xyxy)) <= 1.0 for g, w in zip(got, want))


def _check(codec, prompt_text: str, answer_text: str, rec) -> None:
    assert BOX not in prompt_text and BOX not in answer_text
    for text, want in ((prompt_text, rec.prompt_boxes), (answer_text, rec.label_boxes)):
        boxes, failures = codec.decode(text, (400, 400))
        assert failures == 0 and _near(boxes, want), (rec.kind, text[-300:], want)


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_an_hf_training_sample_holds_the_familys_boxes_within_a_pixel(family, records):
    fam = family_named(family)
    tok = train_tokenizer(fam, _texts()[:200], vocab_size=600)
    template = (ASSETS / f"{family}.chat_template.jinja").read_text(encoding="utf-8")
    proc = Processor(tok, fam.tiny_image_processor(*PIXELS), template, fam)
    codec = fam.box_codec(None, min_pixels=PIXELS[0], max_pixels=PIXELS[1])  # as the trainer builds it
    enc = HFEncoder(proc, 8192, codec)
    grid = {}
    for rec in records:
        if rec.img not in grid:
            grid[rec.img] = proc.images([load_image(rec.img)])["image_grid_thw"]
        item = enc.encode(rec, grid[rec.img])
        n = item["labels"].count(IGNORE_INDEX)
        assert not item["truncated"]
        _check(codec, tok.decode(item["input_ids"][:n], skip_special_tokens=False),
               tok.decode(item["labels"][n:], skip_special_tokens=False), rec)


def test_a_visualglm_training_sample_holds_its_boxes_within_a_pixel(records, tmp_path):
    tok = ChatGLMTokenizer.from_pretrained(train_tiny_tokenizer(tmp_path / "ice_text.model"))
    codec = family_named("visualglm").box_codec()
    enc = SampleEncoder(tok, max_source_length=512, max_target_length=2048, image_length=4, codec=codec)
    for rec in records:
        e = enc.encode_record(rec)
        n = e.labels.count(IGNORE_INDEX)
        assert not (e.prompt_truncated or e.label_truncated)
        _check(codec, tok.decode(e.input_ids[:n]), tok.decode(e.labels[n:-1]), rec)


def test_a_box_off_its_image_stops_the_hf_data_before_any_model_loads(tmp_path):
    img = SOURCES["SOAP_061"][0]
    f = tmp_path / "t.json"
    f.write_text(json.dumps([{"img": str(img), "prompt": "框出。", "label": "<box>", "label_boxes": [[300, 10, 401, 50]]}]),
                 encoding="utf-8")
    fam = family_named(HF_FAMILIES[0])
    tok = train_tokenizer(fam, _texts()[:50], vocab_size=300)
    template = (ASSETS / f"{fam.name}.chat_template.jinja").read_text(encoding="utf-8")
    enc = HFEncoder(Processor(tok, fam.tiny_image_processor(*PIXELS), template, fam), 1024,
                    fam.box_codec(None, min_pixels=PIXELS[0], max_pixels=PIXELS[1]))
    with pytest.raises(RemoteGLMError, match=r"SOAP_061\.png: box \[300, 10, 401, 50\] reaches outside the 400 x 400 image"):
        HFDataset(load_records(f), enc)


def test_boxes_of_a_rotated_photo_are_on_its_upright_size(tmp_path):
    """A JPEG whose EXIF turns it upright (orientation 6: 90 degrees) is 40 x 60 as loaded: its boxes
    are written on that size, read from the header alone."""
    from PIL import Image

    from remoteglm.model.sample import record_texts

    img = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (60, 40), "green").save(img, exif=exif)
    assert image_size(img) == load_image(img).size == (40, 60)
    f = tmp_path / "t.json"
    f.write_text(json.dumps([{"img": str(img), "prompt": "框出。", "label": "<box>", "label_boxes": [[0, 0, 40, 60]]}]),
                 encoding="utf-8")
    assert record_texts(load_records(f)[0], family_named("visualglm").box_codec()) == ("框出。", "[[000,000,999,999]]")
