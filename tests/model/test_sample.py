"""VisualGLM's training sample layout (remoteglm.model.sample): the official layout, the serving
prompt id for id, counted truncation, right padding with ignored labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from remoteglm.model.sample import IGNORE_INDEX, SampleEncoder, collate
from remoteglm.model.tokenizer import ChatGLMTokenizer

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


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
    from remoteglm.serve.visualglm_engine import VisualGLMEngine

    model, _, _ = load_model(tiny_checkpoint)
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args, kw: seen.append((args[0] if args else kw["input_ids"], kw)),
                                           with_kwargs=True)
    engine = VisualGLMEngine(model, tok)
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


def test_collate_pads_right_with_ignored_labels(tok):
    enc = SampleEncoder(tok)
    a, b = enc.encode("描述", "农田。"), enc.encode("描述这张图片。", "有许多不同颜色的农田。")
    batch = collate([{"input_ids": a.input_ids, "labels": a.labels}, {"input_ids": b.input_ids, "labels": b.labels}],
                    tok.pad_token_id)
    n = len(a.input_ids)
    assert batch["input_ids"].shape == (2, max(n, len(b.input_ids)))
    assert (batch["input_ids"][0, n:] == tok.pad_token_id).all()
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()
