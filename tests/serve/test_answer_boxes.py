"""Boxes in served answers (issue 20): read back in the original image's pixels for every
registered family, in the API's ``boxes`` field (real uvicorn, the real openai client), after the
CLI's answer, drawn by the web demo; and a run served at another resolution than it was trained
at is refused where that would shift its boxes."""

import base64
import json

import openai
import pytest
from PIL import Image

from remoteglm.boxes import Box
from remoteglm.errors import RemoteGLMError
from remoteglm.model.prompt import process_response
from remoteglm.registry import families, family_named
from remoteglm.serve.api_app import create_app
from remoteglm.serve.chat import ChatSession
from remoteglm.serve.cli import _stream_answer
from remoteglm.serve.generation import Reply
from remoteglm.serve.grounding import answer_boxes, draw_boxes
from remoteglm.serve.visualglm_engine import VisualGLMEngine
from remoteglm.serve.web import boxes_picture

# VisualGLM's box text (CogVLM's [[x1,y1,x2,y2]] on 000..999), written out by hand for an upright
# 1200 x 1600 image: the box (100, 200, 700, 1400) is 100/1200*999 = 83, 200/1600*999 = 125, ...
ANSWER = "图中左侧有一个储油罐[[083,125,583,874]]。"
TRUE = (100, 200, 700, 1400)


def near(got, want, tol):
    return all(abs(a - b) <= tol for a, b in zip(got, want))


@pytest.fixture(scope="module")
def turned_jpeg(tmp_path_factory):
    """A 1600 x 1200 JPEG whose EXIF turns it upright to 1200 x 1600 (as phones save photos)."""
    p = tmp_path_factory.mktemp("grounding") / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    Image.new("RGB", (1600, 1200), (90, 120, 80)).save(p, exif=exif.tobytes(), quality=90)
    return p


class BoxEngine(VisualGLMEngine):
    """The tiny VisualGLM model answering ``answer`` (a grounding answer) to every question."""

    answer = ANSWER

    def _generate_rows(self, encoded, rows):
        for i in range(len(rows)):
            yield i, Reply(self.answer[:5], 5, 1)
            yield i, Reply(self.answer, 5, 2, "stop")


@pytest.fixture
def engine(tiny):
    model, tok, _ = tiny
    e = BoxEngine(model, tok, name="box-tiny", max_new_tokens=16)
    e.box_codec = family_named("visualglm").box_codec()
    return e


@pytest.mark.parametrize("name", [f.name for f in families()])
def test_answer_boxes_are_original_pixels_for_every_family(name):
    fam = family_named(name)
    codec = fam.box_codec(min_pixels=3136, max_pixels=200704)  # (what a served engine gets from its processor)
    original, seen = (1000, 750), (500, 375)  # the front end reduced the image before the model saw it
    truth = [Box(120, 90, 480, 400, "储油罐"), Box(600.5, 10, 990, 740, None)]
    said = codec.encode([Box(b.x1 / 2, b.y1 / 2, b.x2 / 2, b.y2 / 2, b.label) for b in truth], seen)
    text = process_response(f"图中有两个目标：{said}。")  # as the engines post-process answers
    boxes, failures = answer_boxes(codec, text, original, seen)
    fw, fh = codec.frame(*seen)
    tol = max(original[0] / fw, original[1] / fh)  # one step of the family's grid, in original pixels
    assert failures == 0 and len(boxes) == 2
    for got, want in zip(boxes, truth):
        assert near(got.xyxy, want.xyxy, tol), (name, got, want)
    assert boxes[0].label == "储油罐"
    assert answer_boxes(codec, "没有找到。", original, seen) == ([], 0)
    assert answer_boxes(None, text, original, seen) == ([], 0)


def test_engine_reads_boxes_of_the_upright_original(engine, turned_jpeg):
    loaded = engine.load_image(str(turned_jpeg))
    assert loaded.size != (1200, 1600)  # the model sees it reduced; the boxes are the original's
    for image in (loaded, str(turned_jpeg), turned_jpeg.read_bytes()):
        (box,), failures = engine.boxes(ANSWER, image)
        assert failures == 0 and box.label == "图中左侧有一个储油罐" and near(box.xyxy, TRUE, 1.5)
    assert engine.boxes(ANSWER, None) == ([], 0)
    assert engine.boxes("[[083,125,bad,874]]", loaded) == ([], 1)


