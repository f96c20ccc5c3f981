"""Checkpoints: sat and HF save/load give identical logits, the converter is bit-exact, a
RemoteGLM-style LoRA fine-tune loads, and every user mistake gets one precise line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.model.checkpoint import load_model
from remoteglm.model.reading import read_checkpoint
from remoteglm.model.saving import save_hf_checkpoint, save_sat_checkpoint
from remoteglm.model.convert import convert
from remoteglm.model.lora import add_lora
from remoteglm.model.prompt import encode_prompt

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    return load_model(tiny_checkpoint)


@pytest.fixture(scope="module")
def probe(loaded):
    _, tok, _ = loaded
    p = encode_prompt(tok, "描述这张图片。", [("有几条路？", "两条。")], image_length=32)
    torch.manual_seed(0)
    return torch.tensor([p.ids]), p.pre_image, torch.randn(1, 3, 224, 224)


def logits(model, probe):
    ids, pre, img = probe
    with torch.no_grad():
        return model(ids, image=img, pre_image=pre)[0]


def copy_ckpt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_sat_and_hf_save_then_load_give_identical_logits(loaded, probe, tmp_path):
    model, tok, cfg = loaded
    ref = logits(model, probe)
    save_sat_checkpoint(model, cfg, tmp_path / "sat", iteration=7, tokenizer=tok)
    assert (tmp_path / "sat" / "latest").read_text().strip() == "7"
    assert set(torch.load(tmp_path / "sat" / "7" / "mp_rank_00_model_states.pt", weights_only=False)) >= {"module"}
    save_hf_checkpoint(model, cfg, tok, tmp_path / "hf", shard_size="64KB", safe_serialization=False)  # .bin still reads
    save_hf_checkpoint(model, cfg, tok, tmp_path / "hf_st", shard_size="10MB")
    index = json.loads((tmp_path / "hf" / "pytorch_model.bin.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3
    assert "image_encoder.vit.mixins.cls.ln_vision.weight" in index["weight_map"]
    assert "lm_head.weight" in index["weight_map"]
    assert "transformer.layers.1.attention.rotary_emb.inv_freq" in index["weight_map"]
    hf_cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_cfg["image_length"] == 32 and "eva_config" in hf_cfg and "qformer_config" in hf_cfg
    for d in ("sat", "hf", "hf_st"):
        m2, tok2, cfg2 = load_model(tmp_path / d)
        assert torch.equal(logits(m2, probe), ref), d
        assert tok2.vocab_size == tok.vocab_size


def test_qkv_permute_matches_hf_chatglm_layout(loaded, tmp_path):
    """HF ChatGLM splits query_key_value per head: rows (head, q/k/v, dim)."""
    model, tok, cfg = loaded
    save_hf_checkpoint(model, cfg, tok, tmp_path, shard_size="1GB", safe_serialization=False)
    hf = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    sat_w = model.state_dict()["transformer.layers.0.attention.query_key_value.weight"]
    hf_w = hf["transformer.layers.0.attention.query_key_value.weight"]
    h, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    q_sat = sat_w[: h * d].reshape(h, d, -1)  # sat: [q heads | k heads | v heads]
    k_sat = sat_w[h * d: 2 * h * d].reshape(h, d, -1)
    per_head = hf_w.reshape(h, 3, d, -1)
    assert torch.equal(per_head[:, 0], q_sat) and torch.equal(per_head[:, 1], k_sat)
    assert not torch.equal(hf_w, sat_w)


def test_converter_round_trips_bit_exactly(tiny_checkpoint, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "remoteglm", "convert", "--to", "hf", str(tiny_checkpoint), str(tmp_path / "hf"),
                        "--shard_size", "100KB"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    convert(tmp_path / "hf", tmp_path / "sat", "sat")
    a, b = read_checkpoint(tiny_checkpoint), read_checkpoint(tmp_path / "sat")
    assert a.state_dict.keys() == b.state_dict.keys()
    for k, v in a.state_dict.items():
        assert v.dtype == b.state_dict[k].dtype and torch.equal(v, b.state_dict[k]), k
    assert json.loads((tiny_checkpoint / "model_config.json").read_text()) == json.loads((tmp_path / "sat" / "model_config.json").read_text())
    assert (tmp_path / "sat" / "ice_text.model").read_bytes() == (tiny_checkpoint / "ice_text.model").read_bytes()
    # fp16 weights stay fp16 through the converter
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in a.state_dict.items()}
    save_sat_checkpoint(half, a.config, tmp_path / "half", tokenizer=None)
    shutil.copy(tiny_checkpoint / "ice_text.model", tmp_path / "half")
    convert(tmp_path / "half", tmp_path / "half_hf", "hf")
    assert json.loads((tmp_path / "half_hf" / "config.json").read_text())["torch_dtype"] == "float16"
    convert(tmp_path / "half_hf", tmp_path / "half_sat", "sat")
    back = read_checkpoint(tmp_path / "half_sat").state_dict
    assert all(torch.equal(half[k], back[k]) and back[k].dtype == half[k].dtype for k in half)


def test_remoteglm_style_lora_checkpoint_loads_and_changes_output(tiny_checkpoint, probe, tmp_path):
    model, tok, cfg = load_model(tiny_checkpoint)
    base = logits(model, probe)
    add_lora(model, rank=4, layer_range=[0])
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".matrix_B." in name:
                p.normal_(0, 2.0)
    tuned = logits(model, probe)
    save_sat_checkpoint(model, None, tmp_path / "ft", iteration=300)
    # the fine-tune scripts save no tokenizer: RemoteGLM users pass --tokenizer
    mc = json.loads((tmp_path / "ft" / "model_config.json").read_text())
    assert mc["model_class"] == "FineTuneVisualGLMModel"
    assert mc["lora_rank"] == 4 and mc["layer_range"] == [0] and mc["use_lora"] is True
    mc.update({"use_ptuning": False, "pre_seq_len": 4, "tokenizer_type": "THUDM/chatglm-6b"})  # as RemoteGLM writes it
    (tmp_path / "ft" / "model_config.json").write_text(json.dumps(mc))
    sd = torch.load(tmp_path / "ft" / "300" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    assert "transformer.layers.0.attention.query_key_value.matrix_A.2" in sd
    assert "transformer.layers.0.attention.dense.matrix_B.0" in sd
    assert "transformer.layers.0.attention.query_key_value.original.weight" in sd
    assert "transformer.layers.1.attention.query_key_value.weight" in sd

    with pytest.raises(RemoteGLMError, match="no ice_text.model.*--tokenizer"):
        load_model(tmp_path / "ft")
    m2, _, cfg2 = load_model(tmp_path / "ft", tokenizer=tiny_checkpoint / "ice_text.model")
    assert cfg2.layer_range == [0] and "lora" in m2.mixins
    out = logits(m2, probe)
    assert torch.equal(out, tuned)
    assert (out - base).abs().max() > 1e-3

    # converting to HF merges the LoRA; the merged model answers like the LoRA one
    convert(tmp_path / "ft", tmp_path / "merged", "hf", tokenizer=tiny_checkpoint / "ice_text.model")
    m3, _, _ = load_model(tmp_path / "merged")
    assert "lora" not in m3.mixins
    assert torch.allclose(logits(m3, probe), tuned, atol=1e-4)


# ---- errors: one line, the file, the fix -----------------------------------------------------------
def _msg(path, **kw) -> str:
    with pytest.raises(RemoteGLMError) as e:
        load_model(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_error_pt_file_instead_of_directory(tiny_checkpoint):
    msg = _msg(tiny_checkpoint / "1" / "mp_rank_00_model_states.pt")
    assert f"pass the checkpoint directory instead: {tiny_checkpoint}" in msg
    assert f"pass its parent directory: {tiny_checkpoint}" in _msg(tiny_checkpoint / "1")
    assert "checkpoint not found" in _msg(tiny_checkpoint / "nope")


def test_error_missing_latest_and_iteration(tiny_checkpoint, tmp_path):
    d = copy_ckpt(tiny_checkpoint, tmp_path / "c")
    (d / "latest").unlink()
    msg = _msg(d)
    assert "no 'latest' file" in msg and f"echo 1 > {d / 'latest'}" in msg
    (d / "latest").write_text("300\n")
    msg = _msg(d)
    assert "iteration '300'" in msg and "iteration folders found: 1" in msg
    (d / "model_config.json").unlink()
    assert "has no model_config.json: copy that file" in _msg(d)


def test_error_not_a_checkpoint_and_nested(tiny_checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    assert "no model_config.json (sat format) and no config.json (HF format)" in _msg(tmp_path / "empty")
    copy_ckpt(tiny_checkpoint, tmp_path / "outer" / "visualglm-6b")
    assert f"pass {tmp_path / 'outer' / 'visualglm-6b'}" in _msg(tmp_path / "outer")


def test_error_missing_tokenizer_and_wrong_tokenizer(tiny_checkpoint, tmp_path):
    d = copy_ckpt(tiny_checkpoint, tmp_path / "c")
    (d / "ice_text.model").unlink()
    msg = _msg(d)
    assert "has no ice_text.model" in msg and "--tokenizer" in msg
    from remoteglm.model.tiny_tokenizer import train_tiny_tokenizer

    big = train_tiny_tokenizer(tmp_path / "big" / "ice_text.model", vocab_size=1200)
    assert "wrong ice_text.model" in _msg(d, tokenizer=big)


def test_error_incomplete_hf_shards_and_lfs_pointer(loaded, tmp_path):
    model, tok, cfg = loaded
    d = save_hf_checkpoint(model, cfg, tok, tmp_path / "hf", shard_size="64KB", safe_serialization=False)
    shards = sorted(d.glob("pytorch_model-*.bin"))
    victim = shards[2]
    data = victim.read_bytes()
    victim.unlink()
    msg = _msg(d)
    assert f"shard {victim.name} listed in pytorch_model.bin.index.json is missing" in msg
    victim.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    assert "Git LFS pointer" in _msg(d) and "git lfs pull" in _msg(d)
    victim.write_bytes(data[: len(data) // 2])
    assert f"cannot read {victim}" in _msg(d)


def test_error_config_weight_mismatch_names_the_tensor(tiny_checkpoint, tmp_path):
    d = copy_ckpt(tiny_checkpoint, tmp_path / "c")
    mc = json.loads((d / "model_config.json").read_text())
    mc["vocab_size"] = 1200
    (d / "model_config.json").write_text(json.dumps(mc))
    msg = _msg(d)
    assert "tensor " in msg and "(1000, 64) in the weights but (1200, 64) from the config" in msg


def test_error_unexpected_and_missing_tensors(tiny_checkpoint, tmp_path):
    d = copy_ckpt(tiny_checkpoint, tmp_path / "c")
    f = d / "1" / "mp_rank_00_model_states.pt"
    obj = torch.load(f, weights_only=False)
    obj["module"]["mixins.ptuning.prefix"] = torch.zeros(2)
    torch.save(obj, f)
    assert "unexpected tensor(s) mixins.ptuning.prefix" in _msg(d)
    del obj["module"]["mixins.ptuning.prefix"]
    del obj["module"]["mixins.eva.model.glm_proj.weight"]
    torch.save(obj, f)
    assert "missing tensor(s) mixins.eva.model.glm_proj.weight" in _msg(d)
    torch.save({"state_dict": {}}, f)
    assert "has no 'module' entry" in _msg(d)


def test_error_bad_config_and_device(tiny_checkpoint, tmp_path):
    d = copy_ckpt(tiny_checkpoint, tmp_path / "c")
    (d / "model_config.json").write_text('{"model_class": "ChatGLMModel"')
    assert "model_config.json: malformed JSON at line 1" in _msg(d)
    (d / "model_config.json").write_bytes('{"model_class": "视觉"}'.encode("gbk"))
    assert "model_config.json: not UTF-8 text" in _msg(d)
    (d / "model_config.json").write_text("[]")
    assert "model_config.json: must hold a JSON object" in _msg(d)
    (d / "model_config.json").write_text('{"model_class": "ChatGLMModel"}')
    assert "is not a VisualGLM model" in _msg(d)
    if not torch.cuda.is_available():
        assert "CUDA is not available" in _msg(tiny_checkpoint, device="cuda")


def test_qlora_checkpoint_loads_dequantized_and_merges(tiny_checkpoint, probe, tmp_path):
    """A QLoRA fine-tune (NF4 ChatGLM linears + LoRA) saves, loads back as a plain LoRA model with
    the same outputs, and merges in memory."""
    from remoteglm.model.lora import merge_lora

    model, tok, _ = load_model(tiny_checkpoint)
    add_lora(model, rank=4, layer_range=[1], qlora=True)
    assert model.transformer.layers[0].mlp.dense_h_to_4h.weight.dtype == torch.uint8  # NF4-packed
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".matrix_B." in name:
                p.normal_(0, 2.0)
    ref = logits(model, probe)
    save_sat_checkpoint(model, None, tmp_path / "q", tokenizer=tok)
    assert json.loads((tmp_path / "q" / "model_config.json").read_text())["use_qlora"] is True
    m2, _, cfg2 = load_model(tmp_path / "q")
    assert cfg2.use_lora and not cfg2.use_qlora and "lora" in m2.mixins
    assert torch.allclose(logits(m2, probe), ref, atol=1e-5)
    merge_lora(model)
    assert not any(".matrix_" in k for k in model.state_dict())
    assert torch.allclose(logits(model, probe), ref, atol=1e-4)
