"""The VisualGLM model on sat: official parameter names, shapes, where the image goes, LoRA."""

import re

import pytest
import torch

from remoteglm.model.checkpoint import load_model
from remoteglm.model.config import VisualGLMConfig, get_config
from remoteglm.model.lora import add_lora, merge_lora
from remoteglm.model.prompt import encode_prompt
from remoteglm.serve.generation import GLMInputs


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    return load_model(tiny_checkpoint)


@pytest.fixture()
def fresh(tiny_checkpoint):
    """A model the test may modify."""
    return load_model(tiny_checkpoint)[0]


def _prompt(tok, query="图中有什么？"):
    p = encode_prompt(tok, query, image_length=32)
    return torch.tensor([p.ids]), p.pre_image


# Names of the official sat visualglm-6b checkpoint ({i} = layer index), as listed by
# torch.load(".../mp_rank_00_model_states.pt")["module"].keys().
OFFICIAL_PATTERNS = [
    "transformer.word_embeddings.weight",
    "transformer.layers.{i}.input_layernorm.{wb}",
    "transformer.layers.{i}.attention.query_key_value.{wb}",
    "transformer.layers.{i}.attention.dense.{wb}",
    "transformer.layers.{i}.post_attention_layernorm.{wb}",
    "transformer.layers.{i}.mlp.dense_h_to_4h.{wb}",
    "transformer.layers.{i}.mlp.dense_4h_to_h.{wb}",
    "transformer.final_layernorm.{wb}",
    "mixins.chatglm-final.lm_head.weight",
    "mixins.chatglm-attn.rotary_emb.inv_freq",
    "mixins.eva.model.vit.transformer.word_embeddings.weight",
    "mixins.eva.model.vit.transformer.position_embeddings.weight",
    "mixins.eva.model.vit.transformer.layers.{v}.input_layernorm.{wb}",
    "mixins.eva.model.vit.transformer.layers.{v}.attention.query_key_value.{wb}",
    "mixins.eva.model.vit.transformer.layers.{v}.attention.dense.{wb}",
    "mixins.eva.model.vit.transformer.layers.{v}.post_attention_layernorm.{wb}",
    "mixins.eva.model.vit.transformer.layers.{v}.mlp.dense_h_to_4h.{wb}",
    "mixins.eva.model.vit.transformer.layers.{v}.mlp.dense_4h_to_h.{wb}",
    "mixins.eva.model.vit.mixins.patch_embedding.proj.{wb}",
    "mixins.eva.model.vit.mixins.cls.ln_vision.{wb}",
    "mixins.eva.model.qformer.transformer.word_embeddings.weight",
    "mixins.eva.model.qformer.transformer.layers.{q}.input_layernorm.{wb}",
    "mixins.eva.model.qformer.transformer.layers.{q}.attention.query_key_value.{wb}",
    "mixins.eva.model.qformer.transformer.layers.{q}.attention.dense.{wb}",
    "mixins.eva.model.qformer.transformer.layers.{q}.post_attention_layernorm.{wb}",
    "mixins.eva.model.qformer.transformer.layers.{x}.cross_attention.query.{wb}",
    "mixins.eva.model.qformer.transformer.layers.{x}.cross_attention.key_value.{wb}",
    "mixins.eva.model.qformer.transformer.layers.{x}.cross_attention.dense.{wb}",
    "mixins.eva.model.qformer.transformer.layers.{x}.post_cross_attention_layernorm.{wb}",
    "mixins.eva.model.qformer.transformer.layers.{q}.mlp.dense_h_to_4h.{wb}",
    "mixins.eva.model.qformer.transformer.layers.{q}.mlp.dense_4h_to_h.{wb}",
    "mixins.eva.model.qformer.transformer.final_layernorm.{wb}",
    "mixins.eva.model.glm_proj.{wb}",
]


def expected_names(cfg: VisualGLMConfig) -> set[str]:
    ranges = {
        "i": range(cfg.num_layers), "v": range(cfg.vit.num_layers), "q": range(cfg.qformer.num_layers),
        "x": [i for i in range(cfg.qformer.num_layers) if cfg.qformer.is_decoder[i]], "wb": ["weight", "bias"],
    }
    names = {""}
    out = set()
    for pat in OFFICIAL_PATTERNS:
        names = {pat}
        for key, values in ranges.items():
            if "{" + key + "}" in pat:
                names = {n.replace("{" + key + "}", str(v)) for n in names for v in values}
        out |= names
    return out


def test_parameter_names_are_the_official_sat_names(loaded):
    model, _, cfg = loaded
    assert set(model.state_dict()) == expected_names(cfg)
    # cross-attention only on the alternate Q-Former layers, 0 first
    assert cfg.qformer.is_decoder == [True, False]


