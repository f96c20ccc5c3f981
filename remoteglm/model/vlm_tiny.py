"""Tiny random GLM-4.1V / Qwen2.5-VL folders: the real architectures from their config classes at
toy sizes, a byte-level BPE tokenizer trained on the sample captions with the special tokens the
chat templates use, the families' published chat templates, the processors' own classes, all saved as a normal HF folder, so everything
downstream takes the code path a real download takes.

    python -m remoteglm.model.vlm_tiny qwen2_5_vl checkpoints/qwen2.5-vl-tiny
    python -m remoteglm.model.vlm_tiny glm4v checkpoints/glm4.1v-tiny
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from remoteglm.errors import RemoteGLMError, cli_entry

CORPUS = Path(__file__).resolve().parent / "assets" / "tiny_corpus.txt"
TINY_PIXELS = (28 * 28 * 4, 28 * 28 * 16)  # min / max: 4-16 LLM tokens per image, fast on a CPU
CLI_PRETRAIN_STEPS = 150
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=1024)

# Published sizes (config.json of Qwen/Qwen2.5-VL-7B-Instruct and zai-org/GLM-4.1V-9B-Thinking), for
# randomly initialised full-size benchmarks: ``create_tiny_vlm(family, out, size="full")``.
FULL = {
    "qwen2_5_vl": dict(
        text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, max_position_embeddings=128000, vocab_size=152064,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                    fullatt_block_indexes=[7, 15, 23, 31], window_size=112)),
    "glm4v": dict(
        text=dict(hidden_size=4096, intermediate_size=13696, num_hidden_layers=40, num_attention_heads=32,
                  num_key_value_heads=2, max_position_embeddings=65536, vocab_size=151552,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5,
                                   "mrope_section": [8, 12, 12]}),
        vision=dict(depth=24, hidden_size=1536, intermediate_size=13696, num_heads=12, out_hidden_size=4096,
                    image_size=336)),
}

# Special tokens in the published order of each family's tokenizer (ids follow the vocabulary).
SPECIALS = {
    "qwen2_5_vl": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                   "<|image_pad|>", "<|video_pad|>"],
    "glm4v": ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
              "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
              "<|end_of_video|>", "<|image|>", "<|video|>"],
}

ASSETS = Path(__file__).resolve().parent / "assets"


def published_template(family: str) -> str:
    """The chat template the family's real model folder ships, byte for byte (provenance and
    sha256: assets/CHAT_TEMPLATES.md)."""
    return (ASSETS / f"{family}.chat_template.jinja").read_text(encoding="utf-8")


def train_tokenizer(family: str, texts: list[str], vocab_size: int = 1200):
    """A byte-level BPE (any text encodes) with ``family``'s special tokens, as a transformers tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[AddedToken(s, special=True) for s in specials],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    eos = "<|im_end|>" if family.startswith("qwen") else "<|endoftext|>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token="<|endoftext|>",
                                   model_max_length=TEXT["max_position_embeddings"])
    return fast


def _texts() -> list[str]:
    import json

    texts = [t for t in CORPUS.read_text(encoding="utf-8").splitlines() if t.strip()]
    sample = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample_train.json"
    if sample.is_file():
        for r in json.loads(sample.read_text(encoding="utf-8")):
            texts += [r["prompt"], r["label"]]
    return texts


def build_config(family: str, tok, size: str = "tiny"):
    """The family's config class at toy (or the published full) sizes, wired to ``tok``'s
    special-token ids (full size: a vocabulary larger than the tiny tokenizer's, as real)."""
    ids = {s: tok.convert_tokens_to_ids(s) for s in SPECIALS[family]}
    vocab = len(tok)
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        text = dict(TEXT, vocab_size=vocab, rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                    bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=TEXT["hidden_size"],
                      fullatt_block_indexes=[1], window_size=112)
        if size == "full":
            text, vision = {**text, **FULL[family]["text"]}, FULL[family]["vision"]
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                                video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                                vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    from transformers import Glm4vConfig

    text = dict(TEXT, vocab_size=vocab, pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5, "mrope_section": [2, 1, 1]})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=TEXT["hidden_size"],
                  image_size=112)
    if size == "full":
        text, vision = {**text, **FULL[family]["text"]}, FULL[family]["vision"]
    return Glm4vConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image|>"], video_token_id=ids["<|video|>"],
                       image_start_token_id=ids["<|begin_of_image|>"], image_end_token_id=ids["<|end_of_image|>"],
                       video_start_token_id=ids["<|begin_of_video|>"], video_end_token_id=ids["<|end_of_video|>"],
                       tie_word_embeddings=False)


def build_image_processor(family: str):
    """The family's own image processor class (the PIL backend: no torchvision needed) at tiny resolution."""
    import transformers as tf

    lo, hi = TINY_PIXELS
    size = {"shortest_edge": lo, "longest_edge": hi}
    if family == "glm4v":  # its resize counts an image as two frames: twice the budget, the same tokens
        return tf.Glm4vImageProcessorPil(size={"shortest_edge": 2 * lo, "longest_edge": 2 * hi})
    return tf.Qwen2VLImageProcessorPil(size=size)


