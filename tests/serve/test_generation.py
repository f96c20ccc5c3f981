"""Generation on the tiny model: prompt format, GLM inputs, KV cache, greedy/sampling, streaming,
stop on <eop>, English mode, batching, and the chat session."""

import io
import re

import pytest
import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.model.prompt import encode_prompt, format_prompt
from remoteglm.serve.chat import ChatSession
from remoteglm.serve.generation import (
    GLMInputs,
    chat,
    generate_batch,
    generate_tokens,
    image_embeddings,
    stream_chat,
)
from remoteglm.serve.sampling import GenerationConfig, banned_ids, choose_tokens, process_logits
from remoteglm.serve.visualglm_engine import VisualGLMEngine

CJK = re.compile("[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")


def test_prompt_format_is_the_official_one(tiny):
    _, tok, _ = tiny
    assert format_prompt("这是哪里？") == "问：这是哪里？\n答："
    assert format_prompt("有几条路？", [("这是哪里？", "机场。")]) == "问：这是哪里？\n答：机场。\n问：有几条路？\n答："
    assert format_prompt("How many roads?", [("Where?", "An airport.")], english=True) == "Q:Where?\nA:An airport.\nQ:How many roads?\nA:"
    e = encode_prompt(tok, "这是哪里？", image_length=32)
    ids, pre = e.ids, e.pre_image
    head = tok.encode("<img>", add_special_tokens=False)
    assert pre == len(head) and ids[:pre] == head
    assert ids[pre:pre + 32] == [tok.pad_token_id] * 32
    assert ids[pre + 32:] == tok.encode("</img>问：这是哪里？\n答：")  # ends with [gMASK, <sop>]
    assert ids[-2:] == [tok.gmask_token_id, tok.bos_token_id]


def test_text_only_prompt_is_the_official_one(tiny):
    """Without an image the official prompt (since 2023-07) is 问：{q}\\n答： with pre_image 0: no
    <img></img> and no slots (it was <img></img>问：…, other ids and other logits)."""
    _, tok, _ = tiny
    e = encode_prompt(tok, "这是哪里？", image_length=None)
    ids, pre = e.ids, e.pre_image
    assert (ids, pre) == (tok.encode("问：这是哪里？\n答："), 0)
    zero = encode_prompt(tok, "这是哪里？", image_length=0)
    assert (zero.ids, zero.pre_image) == (ids, 0)
    assert "img" not in tok.decode(ids) and tok.pad_token_id not in ids
    turns = encode_prompt(tok, "有几条路？", [("这是哪里？", "机场。")], image_length=None).ids
    assert turns == tok.encode("问：这是哪里？\n答：机场。\n问：有几条路？\n答：")
    english = encode_prompt(tok, "Where?", english=True, image_length=None).ids
    assert english == tok.encode("Q:Where?\nA:")


def test_glm_inputs_match_sat_chatglm(tiny):
    """Our mask/positions for a left-padded batch equal sat ChatGLMModel.get_inputs."""
    model, tok, _ = tiny
    a = encode_prompt(tok, "这张遥感图像里有几座建筑物？", image_length=32).ids
    b = encode_prompt(tok, "图中有什么？", image_length=32).ids
    n = len(a)
    pad = n - len(b)
    ids = torch.tensor([a, [tok.pad_token_id] * pad + b])
    mask, pos = GLMInputs(n, [0, pad], "cpu").full(n, torch.float32)
    sat_mask, sat_pos = model.get_inputs(ids)
    assert torch.equal(pos, sat_pos)
    assert torch.equal(mask, sat_mask)
    # official single-prompt layout: positions 0..ctx-1 then the [gMASK] position; block 0 then 1, 2, ...
    ids1 = a + [5, 6]
    mask1, pos1 = GLMInputs(n, [0], "cpu").full(len(ids1), torch.float32)
    assert pos1[0, 0].tolist() == list(range(n - 1)) + [n - 2] * 3
    assert pos1[0, 1].tolist() == [0] * (n - 1) + [1, 2, 3]
    assert mask1[0, 0, 0].tolist() == [1] * (n - 1) + [0] * 3  # prompt bidirectional, answer causal
    assert mask1[0, 0, n].tolist() == [1] * (n + 1) + [0]
    step_mask, step_pos = GLMInputs(n, [0], "cpu").step(n + 1, torch.float32)
    assert torch.equal(step_mask[0, 0, 0], mask1[0, 0, n + 1]) and torch.equal(step_pos[..., 0], pos1[..., n + 1])


