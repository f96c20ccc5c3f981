"""Checkpoints written with sat <= 0.4.0 (position_embeddings present, qkv rows per head) load,
convert and merge to the model they were, LoRA fine-tunes included.

No real old file was at hand, so the tests write one: they take a model in today's layout, put
its fused qkv rows (and LoRA) in the old (head, [q,k,v], dim) order and add the old position table.
The reference for an old LoRA is computed independently of the conversion: an old rank-r qkv LoRA
equals a new rank-3r LoRA (every partition sees all three old A_i), run by sat's own LoRA layer.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from remoteglm.model.checkpoint import load_model
from remoteglm.model.reading import read_checkpoint
from remoteglm.model.sat_upgrade import OLD_SAT_MARKER
from remoteglm.model.saving import save_sat_checkpoint
from remoteglm.model.convert import convert
from remoteglm.model.visualglm_hf import qkv_sat_to_hf
from remoteglm.model.lora import add_lora
from remoteglm.model.prompt import encode_prompt
from remoteglm.train.merge import merge_checkpoint

ROOT = Path(__file__).resolve().parents[2]
RANK = 2
ALPHA = 2.0  # not 1: the merge must use alpha / rank


@pytest.fixture(scope="module")
def base(tiny_checkpoint):
    return load_model(tiny_checkpoint)


@pytest.fixture(scope="module")
def probe(base):
    _, tok, _ = base
    p = encode_prompt(tok, "描述这张图片。", [("有几条路？", "两条。")], image_length=32)
    ids, pre = p.ids, p.pre_image
    g = torch.Generator().manual_seed(0)
    return torch.tensor([ids]), pre, torch.randn(1, 3, 224, 224, generator=g)


def logits(model, probe):
    ids, pre, img = probe
    with torch.no_grad():
        return model(ids, image=img, pre_image=pre)[0]


def _is_qkv(k: str) -> bool:
    return ".attention.query_key_value." in k and k.startswith("transformer.layers.")


def old_layout(sd: dict, heads: int) -> dict:
    """A sat >= 0.4.1 state dict as sat <= 0.4.0 wrote it. qkv LoRA B matrices are taken as they
    are: the caller decides what they mean in the old layout."""
    out = {}
    for k, v in sd.items():
        if _is_qkv(k) and k.endswith((".weight", ".bias")):  # weight, bias, original.weight, original.bias
            v = qkv_sat_to_hf(v, heads)
        out[k] = v.clone()
    out[OLD_SAT_MARKER] = torch.randn(2048, sd["transformer.word_embeddings.weight"].shape[1])
    return out


@pytest.fixture(scope="module")
def old_lora(base, tiny_checkpoint, tmp_path_factory):
    """An old-layout LoRA fine-tune (every layer, qkv and dense, random A_i and non-zero B_i) and
    the logits sat <= 0.4.0 gave for it, from a rank-3r LoRA in today's layout."""
    model, tok, cfg = base
    heads, hd = cfg.num_attention_heads, cfg.hidden_size
    g = torch.Generator().manual_seed(7)
    old = {k: v.clone() for k, v in model.state_dict().items()}
    lora = {}
    for i in range(cfg.num_layers):
        p = f"transformer.layers.{i}.attention"
        for j in range(3):
            lora[f"{p}.query_key_value.matrix_A.{j}"] = torch.randn(RANK, hd, generator=g) * 0.3
            lora[f"{p}.query_key_value.matrix_B.{j}"] = torch.randn(hd, RANK, generator=g) * 0.3
        lora[f"{p}.dense.matrix_A.0"] = torch.randn(RANK, hd, generator=g) * 0.3
        lora[f"{p}.dense.matrix_B.0"] = torch.randn(hd, RANK, generator=g) * 0.3
        for part in ("query_key_value", "dense"):
            for n in ("weight", "bias"):
                old[f"{p}.{part}.original.{n}"] = old.pop(f"{p}.{part}.{n}")
    old.update(lora)
    old = old_layout(old, heads)
    ocfg = dataclasses.replace(cfg, use_lora=True, lora_rank=RANK, lora_alpha=ALPHA, layer_range=None)
    d = save_sat_checkpoint(old, ocfg, tmp_path_factory.mktemp("old") / "old-lora", tokenizer=tok)

    # Reference: rank 3r, alpha 3*ALPHA (same scale). qkv partition j (q, k or v of every head) gets
    # A' = [A_0; A_1; A_2] and B' = the rows of partition j, in the new order, of blockdiag(B_0, B_1, B_2)
    # laid out in the old row order. dense: A' = [A_d; 0; 0], B' = [B_d, 0, 0].
    ref, _, _ = load_model(tiny_checkpoint)
    add_lora(ref, 3 * RANK, lora_alpha=3 * ALPHA)
    with torch.no_grad():
        for i in range(cfg.num_layers):
            p = f"transformer.layers.{i}.attention"
            qkv = ref.transformer.layers[i].attention.query_key_value
            a_cat = torch.cat([lora[f"{p}.query_key_value.matrix_A.{j}"] for j in range(3)], 0)
            block = torch.block_diag(*[lora[f"{p}.query_key_value.matrix_B.{j}"] for j in range(3)])  # [3*hd, 3r], old rows
            new_rows = old_rows_to_new(block, heads)
            for j in range(3):
                qkv.matrix_A[j].copy_(a_cat)
                qkv.matrix_B[j].copy_(new_rows[j * hd:(j + 1) * hd])
            dense = ref.transformer.layers[i].attention.dense
            dense.matrix_A[0].zero_()
            dense.matrix_B[0].zero_()
            dense.matrix_A[0][:RANK] = lora[f"{p}.dense.matrix_A.0"]
            dense.matrix_B[0][:, :RANK] = lora[f"{p}.dense.matrix_B.0"]
    return d, ref


