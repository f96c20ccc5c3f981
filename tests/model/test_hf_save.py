"""save_hf_checkpoint into a folder that already holds an HF save: the new save is what loads back,
whatever layout (bin/safetensors, sharded or not) either save used."""

import pytest
import torch

from remoteglm.model.checkpoint import load_model
from remoteglm.model.layout import hf_weight_files
from remoteglm.model.prompt import encode_prompt
from remoteglm.model.saving import save_hf_checkpoint


@pytest.fixture(scope="module")
def two_models(tiny_checkpoint):
    a, tok, cfg = load_model(tiny_checkpoint)
    b, _, _ = load_model(tiny_checkpoint)
    with torch.no_grad():  # a different model of the same shape
        g = torch.Generator().manual_seed(1)
        for p in b.transformer.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return a, b, tok, cfg


def logits(model, tok):
    p = encode_prompt(tok, "描述这张图片。", [], image_length=32)
    img = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(torch.tensor([p.ids]), image=img, pre_image=p.pre_image)[0]


LAYOUTS = {  # (safe_serialization, shard_size)
    "bin-sharded": (False, "64KB"),
    "bin-single": (False, "1GB"),
    "st-sharded": (True, "64KB"),
    "st-sharded-fewer": (True, "200KB"),
    "st-single": (True, "1GB"),
}


@pytest.mark.parametrize("first,second", [
    ("bin-sharded", "st-single"), ("bin-sharded", "bin-single"), ("st-sharded", "st-sharded-fewer"),
    ("st-sharded", "bin-sharded"), ("st-single", "bin-sharded"), ("st-sharded-fewer", "st-sharded"),
])
def test_second_save_into_a_folder_is_what_loads(two_models, tmp_path, first, second):
    a, b, tok, cfg = two_models
    d = tmp_path / "hf"
    save_hf_checkpoint(a, cfg, tok, d, *_kw(first))
    (d / "README.md").write_text("notes\n")
    before = {p.name for p in d.iterdir()}
    save_hf_checkpoint(b, cfg, tok, d, *_kw(second))
    m, _, _ = load_model(d)
    assert torch.equal(logits(m, tok), logits(b, tok))
    assert not torch.equal(logits(b, tok), logits(a, tok))
    # only the second save's weight files remain, and everything else is untouched
    weights = {p.name for p in d.iterdir() if p.name.startswith(("model", "pytorch_model"))}
    index = [p for p in weights if p.endswith(".index.json")]
    assert {p.name for p in hf_weight_files(d)} | set(index) == weights
    assert all(p.endswith(".safetensors" if LAYOUTS[second][0] else ".bin") for p in weights - set(index))
    assert {"README.md", "config.json", "ice_text.model"} <= {p.name for p in d.iterdir()} and "README.md" in before


def _kw(layout):
    safe, shard = LAYOUTS[layout]
    return shard, safe


def test_default_is_safetensors(two_models, tmp_path):
    a, _, tok, cfg = two_models
    d = save_hf_checkpoint(a, cfg, tok, tmp_path / "hf", shard_size="64KB")
    assert (d / "model.safetensors.index.json").is_file()
    assert not list(d.glob("*.bin"))