def _run(model, tok, ids, pads, cfg, embeds, pre, use_cache, banned=None):
    return list(generate_tokens(model, ids, pads, cfg, tok.eos_token_id, image_embeds=embeds, pre_image=pre,
                                banned=banned, use_cache=use_cache))


def test_kv_cache_equals_full_recomputation(tiny, tiny_image):
    model, tok, cfg = tiny
    e = encode_prompt(tok, "这张遥感图像里有几座建筑物？", [("这是哪里？", "机场。")], image_length=32)
    a, pre = e.ids, e.pre_image
    b = encode_prompt(tok, "图中有什么？", image_length=32).ids
    pad = len(a) - len(b)
    ids = torch.tensor([a, [tok.pad_token_id] * pad + b])
    embeds = image_embeddings(model, torch.stack([tiny_image, tiny_image.flip(-1)]))
    gen = GenerationConfig.make(do_sample=False, max_new_tokens=12, repetition_penalty=1.0)
    cached = _run(model, tok, ids, [0, pad], gen, embeds, torch.tensor([pre, pre + pad]), True)
    full = _run(model, tok, ids, [0, pad], gen, embeds, torch.tensor([pre, pre + pad]), False)
    assert len(cached) == len(full) == 12
    for (t1, l1), (t2, l2) in zip(cached, full):
        assert torch.equal(t1, t2)
        assert torch.allclose(l1, l2, atol=1e-5, rtol=1e-4)


def test_greedy_is_deterministic_and_image_dependent(tiny, tiny_image):
    model, tok, _ = tiny
    kw = dict(do_sample=False, max_new_tokens=20)
    r1, h1 = chat(model, tok, tiny_image, "描述这张图片。", **kw)
    r2, _ = chat(model, tok, tiny_image, "描述这张图片。", **kw)
    assert r1 == r2 and r1 and h1 == [("描述这张图片。", r1)]
    e = encode_prompt(tok, "描述这张图片。", image_length=32)
    ids, pre = e.ids, e.pre_image
    gen = GenerationConfig.make(do_sample=False, max_new_tokens=1)
    la = _run(model, tok, torch.tensor([ids]), [0], gen, image_embeddings(model, tiny_image), pre, True)[0][1]
    lb = _run(model, tok, torch.tensor([ids]), [0], gen, image_embeddings(model, -tiny_image), pre, True)[0][1]
    assert (la - lb).abs().max() > 1e-6  # the answer depends on the image


def test_streaming_yields_the_same_text_as_chat(tiny, tiny_image):
    model, tok, _ = tiny
    history = [("这是哪里？", "一个港口。")]
    kw = dict(do_sample=False, max_new_tokens=25)
    parts = list(stream_chat(model, tok, tiny_image, "有船吗？", history, **kw))
    response, new_history = chat(model, tok, tiny_image, "有船吗？", history, **kw)
    assert len(parts) > 3
    assert parts[-1] == (response, new_history)
    assert new_history == history + [("有船吗？", response)]
    texts = [p for p, _ in parts]
    assert all(texts[i + 1].startswith(texts[i][:-1]) for i in range(len(texts) - 1))  # grows token by token


def test_sampling_is_seeded_and_top_k_1_is_greedy(tiny, tiny_image):
    model, tok, _ = tiny
    kw = dict(max_new_tokens=15, temperature=1.5, top_p=1.0, top_k=0, repetition_penalty=1.0)
    s1 = chat(model, tok, tiny_image, "图中有什么？", generator=torch.Generator().manual_seed(1), **kw)[0]
    s2 = chat(model, tok, tiny_image, "图中有什么？", generator=torch.Generator().manual_seed(1), **kw)[0]
    s3 = chat(model, tok, tiny_image, "图中有什么？", generator=torch.Generator().manual_seed(2), **kw)[0]
    assert s1 == s2 and s1 != s3
    greedy = chat(model, tok, tiny_image, "图中有什么？", do_sample=False, max_new_tokens=15, repetition_penalty=1.0)[0]
    top1 = chat(model, tok, tiny_image, "图中有什么？", top_k=1, max_new_tokens=15, repetition_penalty=1.0,
                generator=torch.Generator().manual_seed(5))[0]
    assert top1 == greedy


