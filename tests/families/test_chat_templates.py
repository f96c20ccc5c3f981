"""Each family's prompts and training samples under the chat template its real model folder
ships (the published text, checked by sha256; provenance in remoteglm/model/assets/CHAT_TEMPLATES.md).
The expected renderings below are written out by hand from the published layouts, not computed
by our code: a repr of a message part, a system prompt glued onto the question, or a label that
is not exactly the answer fails here."""

import hashlib
from pathlib import Path

import pytest

from remoteglm.model.hf_folder import Processor, chat_messages, load_processor
from remoteglm.model.hf_tiny import _texts, build_image_processor, train_tokenizer
from remoteglm.registry import family_named
from remoteglm.data.records import Record
from remoteglm.train.hf_data import HFEncoder
from tests.families.conftest import HF_FAMILIES

ASSETS = Path(__file__).resolve().parents[2] / "remoteglm" / "model" / "assets"
PUBLISHED = {  # sha256 of the raw template text of Qwen/Qwen2.5-VL-7B-Instruct, zai-org/GLM-4.1V-9B-Thinking, Qwen/Qwen3-VL-8B-Instruct
    "qwen2_5_vl": "a0bc6f6fc7a29a80017a433e8f03a1cc1236e838a944a2d034295a60c4f2fddb",
    "glm4v": "847603d3ed14387a2b45c197f8d07ddee0f9938051549c727cbc894facfea78b",
    "qwen3_vl": "3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4",
}
Q1, A1, Q2, A2, SYS = "描述这张图片。", "一个小镇。", "有几条道路？", "两条道路。", "你是遥感影像专家。"
IMG = {"qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>", "glm4v": "<|begin_of_image|><|image|><|end_of_image|>",
       "qwen3_vl": "<|vision_start|><|image_pad|><|vision_end|>"}
# What the published templates render (transformers' trim_blocks / lstrip_blocks), by hand:
PROMPT = {
    "qwen2_5_vl": (f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{IMG['qwen2_5_vl']}{Q1}"
                   f"<|im_end|>\n<|im_start|>assistant\n{A1}<|im_end|>\n<|im_start|>user\n{Q2}<|im_end|>\n"
                   "<|im_start|>assistant\n"),
    "glm4v": f"[gMASK]<sop><|user|>\n{IMG['glm4v']}{Q1}<|assistant|>\n{A1}<|user|>\n{Q2}<|assistant|>\n",
    # Qwen3-VL's template adds no system prompt of its own
    "qwen3_vl": (f"<|im_start|>user\n{IMG['qwen3_vl']}{Q1}<|im_end|>\n<|im_start|>assistant\n{A1}<|im_end|>\n"
                 f"<|im_start|>user\n{Q2}<|im_end|>\n<|im_start|>assistant\n"),
}
WITH_SYSTEM = {
    "qwen2_5_vl": f"<|im_start|>system\n{SYS}<|im_end|>\n<|im_start|>user\n{IMG['qwen2_5_vl']}{Q1}<|im_end|>\n<|im_start|>assistant\n",
    "glm4v": f"[gMASK]<sop><|system|>\n{SYS}<|user|>\n{IMG['glm4v']}{Q1}<|assistant|>\n",
    "qwen3_vl": f"<|im_start|>system\n{SYS}<|im_end|>\n<|im_start|>user\n{IMG['qwen3_vl']}{Q1}<|im_end|>\n<|im_start|>assistant\n",
}
ANSWER = {"qwen2_5_vl": f"{A2}<|im_end|>\n", "glm4v": f"{A2}<|endoftext|>", "qwen3_vl": f"{A2}<|im_end|>\n"}


def published(family: str) -> str:
    text = (ASSETS / f"{family}.chat_template.jinja").read_bytes()
    assert hashlib.sha256(text).hexdigest() == PUBLISHED[family]
    return text.decode("utf-8")


@pytest.fixture(scope="module", params=HF_FAMILIES)
def proc(request):
    fam = family_named(request.param)
    tok = train_tokenizer(fam, _texts()[:200], vocab_size=600)
    return Processor(tok, build_image_processor(fam), published(fam.name), fam)


def test_the_package_ships_the_published_templates_and_the_tiny_folders_use_them(hf_bases):
    for family in HF_FAMILIES:
        assert load_processor(hf_bases[family], family_named(family)).chat_template == published(family)


def _text(proc, ids) -> str:
    """Decoded ids with each run of image tokens shown as one placeholder."""
    out, prev = [], None
    for t in ids:
        if not (t == proc.image_token_id == prev):
            out.append(t)
        prev = t
    return proc.tokenizer.decode(out, skip_special_tokens=False)


def test_a_training_sample_is_the_published_layout_with_the_loss_on_the_answer_only(proc):
    from PIL import Image

    family = proc.family.name
    pix = proc.images([Image.new("RGB", (120, 90), "green")])
    rec = Record(img="x.png", prompt=Q2, label=A2, history=[(Q1, A1)])
    item = HFEncoder(proc).encode(rec, pix["image_grid_thw"])
    ids, labels = item["input_ids"], item["labels"]
    n = sum(1 for lb in labels if lb == -100)
    assert _text(proc, ids[:n]) == PROMPT[family]
    assert proc.tokenizer.decode(labels[n:], skip_special_tokens=False) == ANSWER[family]
    assert all(lb == -100 for lb in labels[:n]) and labels[n:] == ids[n:]
    assert ids.count(proc.image_token_id) == proc.tokens_for(120, 90)


def test_serving_prompts_put_the_system_message_in_its_role_and_never_a_repr(proc):
    family = proc.family.name
    assert proc.render(chat_messages(Q1, system=SYS), add_generation_prompt=True) == WITH_SYSTEM[family]
    text = proc.render(chat_messages(Q2, [(Q1, A1)], image=False, system=SYS), add_generation_prompt=True)
    assert "{'" not in text and "[{" not in text and text.count(SYS) == 1 and A1 in text