def test_full_size_config_is_visualglm_6b():
    cfg = get_config("visualglm-6b")
    d = cfg.to_sat_dict()
    assert (d["num_layers"], d["hidden_size"], d["num_attention_heads"], d["vocab_size"]) == (28, 4096, 32, 130528)
    assert d["eva_args"]["num_layers"] == 39 and d["eva_args"]["hidden_size"] == 1408 and d["eva_args"]["inner_hidden_size"] == 6144
    assert d["eva_args"]["layernorm_epsilon"] == 1e-6 and d["eva_args"]["use_final_layernorm"] is False
    assert d["qformer_args"]["is_decoder"] == [i % 2 == 0 for i in range(12)]
    assert d["qformer_args"]["layernorm_epsilon"] == 1e-12 and d["qformer_args"]["cross_attn_hidden_size"] == 1408
    assert (d["bos_token_id"], d["mask_token_id"], d["gmask_token_id"], d["pad_token_id"]) == (130004, 130000, 130001, 3)
    assert VisualGLMConfig.from_sat_dict(d) == VisualGLMConfig.from_sat_dict(VisualGLMConfig.from_sat_dict(d).to_sat_dict())
    # the official base model_config.json says lora_rank 10 with use_lora false: no LoRA layers
    base = VisualGLMConfig.from_sat_dict({**d, "lora_rank": 10, "use_lora": False, "tokenizer_type": "THUDM/chatglm-6b"})
    assert not base.has_lora and base.extra["tokenizer_type"] == "THUDM/chatglm-6b"


def test_forward_shapes(loaded):
    model, tok, cfg = loaded
    ids, pre = _prompt(tok)
    ids = ids.expand(2, -1)
    img = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        emb = model.encode_image(img)
        out = model(ids, image=img, pre_image=pre)
    assert emb.shape == (2, 32, cfg.hidden_size)
    assert out[0].shape == (2, ids.shape[1], cfg.vocab_size)
    assert len(out) == 1 + cfg.num_layers
    k, v = out[1]["past_key_values"]
    assert k.shape == v.shape == (ids.shape[1], 2, cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads)
    assert torch.isfinite(out[0]).all()


def test_image_embeddings_replace_exactly_the_slots(loaded):
    model, tok, cfg = loaded
    ids, pre = _prompt(tok)
    assert pre == len(tok.encode("<img>", add_special_tokens=False))
    assert ids[0, pre:pre + 32].eq(tok.pad_token_id).all()
    img = torch.randn(1, 3, 224, 224)
    seen = {}
    eva = model.get_mixin("eva")
    orig = eva.word_embedding_forward

    def spy(*a, **kw):
        seen["emb"] = orig(*a, **kw)
        return seen["emb"]

    model.hooks["word_embedding_forward"] = spy
    try:
        with torch.no_grad():
            model(ids, image=img, pre_image=pre)
            with_img = seen["emb"]
            model(ids)
            text_only = seen["emb"]
            image_embeds = model.encode_image(img)
    finally:
        model.collect_hooks_()
    rows = (with_img != text_only).any(-1)[0]
    assert rows.nonzero().flatten().tolist() == list(range(pre, pre + 32))
    assert torch.equal(with_img[0, pre:pre + 32], image_embeds[0])


def test_changing_the_image_moves_logits_from_the_slots_on(loaded):
    model, tok, cfg = loaded
    ids, pre = _prompt(tok)
    n = ids.shape[1]
    a, b = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 224, 224)
    # With a causal mask, positions before the slots cannot see the image: only [pre, n) move.
    causal = torch.ones(n, n).tril()[None, None]
    pos = GLMInputs(n, [0], "cpu").full(n, torch.float32)[1]
    with torch.no_grad():
        la = model(ids, pos, causal, image=a, pre_image=pre)[0][0]
        lb = model(ids, pos, causal, image=b, pre_image=pre)[0][0]
    moved = (la - lb).abs().amax(-1) > 1e-6
    assert not moved[:pre].any()
    assert moved[pre:].all()
    # With the GLM mask the prompt is bidirectional: every position sees the image.
    with torch.no_grad():
        ga = model(ids, image=a, pre_image=pre)[0][0]
        gb = model(ids, image=b, pre_image=pre)[0][0]
    assert ((ga - gb).abs().amax(-1) > 1e-6).all()


def test_image_embeds_path_equals_pixels_and_pad_embeddings_equal_no_image(loaded):
    model, tok, cfg = loaded
    ids, pre = _prompt(tok)
    img = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        from_pixels = model(ids, image=img, pre_image=pre)[0]
        from_embeds = model(ids, image_embeds=model.encode_image(img), pre_image=pre)[0]
        pads = model.transformer.word_embeddings(ids[:, pre:pre + 32])
        as_pads = model(ids, image_embeds=pads, pre_image=pre)[0]
        plain = model(ids)[0]
    assert torch.equal(from_pixels, from_embeds)
    assert torch.equal(as_pads, plain)