def test_logit_processing_rules():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    cfg = GenerationConfig.make(repetition_penalty=2.0)
    out = process_logits(logits, torch.tensor([[0, 1]]), cfg, torch.tensor([False, False, False, True]))
    assert out.tolist() == [[1.0, -4.0, 1.0, -float("inf")]]  # repeats made less likely either sign
    near = torch.tensor([[3.0, 2.9, -5.0, -6.0]])
    nucleus = GenerationConfig.make(top_p=0.5, top_k=0, temperature=1.0)
    picks = {int(choose_tokens(near, nucleus, torch.Generator().manual_seed(i))) for i in range(30)}
    assert picks == {0}  # 0 alone already holds > 50 % of the mass
    wide = GenerationConfig.make(top_p=0.99, top_k=2, temperature=1.0)
    picks = {int(choose_tokens(near, wide, torch.Generator().manual_seed(i))) for i in range(60)}
    assert picks == {0, 1}
    assert GenerationConfig.make(temperature=0).do_sample is False
    with pytest.raises(RemoteGLMError):
        GenerationConfig.make(top_p=0)


def test_english_mode_never_emits_chinese(tiny, tiny_image):
    model, tok, cfg = tiny
    chinese = tok.chinese_token_ids
    assert chinese  # the tiny vocabulary has Chinese pieces to suppress
    e = encode_prompt(tok, "What is in the image?", english=True, image_length=32)
    ids, pre = e.ids, e.pre_image
    embeds = image_embeddings(model, tiny_image)
    gen = GenerationConfig.make(max_new_tokens=40, temperature=2.0, top_k=0, top_p=1.0, english=True)
    banned = banned_ids(tok, cfg.vocab_size, True, "cpu")
    torch.manual_seed(0)
    steps = _run(model, tok, torch.tensor([ids]), [0], gen, embeds, pre, True, banned=banned)
    assert not {int(t) for t, _ in steps} & chinese
    free = _run(model, tok, torch.tensor([ids]), [0], GenerationConfig.make(max_new_tokens=40, temperature=2.0, top_k=0, top_p=1.0),
                embeds, pre, True, banned=banned_ids(tok, cfg.vocab_size, False, "cpu"))
    assert {int(t) for t, _ in free} & chinese  # without the ban this model does emit Chinese
    text = chat(model, tok, tiny_image, "What is in the image?", english=True, max_new_tokens=30,
                generator=torch.Generator().manual_seed(0), temperature=2.0)[0]
    assert not CJK.search(text)


def test_stops_on_eop_and_respects_max_length(tiny_checkpoint, tiny, tiny_image):
    from remoteglm.model.checkpoint import load_model

    model, tok, _ = tiny
    e = encode_prompt(tok, "图中有什么？", image_length=32)
    ids, pre = e.ids, e.pre_image
    steps = _run(model, tok, torch.tensor([ids]), [0], GenerationConfig.make(do_sample=False, max_length=len(ids) + 7),
                 image_embeddings(model, tiny_image), pre, True)
    assert len(steps) == 7 and tok.eos_token_id not in [int(t) for t, _ in steps]
    with pytest.raises(RemoteGLMError, match="not less than max_length"):
        chat(model, tok, tiny_image, "图中有什么？", max_length=len(ids))
    # A model whose output always favours <eop> answers "" after one step.
    eop_model = load_model(tiny_checkpoint)[0]
    with torch.no_grad():
        ln = eop_model.transformer.final_layernorm
        ln.weight.zero_()
        ln.bias.copy_(torch.linspace(-1, 1, ln.bias.numel()))
        eop_model.mixins["chatglm-final"].lm_head.weight[tok.eos_token_id] = 100 * ln.bias
    steps = _run(eop_model, tok, torch.tensor([ids]), [0], GenerationConfig.make(max_new_tokens=50),
                 image_embeddings(eop_model, tiny_image), pre, True)
    assert [int(t) for t, _ in steps] == [tok.eos_token_id]
    assert chat(eop_model, tok, tiny_image, "图中有什么？")[0] == ""


def test_generate_batch_equals_one_by_one(tiny, tiny_image):
    model, tok, _ = tiny
    images = [tiny_image, tiny_image.flip(-1), -tiny_image]
    queries = ["描述这张图片。", "图中有几条道路？这些道路通向哪里？", "有船吗？"]
    batch = generate_batch(model, tok, images, queries, batch_size=2, max_new_tokens=10)
    single = [chat(model, tok, im, q, do_sample=False, max_new_tokens=10)[0] for im, q in zip(images, queries)]
    assert batch == single
    with pytest.raises(ValueError):
        generate_batch(model, tok, [tiny_image, None], ["a", "b"])


