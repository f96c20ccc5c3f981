"""The tiny checkpoint's two flavours: random (the tests' fixture) and briefly pre-trained (the
CLI's, the default job's base)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from remoteglm.model.checkpoint import load_model
from remoteglm.model.layout import sat_weights_file
from remoteglm.model.image import preprocess_image
from remoteglm.commands.tiny import main
from remoteglm.model.tiny import create_tiny_checkpoint

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
IMAGES = [SAMPLE / "images" / n for n in ("s2_farmland.png", "s2_town.png", "s2_ocean.png", "SOAP_031.png")]


def _weights(d: Path) -> dict:
    return torch.load(sat_weights_file(d), map_location="cpu", weights_only=False)["module"]


def _image_spread(model) -> float:
    """How much the image embeddings differ between sample images, relative to their size."""
    e = torch.stack([model.encode_image(preprocess_image(p))[0] for p in IMAGES]).flatten(1)
    return float((e - e.mean(0)).norm(dim=1).mean() / e.norm(dim=1).mean())


@pytest.fixture(scope="module")
def short_pretrained(tmp_path_factory) -> Path:
    return create_tiny_checkpoint(tmp_path_factory.mktemp("pre") / "tiny", pretrain_steps=20)


def test_default_is_random_and_reads_no_data(tmp_path, tiny_checkpoint):
    # pretrain_steps=0: no caption file is needed, and the weights are the fixture's (same seed)
    out = create_tiny_checkpoint(tmp_path / "tiny", pretrain_data=[tmp_path / "missing.json"])
    a, b = _weights(out), _weights(tiny_checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretraining_is_deterministic_and_leaves_the_vision_tower_alone(tmp_path, short_pretrained, tiny_checkpoint):
    again = _weights(create_tiny_checkpoint(tmp_path / "tiny", pretrain_steps=20))
    first = _weights(short_pretrained)
    assert all(torch.equal(first[k], again[k]) for k in first)
    rand = _weights(tiny_checkpoint)
    changed = {k for k in first if not torch.equal(first[k], rand[k])}
    assert "transformer.word_embeddings.weight" in changed and "mixins.chatglm-final.lm_head.weight" in changed
    vision = {k for k in changed if k.startswith("mixins.eva.")}
    # only the Q-Former's matrices are re-initialised; ViT and glm_proj are the random ones
    assert vision and all(".qformer.transformer.layers." in k for k in vision), sorted(vision)[:5]


def test_pretrained_images_look_different_to_chatglm(short_pretrained, tiny_checkpoint):
    with torch.no_grad():
        rand = _image_spread(load_model(tiny_checkpoint)[0])
        pre = _image_spread(load_model(short_pretrained)[0])
    assert rand < 0.01  # sat's init: all images give (almost) the same embeddings
    assert pre > 0.1, pre


def test_cli_pretrains_and_refuses_missing_data(tmp_path, capsys):
    """``remoteglm tiny visualglm DIR`` (in-process)."""
    assert main(["visualglm", str(tmp_path / "a"), "--pretrain_steps", "2", "--pretrain_data", str(tmp_path / "nope.json")]) == 2
    assert "nope.json: no such file" in capsys.readouterr().err
    assert main(["visualglm", str(tmp_path / "b"), "--pretrain_steps", "-1"]) == 2
    assert main(["visualglm", str(tmp_path / "c"), "--pretrain_steps", "3"]) == 0
    assert "pre-trained the tiny ChatGLM 3 steps on 42 captions" in capsys.readouterr().err
    assert (tmp_path / "c" / "latest").is_file()
