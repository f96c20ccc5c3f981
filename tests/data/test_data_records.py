"""Fine-tune records (remoteglm.data.records): fine-tune JSON lists and Chinese Karpathy datasets,
one clear line for a bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remoteglm.data.records import load_records
from remoteglm.errors import RemoteGLMError

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"


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
