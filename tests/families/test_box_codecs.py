"""Every registered family's box codec (``Family.box_codec``): boxes survive original pixels ->
the family's text -> parsed -> original pixels for random image sizes (tall, wide, tiny, huge),
positions and resolution settings; the numbers are the ones the processors' own resize implies
(transformers' functions and image processor, not our copy); the parser takes what models emit
without raising. No weights are loaded."""

import json
import random
import re

import pytest
from PIL import Image
from transformers.models.glm4v.image_processing_pil_glm4v import smart_resize as glm_resize
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as qwen_resize

from remoteglm.boxes import Box
from remoteglm.errors import RemoteGLMError
from remoteglm.registry import families, family_named

FAMILIES = [f.name for f in families()]
LABELS = (None, "储油罐", "左上角的大型储油罐", "plane 2")
FIXED_SIZES = [(1, 1), (2, 300), (300, 2), (27, 29), (28, 28), (224, 224), (800, 800), (10000, 60), (60, 10000),
               (12000, 9000), (8000, 41), (3, 599)]
# (min, max) pixels: the Qwen2.5-VL folder's, the fine-tune's usual budgets, a single token, min = max
SETTINGS = [(3136, 12845056), (256 * 28 * 28, 1280 * 28 * 28), (784, 784), (3136, 200704), (200704, 200704)]


def cases(seed: int, n: int):
    """(width, height, min_pixels, max_pixels) cases: the fixed extremes, then random ones."""
    rng = random.Random(seed)
    out = [(w, h, lo, hi) for (w, h) in FIXED_SIZES for lo, hi in SETTINGS[:2]]
    while len(out) < n:
        w = rng.choice([rng.randint(1, 64), rng.randint(64, 2000), rng.randint(2000, 12000)])
        h = min(max(1, int(w * rng.uniform(0.02, 50))), 200 * w, 12000)
        w = min(w, 200 * h)
        lo = rng.choice([784, 3136, rng.randint(784, 400_000)])
        out.append((w, h, lo, rng.choice([lo, rng.randint(lo, 13_000_000)])))
    return out


def random_box(rng, w, h, label=None) -> Box:
    xs = sorted(rng.uniform(0, w) for _ in range(2))
    ys = sorted(rng.uniform(0, h) for _ in range(2))
    return rng.choice([Box(xs[0], ys[0], xs[1], ys[1], label), Box(0, 0, w, h, label), Box(xs[0], ys[0], xs[0], ys[1], label)])


def codec(name, lo=3136, hi=12845056):
    return family_named(name).box_codec(min_pixels=lo, max_pixels=hi)


def numbers(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"\d+", text.replace("bbox_2d", ""))]


# ---- the round trip -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_boxes_survive_the_round_trip_within_a_pixel_or_half_a_grid_step(name):
    rng = random.Random(name)
    for w, h, lo, hi in cases(1, 150):
        c = codec(name, lo, hi)
        fw, fh = c.frame(w, h)
        boxes = [random_box(rng, w, h, rng.choice(LABELS)) for _ in range(rng.randint(1, 3))]
        text = c.encode(boxes, (w, h))
        got, failures = c.decode(text, (w, h))
        assert failures == 0 and len(got) == len(boxes), (w, h, lo, hi, text)
        # a grid coarser than the image cannot do better than half its step
        tx, ty = max(1.0, 0.5 * w / fw) + 1e-6, max(1.0, 0.5 * h / fh) + 1e-6
        for b, g in zip(boxes, got):
            assert g.label == b.label
            assert abs(g.x1 - b.x1) <= tx and abs(g.x2 - b.x2) <= tx, (w, h, lo, hi, b, g, text)
            assert abs(g.y1 - b.y1) <= ty and abs(g.y2 - b.y2) <= ty, (w, h, lo, hi, b, g, text)
            # text -> boxes -> text is exact: the grid points themselves survive
        assert c.encode(got, (w, h)) == text


# ---- the numbers are the family's, from the processors' own resize ---------------------------------
def reference_grid(name, w, h, lo, hi):
    """The extent of a family's numbers on a w x h image, from transformers' own resize functions."""
    if name == "qwen2_5_vl":
        rh, rw = qwen_resize(h, w, factor=28, min_pixels=lo, max_pixels=hi)
        return rw, rh
    if name in ("qwen3_vl", "glm4v"):
        return 1000, 1000
    if name == "visualglm":
        return 999, 999
    raise AssertionError(f"add family {name}'s published box frame to this test")


