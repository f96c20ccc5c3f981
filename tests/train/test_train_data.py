"""Sample layout, truncation accounting and bad-image handling of the fine-tune dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from remoteglm.errors import RemoteGLMError
from remoteglm.model.tokenizer import ChatGLMTokenizer
from remoteglm.data.records import load_records
from remoteglm.model.sample import IGNORE_INDEX, SampleEncoder, collate
from remoteglm.train.data import FinetuneDataset

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"


@pytest.fixture(scope="module")
def tok(tiny_checkpoint):
    return ChatGLMTokenizer.from_pretrained(tiny_checkpoint)


def test_layout_matches_official(tok):
    enc = SampleEncoder(tok, max_source_length=64, max_target_length=32)
    e = enc.encode("描述这张图片。", "有许多农田。")
    pre = tok.encode("<img>", add_special_tokens=False)
    post = tok.encode("</img>问：描述这张图片。\n答：", add_special_tokens=False)
    ans = tok.encode("有许多农田。", add_special_tokens=False)
    assert e.input_ids == pre + [tok.pad_token_id] * 32 + post + [tok.gmask_token_id, tok.bos_token_id] + ans + [tok.eos_token_id]
    ctx = e.input_ids.index(tok.bos_token_id) + 1
    assert e.labels[:ctx] == [IGNORE_INDEX] * ctx  # no loss on prompt, image slots, [gMASK], <sop>
    assert e.labels[ctx:] == ans + [tok.eos_token_id]
    assert enc.pre_image == len(pre)
    assert not e.prompt_truncated and not e.label_truncated


def test_training_prompt_is_the_serving_prompt(tok, tiny_checkpoint):
    """A training sample's prompt ids are the ids the engine feeds the model for the same question
    and image (one prompt home: remoteglm.model.prompt); without an image both are the official
    问：{q}\\n答：."""
    from remoteglm.model.checkpoint import load_model
    from remoteglm.serve.engine import Engine

    model, _, _ = load_model(tiny_checkpoint)
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args, kw: seen.append((args[0] if args else kw["input_ids"], kw)),
                                           with_kwargs=True)
    engine = Engine(model, tok)
    image = SAMPLE / "images" / "s2_farmland.png"
    try:
        for q in ("描述这张图片。", "这张遥感图像属于以下哪一类场景：农田、住宅区、海洋？请只回答类别名称。"):
            enc = SampleEncoder(tok, max_source_length=128, image_length=model.image_length)
            e = enc.encode(q, "有许多农田。")
            ctx = e.input_ids.index(tok.bos_token_id) + 1
            seen.clear()
            engine.reply(str(image), q, do_sample=False, max_new_tokens=1)
            served, kw = seen[0]
            assert e.input_ids[:ctx] == served[0].tolist()
            assert int(kw["pre_image"]) == enc.pre_image and kw["image_embeds"] is not None
        text_only = SampleEncoder(tok, image_length=0).encode("你好", "你好。")
        ctx = text_only.input_ids.index(tok.bos_token_id) + 1
        seen.clear()
        engine.reply(None, "你好", do_sample=False, max_new_tokens=1)
        assert text_only.input_ids[:ctx] == seen[0][0][0].tolist() == tok.encode("问：你好\n答：")
    finally:
        hook.remove()


def test_truncation_keeps_answer_cue_and_is_counted(tok):
    enc = SampleEncoder(tok, max_source_length=20, max_target_length=8)
    long_q = "这张遥感图像属于以下哪一类场景：农田、住宅区、海洋、海滩、湿地、河流、森林、道路？请只回答类别名称。"
    e = enc.encode(long_q, "农田")
    tail = tok.encode("\n答：", add_special_tokens=False)
    src = e.input_ids[: e.input_ids.index(tok.gmask_token_id)]
    assert e.prompt_truncated and src[-len(tail):] == tail  # the "答：" cue survives the cut
    assert len(src) - enc.pre_image - 32 <= 20  # image slots do not count against the budget
    e2 = enc.encode("描述", "有许多不同颜色的农田和一些道路和房屋。")
    assert e2.label_truncated and len(e2.labels) - e2.labels.count(IGNORE_INDEX) == 8 - 1  # cut to 6 + <eop>


def test_dataset_skips_missing_and_corrupt_images(tok, tmp_path):
    shutil.copy(SAMPLE / "images" / "s2_farmland.png", tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    recs = [{"img": "good.png", "prompt": "描述这张图片。", "label": "农田。"},
            {"img": "missing.png", "prompt": "描述这张图片。", "label": "海洋。"},
            {"img": "broken.png", "prompt": "描述这张图片。", "label": "河流。"}]
    (tmp_path / "t.json").write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    ds = FinetuneDataset(load_records(tmp_path / "t.json"), SampleEncoder(tok))
    assert len(ds) == 1 and ds.skipped == 2
    assert "2 skipped" in ds.report()
    item = ds[0]
    assert item["image"].shape == (3, 224, 224)
    batch = collate([item, ds[0]], tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 2 and batch["image"].shape == (2, 3, 224, 224)


def test_collate_pads_right_with_ignored_labels(tok):
    enc = SampleEncoder(tok)
    a, b = enc.encode("描述", "农田。"), enc.encode("描述这张图片。", "有许多不同颜色的农田。")
    batch = collate([{"input_ids": a.input_ids, "labels": a.labels}, {"input_ids": b.input_ids, "labels": b.labels}],
                    tok.pad_token_id)
    n = len(a.input_ids)
    assert batch["input_ids"].shape == (2, max(n, len(b.input_ids)))
    assert (batch["input_ids"][0, n:] == tok.pad_token_id).all()
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()


def test_karpathy_dataset_gives_one_record_per_sentence_of_the_split():
    recs = load_records(SAMPLE / "dataset_sample_zh.json", split="train")
    data = json.loads((SAMPLE / "dataset_sample_zh.json").read_text(encoding="utf-8"))
    train = [im for im in data["images"] if im["split"] == "train"]
    assert len(recs) == sum(len(im["sentences"]) for im in train)
    assert {r.img.name for r in recs} == {Path(im["filename"]).name for im in train}
    assert all(r.img.exists() for r in recs)


def test_karpathy_dataset_is_asked_the_caption_questions_of_the_built_files():
    """Training on a dataset_*_zh.json directly asks what its built fine-tune files ask: one pool of
    one-sentence description questions, every one of them in use (seeded)."""
    from remoteglm.data.build import build_finetune_records
    from remoteglm.data.instructions import SENTENCE_PROMPTS

    path = SAMPLE / "dataset_sample_zh.json"
    asked = {r.prompt for r in load_records(path, split="train")}
    data = json.loads(path.read_text(encoding="utf-8"))
    built = {r["prompt"] for r in build_finetune_records(data, SAMPLE, SAMPLE, classify=False)["train"]}
    assert built <= set(SENTENCE_PROMPTS)
    assert asked <= set(SENTENCE_PROMPTS) and len(asked) >= len(SENTENCE_PROMPTS) // 2


@pytest.mark.parametrize("content,needle", [("[{\"img\": 1", "malformed JSON"), ("{\"x\": 1}", "unknown format"),
                                            ("[{\"img\": \"a.png\", \"prompt\": \"p\"}]", "item 0")])
def test_bad_files_are_one_clear_error(tmp_path, content, needle):
    p = tmp_path / "f.json"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(RemoteGLMError, match=needle):
        load_records(p)
    with pytest.raises(RemoteGLMError, match="fine-tune data not found: .*nope.json"):
        load_records(tmp_path / "nope.json")


def test_translated_dataset_image_root_is_honoured(tmp_path):
    """dataset_<name>_zh.json written by translation_en2zh.py records where the images are."""
    data = json.loads((SAMPLE / "dataset_sample_zh.json").read_text(encoding="utf-8"))
    for im in data["images"]:
        im["filename"] = Path(im["filename"]).name
    out = tmp_path / "ucm_zh"
    out.mkdir()
    import os

    data["image_root"] = os.path.relpath(SAMPLE / "images", out)
    (out / "dataset_x_zh.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    recs = load_records(out / "dataset_x_zh.json", split="test")
    assert recs and all(r.img.exists() for r in recs)


def _leaky_mix(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two train files and a validation file; one validation image is a byte copy of a train image
    of the second train file, under another name in another folder."""
    from PIL import Image

    files = {}
    for k, rel in enumerate(["t1/a.png", "t1/b.png", "t2/c.png", "v/d.png"]):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (40 * k, 20, 255 - 40 * k)).save(p)
        files[rel] = p
    (tmp_path / "v" / "renamed.png").write_bytes(files["t2/c.png"].read_bytes())
    rec = lambda img: {"img": img, "prompt": "描述这张图片。", "label": "一片农田。"}  # noqa: E731
    t1, t2, v = tmp_path / "t1" / "a_train.json", tmp_path / "t2" / "b_train.json", tmp_path / "v" / "val.json"
    t1.write_text(json.dumps([rec("a.png"), rec("b.png")], ensure_ascii=False), encoding="utf-8")
    t2.write_text(json.dumps([rec("c.png"), rec("c.png")], ensure_ascii=False), encoding="utf-8")
    v.write_text(json.dumps([rec("renamed.png"), rec("d.png")], ensure_ascii=False), encoding="utf-8")
    return t1, t2, v


def test_finetuning_a_mix_whose_train_image_is_a_validation_image_is_one_line(tmp_path, capsys):
    """Content, not names: a validation image that is a renamed copy of a train image is refused
    before any model loads (the VisualGLM engine here; tests/families for the transformers ones)."""
    from remoteglm.train.finetune import main

    t1, t2, v = _leaky_mix(tmp_path)
    rc = main(["--from_pretrained", "random:visualglm-tiny", "--train_data", str(t1), str(t2), "--valid_data", str(v),
               "--save", str(tmp_path / "runs"), "--train_iters", "1"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "1 train image(s)" in lines[0] and str(tmp_path / "t2" / "c.png") in lines[0], lines[0]
    assert str(tmp_path / "v" / "renamed.png") in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()