def test_per_row_image_positions(loaded):
    """Left padding shifts the slots per row; a tensor pre_image places each row's image."""
    model, tok, cfg = loaded
    long_ids, pre = _prompt(tok, "这张遥感图像里有几座建筑物？")
    short_ids, _ = _prompt(tok, "图中有什么？")
    n, pad = long_ids.shape[1], long_ids.shape[1] - short_ids.shape[1]
    batch = torch.cat([long_ids, torch.cat([torch.full((1, pad), tok.pad_token_id), short_ids], 1)])
    imgs = torch.randn(2, 3, 224, 224)
    mask, pos = GLMInputs(n, [0, pad], "cpu").full(n, torch.float32)
    with torch.no_grad():
        both = model(batch, pos, mask, image=imgs, pre_image=torch.tensor([pre, pre + pad]))[0]
        alone = model(short_ids, image=imgs[1:], pre_image=pre)[0]
    assert torch.allclose(both[1, pad:], alone[0], atol=1e-5)


def test_build_in_half_precision_without_init():
    from remoteglm.model.visualglm import build_model

    cfg = get_config("visualglm-tiny")
    model = build_model(cfg, dtype=torch.bfloat16, skip_init=True)
    dtypes = {p.dtype for p in model.parameters()}
    assert dtypes == {torch.bfloat16}
    assert model.mixins["chatglm-attn"].rotary_emb.inv_freq.dtype == torch.float32


def test_lora_names_zero_start_and_merge(fresh, loaded):
    _, tok, cfg = loaded
    model = fresh
    ids, pre = _prompt(tok)
    img = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        base = model(ids, image=img, pre_image=pre)[0]
    add_lora(model, rank=4, layer_range=[1])
    names = set(model.state_dict())
    for part in ("query_key_value", "dense"):
        assert f"transformer.layers.1.attention.{part}.original.weight" in names
        assert f"transformer.layers.1.attention.{part}.matrix_B.0" in names
        assert f"transformer.layers.0.attention.{part}.weight" in names  # layer 0 untouched
    assert {f"transformer.layers.1.attention.query_key_value.matrix_A.{i}" for i in range(3)} <= names
    assert not any("eva" in n and "matrix_" in n for n in names)
    qkv = model.transformer.layers[1].attention.query_key_value
    assert qkv.matrix_A[0].shape == (4, cfg.hidden_size) and qkv.matrix_B[0].shape == (cfg.hidden_size, 4)
    assert qkv.scaling == 1 / 4  # official lora_alpha 1
    with torch.no_grad():
        assert torch.equal(model(ids, image=img, pre_image=pre)[0], base)  # B starts at zero
        torch.manual_seed(1)
        for p in model.parameters():
            if p.shape == (cfg.hidden_size, 4):
                p.normal_(0, 0.5)
        tuned = model(ids, image=img, pre_image=pre)[0]
    assert (tuned - base).abs().max() > 1e-3
    assert cfg.use_lora is False  # the loaded config object of another model is not touched
    merge_lora(model)
    assert not any(re.search(r"matrix_|original", n) for n in model.state_dict())
    with torch.no_grad():
        merged = model(ids, image=img, pre_image=pre)[0]
    assert torch.allclose(merged, tuned, atol=1e-4)


def test_full_size_model_builds_in_place_with_official_shapes():
    """visualglm-6b builds in fp16 with skip_init: 7.8B parameters, never initialised or held in
    fp32 (pages stay untouched, so this costs well under a second and no real memory)."""
    from remoteglm.model.visualglm import build_model

    model = build_model(get_config("visualglm-6b"), dtype=torch.float16, skip_init=True)
    try:
        n = sum(p.numel() for p in model.parameters())
        assert 7.79e9 < n < 7.81e9
        assert {p.dtype for p in model.parameters()} == {torch.float16}
        sd = model.state_dict()
        assert sd["transformer.layers.27.attention.query_key_value.weight"].shape == (3 * 4096, 4096)
        assert sd["mixins.chatglm-final.lm_head.weight"].shape == (130528, 4096)
        assert sd["mixins.eva.model.vit.transformer.layers.38.mlp.dense_h_to_4h.weight"].shape == (6144, 1408)
        assert "mixins.eva.model.vit.transformer.layers.39.input_layernorm.weight" not in sd  # last EVA layer dropped
        assert sd["mixins.eva.model.vit.transformer.position_embeddings.weight"].shape == (257, 1408)
        assert sd["mixins.eva.model.qformer.transformer.layers.10.cross_attention.key_value.weight"].shape == (2 * 768, 1408)
        assert "mixins.eva.model.qformer.transformer.layers.11.cross_attention.query.weight" not in sd
        assert sd["mixins.eva.model.glm_proj.weight"].shape == (4096, 768)
    finally:
        del model
