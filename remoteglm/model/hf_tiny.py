"""Tiny random folders of the transformers families (``remoteglm.families.hf``): the real
architectures from their config classes at toy sizes, a byte-level BPE tokenizer trained on the sample captions with the special tokens the
chat templates use, the families' published chat templates, the processors' own classes, all saved as a normal HF folder, so everything
downstream takes the code path a real download takes.

    create_tiny_hf(family_named("qwen2_5_vl"), "checkpoints/qwen2.5-vl-tiny", pretrain_steps=150)

(``python -m remoteglm tiny FAMILY DIR`` on the command line.) What differs per family - config
class, special tokens, image processor, where the template file goes - the family says.
"""

from __future__ import annotations

from pathlib import Path

from remoteglm.errors import RemoteGLMError
from remoteglm.io import read_json

CORPUS = Path(__file__).resolve().parent / "assets" / "tiny_corpus.txt"
TINY_PIXELS = (28 * 28 * 4, 28 * 28 * 16)  # min / max: 4-16 LLM tokens per image, fast on a CPU
CLI_PRETRAIN_STEPS = 150
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=1024)
VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=TEXT["hidden_size"])

ASSETS = Path(__file__).resolve().parent / "assets"


def published_template(family) -> str:
    """The chat template the family's real model folder ships, byte for byte (provenance and
    sha256: assets/CHAT_TEMPLATES.md)."""
    return (ASSETS / f"{family.name}.chat_template.jinja").read_text(encoding="utf-8")


def train_tokenizer(family, texts: list[str], vocab_size: int = 1200):
    """A byte-level BPE (any text encodes) with ``family``'s special tokens, as a transformers tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = family.specials
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[AddedToken(s, special=True) for s in specials],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=family.eos_token, pad_token="<|endoftext|>",
                                   model_max_length=TEXT["max_position_embeddings"])
    return fast


def _texts() -> list[str]:
    texts = [t for t in CORPUS.read_text(encoding="utf-8").splitlines() if t.strip()]
    sample = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample_train.json"
    if sample.is_file():
        for r in read_json(sample):
            texts += [r["prompt"], r["label"]]
    return texts


def build_config(family, tok, size: str = "tiny"):
    """The family's config class at toy (or the published full) sizes, wired to ``tok``'s
    special-token ids (full size: a vocabulary larger than the tiny tokenizer's, as real)."""
    ids = {s: tok.convert_tokens_to_ids(s) for s in family.specials}
    return family.tiny_config(ids, len(tok), dict(TEXT), dict(VISION), size)


def build_image_processor(family):
    """The family's own image processor class (the PIL backend: no torchvision needed) at tiny resolution."""
    return family.tiny_image_processor(*TINY_PIXELS)


def _match_image_scale(model, family) -> None:
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


def _trained_scale(model) -> None:
    """Give the language model the weight scale of a trained one. The config's N(0, 0.02) init
    suits 4096-wide layers; at width 64 attention is near uniform and the head moves logits by
    about +-1, so LoRA (which cannot touch the head) plateaus near the uniform loss on any answer
    the pre-training did not show, e.g. box coordinates. Matrices at std 1/sqrt(fan_in) and a
    larger head let a short LoRA run fit new answers, as with the tiny VisualGLM."""
    import torch

    text = model.model.language_model
    with torch.no_grad():
        for name, w in text.named_parameters():
            if w.dim() == 2 and "embed" not in name:
                w.normal_(0.0, w.shape[1] ** -0.5)
        model.lm_head.weight.mul_(8.0)


def _pretrain(model, tok, family, steps: int, seed: int) -> None:
    """Full-parameter steps on the sample's (prompt, caption) pairs as text-only chats: a stand-in
    for a pretrained model, so a short LoRA run only has to learn which caption fits which image."""
    import random

    import torch

    from remoteglm.model.hf_folder import Processor, chat_messages

    sample = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample_train.json"
    if not sample.is_file():
        raise RemoteGLMError(f"{sample} is missing: pre-training the tiny model reads it (or pass --pretrain_steps 0)")
    proc = Processor(tok, build_image_processor(family), published_template(family), family)
    rows = []
    for r in read_json(sample):
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


def create_tiny_hf(family, out_dir: str | Path, seed: int = 0, pretrain_steps: int = 0, size: str = "tiny",
                    device: str = "cpu") -> Path:
    """Build and save a tiny ``family`` folder at ``out_dir`` (random, or briefly pre-trained on
    the sample captions with ``pretrain_steps``); returns it. ``size="full"``: the published
    sizes with random bf16 weights, built on ``device`` (benchmarks only: it talks nonsense)."""
    import torch
    import transformers as tf
    from transformers import GenerationConfig

    from remoteglm.io import write_json_atomic, write_text_atomic

    out = Path(out_dir)
    torch.manual_seed(seed)
    tok = train_tokenizer(family, _texts())
    cfg = build_config(family, tok, size)
    if size == "full":
        with torch.device(device):
            model = getattr(tf, family.model_class)._from_config(cfg, dtype=torch.bfloat16).eval()
        pretrain_steps = 0
    else:
        model = getattr(tf, family.model_class)(cfg).eval()
        _trained_scale(model)
        _match_image_scale(model, family)
    if pretrain_steps:
        _pretrain(model, tok, family, pretrain_steps, seed)
    stops = [tok.convert_tokens_to_ids(s) for s in family.stop_tokens]
    model.generation_config = GenerationConfig(eos_token_id=stops, pad_token_id=tok.pad_token_id, do_sample=False)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    del model
    tok.save_pretrained(tmp)
    # where the family's real folder keeps it (a chat_template.json or a chat_template.jinja)
    template = published_template(family)
    if family.template_file.endswith(".json"):
        write_json_atomic(tmp / family.template_file, {"chat_template": template})
    else:
        write_text_atomic(tmp / family.template_file, template)
    build_image_processor(family).save_pretrained(tmp)
    video = family.video_config(read_json(tmp / "preprocessor_config.json", require_object=True))
    if video is not None:  # as the real folder: its processor is built with a video processor
        write_json_atomic(tmp / "video_preprocessor_config.json", video, indent=2)
    tmp.replace(out) if not out.exists() else _swap(tmp, out)
    return out


def _swap(tmp: Path, out: Path) -> None:
    import shutil

    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    out.replace(old)
    tmp.replace(out)
    shutil.rmtree(old, ignore_errors=True)
