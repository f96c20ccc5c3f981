"""The tiny VisualGLM checkpoint: same architecture and file layout as visualglm-6b, toy sizes.

Two flavours, both deterministic per seed:

- random (``create_tiny_checkpoint(dir)``, what the tests use): sat's initialisation with larger
  ChatGLM matrices; it talks nonsense until trained.
- briefly pre-trained (``pretrain_steps > 0``; the default of ``remoteglm tiny visualglm DIR``,
  the base model of ``bash finetune.sh`` on a CPU-only machine): a stand-in for a pretrained model.
  Its Q-Former passes image information on, and its ChatGLM has read the sample captions (text
  only, no image), so the one-minute LoRA fine-tune only has to learn which caption fits which image.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, Sequence

import torch

from remoteglm.errors import RemoteGLMError

# The captions the CLI's tiny base reads by default (a repository checkout has them).
SAMPLE_TRAIN = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample_train.json"
CLI_PRETRAIN_STEPS = 200  # ~0.14 loss on the sample captions, ~7 s on one CPU core


def create_tiny_checkpoint(
    out_dir: str | Path,
    seed: int = 0,
    tokenizer_texts: Iterable[str] | None = None,
    pretrain_steps: int = 0,
    pretrain_data: Sequence[str | Path] | None = None,
) -> Path:
    """Train the tiny tokenizer, build a random ``visualglm-tiny`` and save it in sat format with
    ``ice_text.model`` inside. Returns ``out_dir`` (loadable with ``load_model(out_dir)``).

    ``pretrain_steps`` > 0 makes the stand-in for a pretrained model (see the module doc): the
    Q-Former is re-initialised so different images give different embeddings, then ChatGLM (its
    word embeddings, layers and head; not the image tower) trains that many full-parameter AdamW
    steps on the (prompt, label) pairs of ``pretrain_data`` (fine-tune JSON or dataset_*_zh.json
    files; default ``data/sample/sample_train.json``), laid out as in fine-tuning but with the image
    slots left as padding. The default 0 gives exactly the random checkpoint the tests are tuned to.
    """
    from remoteglm.model.saving import save_sat_checkpoint
    from remoteglm.model.config import get_config
    from remoteglm.model.tiny_tokenizer import train_tiny_tokenizer
    from remoteglm.model.tokenizer import ChatGLMTokenizer
    from remoteglm.model.visualglm import build_model

    out = Path(out_dir)
    if out.is_file():
        raise RemoteGLMError(f"{out} is a file; pass a directory for the tiny checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    tok = ChatGLMTokenizer.from_pretrained(train_tiny_tokenizer(out / "ice_text.model", texts=tokenizer_texts, seed=seed))
    config = get_config("visualglm-tiny").with_tokenizer(tok)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = build_model(config, device="cpu", dtype=torch.float32)
        # sat's N(0, 0.02) init suits 4096-wide layers. At width 64 the random ChatGLM attends almost
        # uniformly and its head moves logits by ~±1, so LoRA can learn little more than "<eop>".
        # Trained weights are far larger: ChatGLM matrices at std 1/sqrt(hidden) and a larger head
        # let the one-minute default fine-tune (and the tests) really fit the sample captions.
        with torch.no_grad():
            for name, w in model.named_parameters():
                if name.startswith("transformer.") and w.dim() == 2:
                    w.normal_(0.0, config.hidden_size ** -0.5)
            model.get_mixin("chatglm-final").lm_head.weight.mul_(8.0)
        if pretrain_steps > 0:
            _pretrain(model, tok, config, pretrain_steps, pretrain_data, seed)
    finally:
        torch.random.set_rng_state(state)  # do not disturb the caller's random stream
    save_sat_checkpoint(model, config, out, iteration=1, tokenizer=tok)
    return out


def _pretrain(model, tok, config, steps: int, data: Sequence[str | Path] | None, seed: int,
              batch_size: int = 8, lr: float = 3e-3) -> None:
    """Make the random model a stand-in for a pretrained one (see create_tiny_checkpoint)."""
    import math

    from remoteglm.data.records import load_records
    from remoteglm.model.sample import SampleEncoder, collate

    paths = [Path(p) for p in (data or [SAMPLE_TRAIN])]
    for p in paths:
        if not p.is_file():
            raise RemoteGLMError(f"{p}: no such file to pre-train the tiny model on; pass fine-tune JSON files "
                                 f"(--pretrain_data) or --pretrain_steps 0 for random weights")
    records = [r for p in paths for r in load_records(p, "train", seed)]
    encoder = SampleEncoder(tok, max_source_length=128, max_target_length=256, image_length=config.image_length)
    samples = [encoder.encode(r.prompt, r.label) for r in records]

    with torch.no_grad():
        # sat's N(0, 0.02) Q-Former barely looks at the ViT: its 32 outputs are the learned queries
        # plus ~0.3% that depends on the image, so every picture looks alike to ChatGLM and LoRA
        # cannot tell them apart. At std 1/sqrt(fan_in) the image moves them by ~30%, like a trained one.
        for name, w in model.image_encoder.qformer.named_parameters():
            if name.startswith("transformer.layers.") and w.dim() == 2:
                w.normal_(0.0, w.shape[1] ** -0.5)

    params = [p for name, p in model.named_parameters() if not name.startswith("mixins.eva.")]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)
    order = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # toy tensors: one thread is faster, and the result cannot depend on the thread count
    model.train()
    try:
        # sat's gelu is TorchScript, whose profiling executor swaps in a fused kernel (other rounding)
        # after its first calls in a process; unoptimised, the result does not depend on what ran before.
        with torch.jit.optimized_execution(False):
            for step in range(steps):
                for group in opt.param_groups:  # cosine decay to 0
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
                picked = torch.randint(len(samples), (batch_size,), generator=order).tolist()
                batch = collate([{"input_ids": samples[i].input_ids, "labels": samples[i].labels} for i in picked],
                                tok.pad_token_id)
                logits = model(input_ids=batch["input_ids"])[0]
                loss = loss_fn(logits[:, :-1].reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
        opt.zero_grad(set_to_none=True)
        model.eval()
    print(f"pre-trained the tiny ChatGLM {steps} steps on {len(records)} captions of "
          f"{', '.join(p.name for p in paths)}: loss {loss.item():.3f}", file=sys.stderr)