def _match_image_scale(model, family: str) -> None:
    """Scale the random merger's output layer so image embeddings are as large as token
    embeddings. At toy sizes GLM-4.1V's initialisation makes them ~20x smaller, and the language
    model then cannot tell images apart; a real checkpoint's merger is trained for this."""
    import torch
    from PIL import Image

    ip = build_image_processor(family)
    img = Image.effect_noise((112, 112), 64).convert("RGB")
    pix = ip(images=[img], return_tensors="pt")
    with torch.no_grad():
        out = model.model.get_image_features(pixel_values=pix["pixel_values"], image_grid_thw=pix["image_grid_thw"])
        emb = getattr(out, "pooler_output", out)
        emb = torch.cat(list(emb)) if isinstance(emb, (list, tuple)) else emb
        want = model.get_input_embeddings().weight.std()
        last = [m for m in model.model.visual.merger.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.mul_(want / emb.std())
        if last.bias is not None:
            last.bias.mul_(want / emb.std())


def _pretrain(model, tok, family: str, steps: int, seed: int) -> None:
    """Full-parameter steps on the sample's (prompt, caption) pairs as text-only chats: a stand-in
    for a pretrained model, so a short LoRA run only has to learn which caption fits which image."""
    import json
    import random

    import torch

    from remoteglm.model.vlm import FAMILIES, Processor, chat_messages

    sample = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample_train.json"
    if not sample.is_file():
        raise RemoteGLMError(f"{sample} is missing: pre-training the tiny model reads it (or pass --pretrain_steps 0)")
    proc = Processor(tok, build_image_processor(family), published_template(family), FAMILIES[family])
    rows = []
    for r in json.loads(sample.read_text(encoding="utf-8")):
        prompt = proc.encode(proc.render(chat_messages(r["prompt"], image=False), True))
        answer = tok(r["label"], add_special_tokens=False)["input_ids"] + [proc.stop_ids[0]]
        rows.append((prompt + answer, [-100] * len(prompt) + answer))
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = rng.sample(rows, min(8, len(rows)))
        n = max(len(i) for i, _ in batch)
        ids = torch.tensor([i + [tok.pad_token_id] * (n - len(i)) for i, _ in batch])
        lab = torch.tensor([lb + [-100] * (n - len(lb)) for _, lb in batch])
        mask = torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i, _ in batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()


def create_tiny_vlm(family: str, out_dir: str | Path, seed: int = 0, pretrain_steps: int = 0, size: str = "tiny",
                    device: str = "cpu") -> Path:
    """Build and save a tiny ``family`` folder at ``out_dir`` (random, or briefly pre-trained on
    the sample captions with ``pretrain_steps``); returns it. ``size="full"``: the published
    sizes with random bf16 weights, built on ``device`` (benchmarks only: it talks nonsense)."""
    if family not in SPECIALS:
        raise RemoteGLMError(f"unknown family {family!r}: use one of {', '.join(SPECIALS)}")
    import torch
    import transformers as tf
    from transformers import GenerationConfig

    from remoteglm.io import write_json_atomic
    from remoteglm.model.vlm import FAMILIES

    out = Path(out_dir)
    torch.manual_seed(seed)
    tok = train_tokenizer(family, _texts())
    cfg = build_config(family, tok, size)
    if size == "full":
        with torch.device(device):
            model = getattr(tf, FAMILIES[family].model_class)._from_config(cfg, dtype=torch.bfloat16).eval()
        pretrain_steps = 0
    else:
        model = getattr(tf, FAMILIES[family].model_class)(cfg).eval()
        _match_image_scale(model, family)
    if pretrain_steps:
        _pretrain(model, tok, family, pretrain_steps, seed)
    stops = [tok.convert_tokens_to_ids(s) for s in FAMILIES[family].stop_tokens]
    model.generation_config = GenerationConfig(eos_token_id=stops, pad_token_id=tok.pad_token_id, do_sample=False)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    del model
    tok.save_pretrained(tmp)
    # where the real folders keep it: Qwen2.5-VL a chat_template.json, GLM-4.1V a chat_template.jinja
    template = published_template(family)
    if family == "qwen2_5_vl":
        write_json_atomic(tmp / "chat_template.json", {"chat_template": template})
    else:
        (tmp / "chat_template.jinja").write_text(template, encoding="utf-8")
    build_image_processor(family).save_pretrained(tmp)
    tmp.replace(out) if not out.exists() else _swap(tmp, out)
    return out


def _swap(tmp: Path, out: Path) -> None:
    import shutil

    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    out.replace(old)
    tmp.replace(out)
    shutil.rmtree(old, ignore_errors=True)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("family", choices=sorted(SPECIALS))
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain_steps", type=int, default=CLI_PRETRAIN_STEPS,
                    help=f"full-parameter steps on the sample captions; 0 = random weights [{CLI_PRETRAIN_STEPS}]")
    a = ap.parse_args(argv)
    from remoteglm.compat import quiet_warnings

    quiet_warnings()
    if a.pretrain_steps < 0:
        raise RemoteGLMError(f"--pretrain_steps must be >= 0, got {a.pretrain_steps}")
    print(create_tiny_vlm(a.family, a.out_dir, a.seed, a.pretrain_steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