@pytest.mark.parametrize("name", FAMILIES)
def test_the_numbers_are_the_published_frame(name):
    for w, h, lo, hi in cases(2, 200):
        c = codec(name, lo, hi)
        fw, fh = reference_grid(name, w, h, lo, hi)
        assert numbers(c.encode([Box(0, 0, w, h)], (w, h))) == [0, 0, fw, fh], (w, h, lo, hi)
        b = Box(w * 0.25, h * 0.5, w * 0.75, h)
        assert numbers(c.encode([b], (w, h))) == [round(fw / 4), round(fh / 2), round(fw * 3 / 4), fh]


@pytest.mark.parametrize("name,factor,frames", [("qwen3_vl", 32, 1), ("glm4v", 28, 2)])
def test_relative_numbers_are_those_of_the_image_the_model_sees(name, factor, frames):
    """Measured on the processor's resized image (its own function) they are the same numbers."""
    rng = random.Random(name)
    for w, h, lo, hi in cases(3, 150):
        hi = max(hi, 4 * factor * factor)
        rh, rw = (qwen_resize(h, w, factor=factor, min_pixels=lo, max_pixels=hi) if frames == 1 else
                  glm_resize(2, h, w, temporal_factor=2, factor=factor, min_pixels=lo, max_pixels=hi))
        b = random_box(rng, w, h)
        seen = [b.x1 * rw / w, b.y1 * rh / h, b.x2 * rw / w, b.y2 * rh / h]
        ref = [round(seen[0] / rw * 1000), round(seen[1] / rh * 1000), round(seen[2] / rw * 1000), round(seen[3] / rh * 1000)]
        got = numbers(codec(name, lo, hi).encode([b], (w, h)))
        assert all(abs(a - r) <= 1 for a, r in zip(got, ref)), (w, h, got, ref)


@pytest.mark.parametrize("w,h,lo,hi", [(800, 600, 3136, 12845056), (37, 501, 3136, 200704), (1500, 90, 784, 50176),
                                       (5, 5, 3136, 12845056), (640, 640, 200704, 200704)])
def test_qwen2_5_vl_pixels_are_those_of_the_image_processors_output(tmp_path, w, h, lo, hi):
    from transformers import Qwen2VLImageProcessorPil

    ip = Qwen2VLImageProcessorPil(size={"shortest_edge": lo, "longest_edge": hi})
    _, gh, gw = ip(images=[Image.new("RGB", (w, h))], return_tensors="pt")["image_grid_thw"][0].tolist()
    # the folder's own setting, as a real download writes it, and the run's override of it
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"min_pixels": lo, "max_pixels": hi}))
    fam = family_named("qwen2_5_vl")
    for c in (fam.box_codec(tmp_path), fam.box_codec(tmp_path, min_pixels=lo, max_pixels=hi), codec("qwen2_5_vl", lo, hi)):
        assert numbers(c.encode([Box(0, 0, w, h)], (w, h))) == [0, 0, gw * 14, gh * 14]
        assert c.settings == {"min_pixels": lo, "max_pixels": hi}


def test_qwen2_5_vl_codec_reads_the_folders_size_and_the_run_overrides_it(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 3136, "longest_edge": 50176}}))
    fam = family_named("qwen2_5_vl")
    assert fam.box_codec(tmp_path).settings == {"min_pixels": 3136, "max_pixels": 50176}
    assert fam.box_codec(tmp_path, max_pixels=200704).settings == {"min_pixels": 3136, "max_pixels": 200704}
    assert fam.box_codec(tmp_path).frame(1000, 1000) == qwen_resize(1000, 1000, 28, 3136, 50176)[::-1]


def test_qwen2_5_vl_codec_without_a_resolution_or_with_a_broken_one_is_one_line(tmp_path):
    fam = family_named("qwen2_5_vl")
    with pytest.raises(RemoteGLMError, match="min/max pixels"):
        fam.box_codec()
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"min_pixels": 50176, "max_pixels": 3136}))
    with pytest.raises(RemoteGLMError, match="not a valid range"):
        fam.box_codec(tmp_path)
    with pytest.raises(RemoteGLMError, match="more than max_pixels"):
        fam.box_codec(min_pixels=50176, max_pixels=3136)


# ---- what models really emit ----------------------------------------------------------------------
SIZE = (800, 600)
THREE = [Box(10, 20, 300, 400, "储油罐"), Box(400, 100, 500, 200, "飞机"), Box(600, 300, 790, 590, "网球场")]


