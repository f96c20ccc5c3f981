"""Every transformers family's tiny folder is an ordinary HF folder (read back by transformers'
own Auto classes), and the image-token arithmetic agrees with the models' own image processors."""

import json
import shutil

import pytest
import torch
from PIL import Image

from remoteglm.errors import RemoteGLMError
from remoteglm.model.hf_folder import chat_messages, image_tokens, load_hf, load_processor
from remoteglm.registry import family_named
from tests.families.conftest import HF_FAMILIES, SAMPLE

SAMPLE_IMG = SAMPLE / "images" / "s2_farmland.png"


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_tiny_folder_loads_through_transformers_auto_classes(hf_bases, family):
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    d, fam = hf_bases[family], family_named(family)
    cfg = AutoConfig.from_pretrained(d, local_files_only=True)
    assert cfg.model_type == family
    model = AutoModelForImageTextToText.from_pretrained(d, local_files_only=True)
    assert type(model).__name__ == fam.model_class
    tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    assert tok.convert_tokens_to_ids(fam.image_token) == cfg.image_token_id
    assert type(AutoImageProcessor.from_pretrained(d, local_files_only=True)).__name__.startswith(
        ("Qwen2VLImageProcessor", "Glm4vImageProcessor"))
    # where the real folders keep their template: Qwen2.5-VL and Qwen3-VL a chat_template.json, GLM-4.1V a .jinja
    assert (d / {"qwen2_5_vl": "chat_template.json", "glm4v": "chat_template.jinja",
                 "qwen3_vl": "chat_template.json"}[family]).is_file()
    assert (d / "model.safetensors").is_file()


@pytest.mark.parametrize("family", HF_FAMILIES)
@pytest.mark.parametrize("size", [(256, 256), (640, 200), (50, 50), (2000, 900)])
@pytest.mark.parametrize("pixels", [(None, None), (28 * 28 * 4, 28 * 28 * 64)])
def test_image_token_count_agrees_with_the_image_processor(hf_bases, family, size, pixels):
    proc = load_processor(hf_bases[family], family_named(family), *pixels)
    out = proc.images([Image.new("RGB", size, (90, 120, 60))])
    grid = out["image_grid_thw"][0]
    want = int(grid.prod()) // 4
    lo, hi = proc.image_processor.size["shortest_edge"], proc.image_processor.size["longest_edge"]
    assert image_tokens(*size, lo, hi, family_named(family)) == want
    ids = proc.encode(proc.render(chat_messages("描述这张图片。"), True), out["image_grid_thw"])
    assert ids.count(proc.image_token_id) == want
    assert out["pixel_values"].shape[0] == int(grid.prod())


