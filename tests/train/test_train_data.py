"""The VisualGLM fine-tune dataset (remoteglm.train.data): bad-image handling and the leak check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from remoteglm.data.records import load_records
from remoteglm.model.sample import SampleEncoder, collate
from remoteglm.model.tokenizer import ChatGLMTokenizer
from remoteglm.train.data import FinetuneDataset

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"


@pytest.fixture(scope="module")
def tok(tiny_checkpoint):
    return ChatGLMTokenizer.from_pretrained(tiny_checkpoint)


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