@pytest.mark.parametrize("name", FAMILIES)
def test_extra_prose_around_the_boxes_is_ignored(name):
    c = codec(name)
    got, failures = c.decode("好的，我找到了这些目标：\n" + c.encode(THREE, SIZE) + "\n以上就是全部。", SIZE)
    assert failures == 0 and [b.label for b in got] == ["储油罐", "飞机", "网球场"]
    assert all(abs(g.x1 - b.x1) <= 1 and abs(g.y2 - b.y2) <= 1 for g, b in zip(got, THREE))


@pytest.mark.parametrize("name", FAMILIES)
def test_several_unlabelled_boxes_come_back_in_order(name):
    c = codec(name)
    boxes = [Box(b.x1, b.y1, b.x2, b.y2) for b in THREE]
    got, failures = c.decode(c.encode(boxes, SIZE), SIZE)
    assert failures == 0 and [round(b.x1) for b in got] == [10, 400, 600] and all(b.label is None for b in got)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_malformed_number_is_one_failure_and_the_other_boxes_stay(name):
    c = codec(name)
    text = re.sub(r"(?<=\[)\d+", "1O", c.encode(THREE, SIZE), count=1)  # the letter O for a zero
    got, failures = c.decode(text, SIZE)
    assert failures == 1 and [b.label for b in got] == ["飞机", "网球场"], text


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("bad", ['{"bbox_2d": [1, 2, 3]}', '{"bbox_2d": [1, 2, 3, 4, 5], "label": "x"}',
                                 '{"bbox_2d": null}', '{"bbox_2d": ["a", 2, 3, 4]}', '{"bbox_2d": [12, 34',
                                 "[[1,2,3]]", "[[nan,1,2,3]]", "[[500,500,100,100]]", "[[1,,2,3]]", "[[1e5,2,3,4]]"])
def test_each_unreadable_box_is_counted_never_raised(name, bad):
    got, failures = codec(name).decode(f"目标在 {bad} 附近。", SIZE)
    assert (got, failures) == ([], 1)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("text", ["", "图中没有储油罐。", "bbox_2d 是一种格式", "[1, 2, 3, 4]", "```json\n[]\n```"])
def test_an_answer_without_boxes_is_no_box_and_no_failure(name, text):
    assert codec(name).decode(text, SIZE) == ([], 0)


@pytest.mark.parametrize("name", FAMILIES)
def test_both_syntaxes_are_read_by_every_family_and_out_of_range_numbers_are_clipped(name):
    c = codec(name)
    got, failures = c.decode('一 {"label": "飞机", "bbox_2d": [5, 5, 99999, 99999]} 二：桥[[010,020,030,040]]', SIZE)
    assert failures == 0 and [b.label for b in got] == ["飞机", "桥"]
    assert got[0].x2 == 800 and got[0].y2 == 600  # clipped to the image


def test_json_labels_keep_quotes_and_escapes():
    c = codec("qwen3_vl")
    label = 'the "big" tank \\ 大'
    got, failures = c.decode(c.encode([Box(1, 2, 30, 40, label)], SIZE), SIZE)
    assert failures == 0 and got[0].label == label


@pytest.mark.parametrize("name", FAMILIES)
def test_cut_off_or_garbled_answers_never_raise(name):
    c = codec(name)
    text = c.encode(THREE, SIZE)
    rng = random.Random(name)
    alphabet = "[]{},;:\"0123456789.-eE bbox_2dlabel<|begin_of_box|>储\n"
    samples = [text[:i] for i in range(len(text))] + [text[i:] for i in range(len(text))]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(300)]
    for s in samples:
        got, failures = c.decode(s, SIZE)
        assert failures >= 0 and all(0 <= b.x1 <= b.x2 <= 800 and 0 <= b.y1 <= b.y2 <= 600 for b in got), s


def test_qwen2_5_vl_codec_fills_the_pixel_bound_not_given_from_the_published_processor_config():
    """``export --family qwen2_5_vl --max_pixels N`` alone: the min is the published 3136
    (Qwen/Qwen2.5-VL-7B-Instruct preprocessor_config.json), and the resize is transformers' own."""
    fam = family_named("qwen2_5_vl")
    codec = fam.box_codec(None, max_pixels=12544)
    assert codec.settings == {"min_pixels": 3136, "max_pixels": 12544}
    h, w = qwen_resize(300, 500, factor=28, min_pixels=3136, max_pixels=12544)
    assert codec.frame(500, 300) == (w, h)
    with pytest.raises(RemoteGLMError, match="min/max pixels"):
        fam.box_codec(None)