def test_streamed_rows_of_a_batch_equal_one_by_one_and_a_cancelled_row_leaves(tiny, tiny_image):
    """The engine's batches (``stream_rows``): each row streams its own growing answer, equal to its
    one-by-one answer, with its own max_new_tokens; a row cancelled mid-way gets no final reply and
    the others are unchanged; a row whose prompt does not fit fails alone."""
    from remoteglm.serve.engine import Row

    model, tok, _ = tiny
    engine = VisualGLMEngine(model, tok)
    images = [tiny_image, tiny_image.flip(-1), -tiny_image, tiny_image.flip(-2)]
    queries = ["描述这张图片。", "图中有几条道路？这些道路通向哪里？", "有船吗？", "你好"]
    caps = [6, 14, 9, 12]
    one = [engine.reply(im, q, do_sample=False, max_new_tokens=c) for im, q, c in zip(images, queries, caps)]
    stopped = {"at": None}
    rows = [Row(im, q, [], engine.config(do_sample=False, max_new_tokens=c)) for im, q, c in zip(images, queries, caps)]
    rows[3].cancelled = lambda: stopped["at"] is not None
    rows.append(Row(images[0], "很长的问题" * 400, [], engine.config(do_sample=False, max_new_tokens=5)))
    texts: dict[int, list] = {i: [] for i in range(len(rows))}
    for i, r in engine.stream_rows(rows):
        texts[i].append(r)
        if i == 3 and len(texts[3]) == 2:
            stopped["at"] = len(texts[0])
    for i in range(3):
        assert texts[i][-1] == one[i] and all(r.finish_reason is None for r in texts[i][:-1])
        assert all(b.text.startswith(a.text) for a, b in zip(texts[i], texts[i][1:]))
    assert len(texts[3]) == 2 and texts[3][-1].finish_reason is None and one[3].text.startswith(texts[3][-1].text)
    assert len(texts[4]) == 1 and isinstance(texts[4][0], RemoteGLMError) and "max_length" in str(texts[4][0])


def test_an_image_is_decoded_once_and_answers_stay_the_same(tiny):
    """``load_image`` decodes a source once; the same bytes again (a client resending its image
    each turn) are not decoded while their encoding is cached, and still answer the same when the
    cache has dropped them in between."""
    from PIL import Image

    model, tok, _ = tiny
    engine = VisualGLMEngine(model, tok, cache_images=1)
    raw = {}
    for name, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        buf = io.BytesIO()
        Image.new("RGB", (300, 200), colour).save(buf, "PNG")
        raw[name] = buf.getvalue()
    first = engine.load_image(raw["a"])
    assert first.image is not None and first.size == (300, 200)
    want = engine.reply(first, "描述这张图片。", do_sample=False, max_new_tokens=6).text
    again = engine.load_image(raw["a"])
    assert again.image is None and again.size == (300, 200)  # nothing decoded: its encoding is cached
    engine.reply(engine.load_image(raw["b"]), "描述这张图片。", do_sample=False, max_new_tokens=2)  # drops "a" from the cache
    assert engine.reply(again, "描述这张图片。", do_sample=False, max_new_tokens=6).text == want


def test_chat_session_keeps_image_and_history(tiny, tiny_image):
    model, tok, _ = tiny
    s = ChatSession(VisualGLMEngine(model, tok), do_sample=False, max_new_tokens=8)
    s.set_image(tiny_image)
    first = s.ask("描述这张图片。")
    assert first == chat(model, tok, tiny_image, "描述这张图片。", do_sample=False, max_new_tokens=8)[0]
    second = s.ask("还有呢？")
    assert s.history == [("描述这张图片。", first), ("还有呢？", second)]
    assert second == chat(model, tok, tiny_image, "还有呢？", [("描述这张图片。", first)], do_sample=False, max_new_tokens=8)[0]
    s.clear()
    assert s.history == []
    s.set_image(None)  # text-only chat: no image slots
    assert s.ask("你好") == chat(model, tok, None, "你好", do_sample=False, max_new_tokens=8)[0]
    with pytest.raises(RemoteGLMError, match="image file not found"):
        s.set_image("/no/such/image.tif")