def test_api_returns_the_boxes_in_original_pixels(engine, turned_jpeg, in_thread):
    url = in_thread(create_app(engine)).url
    c = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)
    data = "data:image/jpeg;base64," + base64.b64encode(turned_jpeg.read_bytes()).decode()
    messages = [{"role": "user", "content": [{"type": "text", "text": "储油罐在哪里？"},
                                             {"type": "image_url", "image_url": {"url": data}}]}]
    r = c.chat.completions.create(model="box-tiny", messages=messages)
    (got,) = r.choices[0].message.boxes
    assert r.choices[0].message.content == ANSWER and got["label"] == "图中左侧有一个储油罐"
    assert near(got["bbox"], TRUE, 1.5) and json.dumps(got)  # plain JSON numbers
    chunks = list(c.chat.completions.create(model="box-tiny", messages=messages, stream=True))
    finish = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(finish) == 1 and near(finish[0].choices[0].delta.boxes[0]["bbox"], TRUE, 1.5)
    assert all(getattr(ch.choices[0].delta, "boxes", None) is None for ch in chunks if ch not in finish and ch.choices)
    engine.answer = "图中没有储油罐。"
    assert c.chat.completions.create(model="box-tiny", messages=messages).choices[0].message.boxes == []
    # without an image there is nothing to measure boxes in: no field
    text_only = c.chat.completions.create(model="box-tiny", messages=[{"role": "user", "content": "你好"}])
    assert getattr(text_only.choices[0].message, "boxes", None) is None


def test_cli_prints_the_boxes_after_the_answer(engine, turned_jpeg, capsys):
    session = ChatSession(engine)
    session.set_image(str(turned_jpeg))
    _stream_answer(session, "储油罐在哪里？")
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{engine.speaker}: {ANSWER}", "框 / box 1: 图中左侧有一个储油罐 100,200,700,1400"]
    engine.answer = "没有。"
    _stream_answer(session, "还有吗？")
    assert capsys.readouterr().out.splitlines() == [f"{engine.speaker}: 没有。"]


def test_draw_boxes_outlines_and_labels_on_a_copy():
    img = Image.new("RGB", (400, 300), (128, 128, 128))
    out = draw_boxes(img, [Box(50, 100, 250, 250, "储油罐"), Box(300, 20, 380, 80)])
    assert img.getpixel((50, 175)) == (128, 128, 128)  # the caller's image is untouched
    assert out.size == img.size
    for edge in ((50, 175), (150, 100), (250, 175), (150, 250), (300, 50), (340, 80)):
        assert out.getpixel(edge) != (128, 128, 128), edge
    assert out.getpixel((150, 175)) == (128, 128, 128) and out.getpixel((340, 50)) == (128, 128, 128)
    assert out.getpixel((55, 95)) != (128, 128, 128)  # the label's tab above the box
    small = draw_boxes(img, [Box(50, 100, 250, 250)], max_side=200)
    assert small.size == (200, 150) and small.getpixel((25, 87)) != (128, 128, 128)


def test_web_draws_the_last_answers_boxes_on_the_upload(engine, turned_jpeg):
    state = {"image": str(turned_jpeg), "history": [("储油罐在哪里？", ANSWER)]}
    pic = boxes_picture(engine, state, max_side=800)
    assert pic.size == (600, 800)  # the upright upload, scaled
    assert pic.getpixel((50, 300)) != pic.getpixel((200, 300))  # on the left edge vs inside the box
    assert pic.getpixel((200, 300)) == pic.getpixel((400, 750))  # inside is the photo itself
    assert boxes_picture(engine, {"image": str(turned_jpeg), "history": [("？", "没有。")]}) is None
    assert boxes_picture(engine, {"image": None, "history": []}) is None


def test_a_run_is_served_at_its_training_resolution(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"min_pixels": 3136, "max_pixels": 1003520}))
    (tmp_path / "remoteglm_base.json").write_text(json.dumps(
        {"base": "x", "settings": {"min_pixels": None, "max_pixels": 200704}}))
    qwen25, qwen3 = family_named("qwen2_5_vl"), family_named("qwen3_vl")
    assert qwen25.serving_pixels(tmp_path, None, None) == (3136, 200704)  # the run's, not the folder's
    assert qwen25.serving_pixels(tmp_path, 3136, 200704) == (3136, 200704)
    with pytest.raises(RemoteGLMError, match="trained at min_pixels 3136, max_pixels 200704.*would shift"):
        qwen25.serving_pixels(tmp_path, None, 1003520)
    # relative coordinates do not move with the resize: another resolution is the user's choice
    assert qwen3.serving_pixels(tmp_path, None, 1003520) == (3136, 1003520)
    # the range the run's box codec resolved to (the trainer's record) comes first
    (tmp_path / "remoteglm_base.json").write_text(json.dumps(
        {"base": "x", "settings": {"min_pixels": None, "max_pixels": None},
         "box_codec": {"min_pixels": 6272, "max_pixels": 401408}}))
    assert qwen25.serving_pixels(tmp_path, None, None) == (6272, 401408)
    with pytest.raises(RemoteGLMError, match="trained at min_pixels 6272, max_pixels 401408"):
        qwen25.serving_pixels(tmp_path, 3136, None)
    # a folder that is not a run (or a run from before the record) keeps what was asked
    (tmp_path / "remoteglm_base.json").write_text(json.dumps({"base": "x"}))
    assert qwen25.serving_pixels(tmp_path, None, 1003520) == (None, 1003520)
    (tmp_path / "remoteglm_base.json").write_text(json.dumps({"base": "x", "settings": {"max_pixels": "big"}}))
    with pytest.raises(RemoteGLMError, match="not pixel counts"):
        qwen25.serving_pixels(tmp_path, None, None)