def old_rows_to_new(t: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows (H, 3, D) -> (3, H, D), written here independently of the code under test."""
    h_rows = t.reshape(heads, 3, -1, *t.shape[1:])
    return torch.stack([h_rows[:, j] for j in range(3)], 0).reshape(t.shape)


def test_old_base_checkpoint_loads_with_identical_logits(base, tiny_checkpoint, probe, tmp_path, capfd):
    model, tok, cfg = base
    ref = logits(model, probe)
    old = old_layout(model.state_dict(), cfg.num_attention_heads)
    assert not torch.equal(old["transformer.layers.0.attention.query_key_value.weight"],
                           model.state_dict()["transformer.layers.0.attention.query_key_value.weight"])
    d = save_sat_checkpoint(old, cfg, tmp_path / "old", tokenizer=tok)
    capfd.readouterr()
    m2, _, _ = load_model(d)
    err = capfd.readouterr().err
    assert "old sat (<=0.4.0) checkpoint: qkv rows converted to the sat>=0.4.1 order" in err
    assert "LoRA" not in err and len(err.strip().splitlines()) == 1
    assert torch.equal(logits(m2, probe), ref)
    # a current checkpoint is left alone, silently
    load_model(tiny_checkpoint)
    assert "old sat" not in capfd.readouterr().err


def test_old_lora_checkpoint_loads_like_old_sat_ran_it(old_lora, base, probe, capfd):
    d, ref_model = old_lora
    ref = logits(ref_model, probe)
    assert (ref - logits(base[0], probe)).abs().max() > 1e-2  # the LoRA matters
    capfd.readouterr()
    m, _, cfg = load_model(d)
    err = capfd.readouterr().err
    assert "qkv rows converted" in err and "qkv LoRA merged into the weights" in err
    torch.testing.assert_close(logits(m, probe), ref, atol=1e-5, rtol=1e-5)
    # still a LoRA model: dense keeps its LoRA, qkv's update now lives in the base weight
    assert "lora" in m.mixins and cfg.lora_rank == RANK
    att = m.transformer.layers[0].attention
    assert all(float(b.abs().max()) == 0 for b in att.query_key_value.matrix_B)
    assert float(att.dense.matrix_B[0].abs().max()) > 0


def test_old_lora_checkpoint_converts_and_merges(old_lora, probe, tmp_path):
    d, ref_model = old_lora
    ref = logits(ref_model, probe)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "remoteglm", "convert", "--to", "hf", str(d), str(tmp_path / "hf")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "old sat (<=0.4.0) checkpoint" in r.stderr
    m_hf, _, _ = load_model(tmp_path / "hf")
    torch.testing.assert_close(logits(m_hf, probe), ref, atol=1e-4, rtol=1e-4)

    # --to sat rewrites an old sat folder once in today's layout
    convert(d, tmp_path / "sat", "sat")
    new = read_checkpoint(tmp_path / "sat")
    assert new.upgraded_from is None and OLD_SAT_MARKER not in new.state_dict
    m_sat, _, _ = load_model(tmp_path / "sat")
    torch.testing.assert_close(logits(m_sat, probe), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(Exception, match="already in sat format"):
        convert(tmp_path / "sat", tmp_path / "sat2", "sat")

    merge_checkpoint(d, tmp_path / "merged")
    m_merged, _, cfg = load_model(tmp_path / "merged")
    assert "lora" not in m_merged.mixins and not cfg.has_lora
    torch.testing.assert_close(logits(m_merged, probe), ref, atol=1e-4, rtol=1e-4)
    assert json.loads((tmp_path / "merged" / "model_config.json").read_text())["use_lora"] is False


def test_old_qlora_checkpoint_loads_dequantized(tiny_checkpoint, probe, tmp_path):
    """An old QLoRA run: its NF4 qkv weights are in the old row order too. With the tiny model's
    64 inputs every NF4 block (64 values) is one row, so permuting packed rows and their absmax
    entries writes exactly the old file. The loaded model is the dequantised fine-tune."""
    model, tok, cfg = load_model(tiny_checkpoint)
    add_lora(model, RANK, qlora=True)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".dense.matrix_B." in name:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(3))
    ref = logits(model, probe)
    heads, rows = cfg.num_attention_heads, 3 * cfg.hidden_size
    old = dict(model.state_dict())
    for i in range(cfg.num_layers):
        p = f"transformer.layers.{i}.attention.query_key_value.original."
        qs = old[p + "quant_state"]
        assert qs.blocksize == cfg.hidden_size and qs.absmax.numel() == rows  # one NF4 block per row
        w = old[p + "weight"]
        old[p + "weight"] = qkv_sat_to_hf(w.reshape(rows, -1), heads).reshape(w.shape)
        old[p + "bias"] = qkv_sat_to_hf(old[p + "bias"], heads)
        qs.absmax = qkv_sat_to_hf(qs.absmax, heads)
        old[p + "weight.absmax"] = qs.absmax
    old[OLD_SAT_MARKER] = torch.zeros(2048, cfg.hidden_size)
    d = save_sat_checkpoint(old, model.config, tmp_path / "oldq", tokenizer=tok)
    m2, _, cfg2 = load_model(d)
    assert cfg2.use_lora and not cfg2.use_qlora and "lora" in m2.mixins
    torch.testing.assert_close(logits(m2, probe), ref, atol=1e-5, rtol=1e-5)