def test_resolution_setting_changes_the_tokens_and_bad_prompts_fail(hf_bases):
    qwen = family_named("qwen2_5_vl")
    small = load_processor(hf_bases["qwen2_5_vl"], qwen, 28 * 28, 28 * 28 * 4)
    big = load_processor(hf_bases["qwen2_5_vl"], qwen, 28 * 28 * 16, 28 * 28 * 64)
    img = [Image.new("RGB", (448, 448))]
    assert int(small.images(img)["image_grid_thw"].prod()) // 4 == 4
    assert int(big.images(img)["image_grid_thw"].prod()) // 4 == 64
    with pytest.raises(RemoteGLMError, match="min_pixels"):
        load_processor(hf_bases["qwen2_5_vl"], qwen, 5000, 4000)
    with pytest.raises(RemoteGLMError, match="no image was given"):
        small.encode(small.render(chat_messages("q"), True))


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_int8_and_int4_loading_through_bitsandbytes(hf_bases, family):
    from PIL import Image

    model, proc = load_hf(hf_bases[family], family_named(family), quant=4)
    import bitsandbytes as bnb

    lm = [m for n, m in model.named_modules() if "language_model" in n and isinstance(m, bnb.nn.Linear4bit)]
    assert lm and not any(isinstance(m, bnb.nn.Linear4bit) for n, m in model.named_modules() if ".visual." in n)
    im = proc.images([Image.new("RGB", (128, 128))])
    ids = proc.encode(proc.render(chat_messages("描述这张图片。"), True), im["image_grid_thw"])
    out = model(input_ids=torch.tensor([ids]), mm_token_type_ids=torch.tensor([proc.token_types(ids)]), **im)
    assert torch.isfinite(out.logits).all()
    m8, _ = load_hf(hf_bases[family], family_named(family), quant=8)
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in m8.modules())


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_training_samples_put_the_loss_on_the_answer_only(hf_bases, family):
    """The prompt of a sample is what serving sends (the model's own template, earlier turns of a
    conversation record included); labels are -100 on it and the answer + a stop token after it."""
    from remoteglm.data.records import Record
    from remoteglm.model.sample import IGNORE_INDEX
    from remoteglm.train.hf_data import HFEncoder, collate

    proc = load_processor(hf_bases[family], family_named(family))
    rec = Record(SAMPLE_IMG, "有几条道路？", "一条笔直的道路。", history=(("描述这张图片。", "农田。"),))
    pix = proc.images([Image.open(SAMPLE_IMG).convert("RGB")])
    item = HFEncoder(proc, 512).encode(rec, pix["image_grid_thw"])
    serving = proc.encode(proc.render(chat_messages(rec.prompt, rec.history, True), True), pix["image_grid_thw"])
    ids, labels = item["input_ids"], item["labels"]
    assert ids[:len(serving)] == serving and set(labels[:len(serving)]) == {IGNORE_INDEX}
    answer = [t for t in labels if t != IGNORE_INDEX]
    assert answer == ids[len(serving):] and any(t in proc.stop_ids for t in answer)
    assert proc.tokenizer.decode(answer, skip_special_tokens=True).strip() == rec.label
    assert "农田。" in proc.tokenizer.decode(serving)  # the earlier turn is in the prompt, not in the loss
    assert item["mm_token_type_ids"] == [1 if t == proc.image_token_id else 0 for t in ids]
    cut = HFEncoder(proc, len(serving) + 3).encode(rec, pix["image_grid_thw"])
    assert cut["truncated"] and len(cut["input_ids"]) == len(serving) + 3 and cut["labels"][-1] in proc.stop_ids
    with pytest.raises(RemoteGLMError, match="lower --max_pixels or raise --max_length"):
        HFEncoder(proc, len(serving)).encode(rec, pix["image_grid_thw"])
    b = collate([dict(item, **pix), dict(cut, **pix)], proc.tokenizer.pad_token_id)
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape == (2, len(ids))
    assert b["attention_mask"][1].sum() == len(cut["input_ids"]) and (b["labels"][1, len(cut["input_ids"]):] == -100).all()
    assert b["pixel_values"].shape[0] == 2 * pix["pixel_values"].shape[0] and b["image_grid_thw"].shape == (2, 3)


def test_damaged_folders_are_one_line_each(hf_bases, tmp_path):
    src = hf_bases["glm4v"]
    cases = {}
    for name in ("lfs", "truncated", "missing_shard", "no_template"):
        d = tmp_path / name
        shutil.copytree(src, d)
        cases[name] = d
    (cases["lfs"] / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12345\n")
    w = cases["truncated"] / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    (cases["missing_shard"] / "model.safetensors").rename(cases["missing_shard"] / "model-00001-of-00002.safetensors")
    (cases["missing_shard"] / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (cases["no_template"] / "chat_template.jinja").unlink()
    cfg = json.loads((cases["no_template"] / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (cases["no_template"] / "tokenizer_config.json").write_text(json.dumps(cfg))
    want = {"lfs": "Git LFS pointer", "truncated": "is truncated", "missing_shard": "shard model-00002-of-00002",
            "no_template": "no chat template"}
    for name, d in cases.items():
        with pytest.raises(RemoteGLMError, match=want[name]):
            load_hf(d, family_named("glm4v"))


@pytest.mark.parametrize("family, billions", [("qwen2_5_vl", 8.29), ("glm4v", 10.29), ("qwen3_vl", 8.77)])
def test_full_size_registry_matches_the_published_models(family, billions):
    """The sizes the GPU benchmark builds (on the meta device here: no memory): Qwen2.5-VL-7B has
    8.29 B parameters, GLM-4.1V-9B 10.29 B, Qwen3-VL-8B 8.77 B, as their model cards say."""
    import transformers as tf

    from remoteglm.model.hf_tiny import _texts, build_config, train_tokenizer

    fam = family_named(family)
    cfg = build_config(fam, train_tokenizer(fam, _texts()[:100], vocab_size=400), "full")
    with torch.device("meta"):
        model = getattr(tf, fam.model_class)._from_config(cfg, dtype=torch.bfloat16)
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == billions
