"""The tiny VisualGLM checkpoint: same architecture and file layout as visualglm-6b, toy sizes.

Used by the tests and as the default base model of ``bash finetune.sh`` on a CPU-only machine.
Random weights (sat's initialisation), so it talks nonsense until trained; deterministic per seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable

import torch

from remoteglm.errors import RemoteGLMError, cli_entry


def create_tiny_checkpoint(out_dir: str | Path, seed: int = 0, tokenizer_texts: Iterable[str] | None = None) -> Path:
    """Train the tiny tokenizer, build a random ``visualglm-tiny`` and save it in sat format with
    ``ice_text.model`` inside. Returns ``out_dir`` (loadable with ``load_model(out_dir)``).
    """
    from remoteglm.model.checkpoint import save_sat_checkpoint
    from remoteglm.model.config import get_config
    from remoteglm.model.tokenizer import ChatGLMTokenizer, train_tiny_tokenizer
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
    finally:
        torch.random.set_rng_state(state)  # do not disturb the caller's random stream
    save_sat_checkpoint(model, config, out, iteration=1, tokenizer=tok)
    return out


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Create the tiny VisualGLM checkpoint (sat format, with ice_text.model).")
    ap.add_argument("out_dir", help="directory to write (created if missing)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = create_tiny_checkpoint(args.out_dir, seed=args.seed)
    print(f"tiny checkpoint written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
