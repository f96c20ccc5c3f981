"""Convert a VisualGLM checkpoint between sat and HF layouts.

    python -m remoteglm.model.convert --to hf  SAT_DIR HF_DIR  [--tokenizer ice_text.model] [--shard-size 2GB] [--bin]
    python -m remoteglm.model.convert --to sat HF_DIR  SAT_DIR [--iteration 1]
    python -m remoteglm.model.convert --to sat OLD_SAT_DIR SAT_DIR   (a sat <= 0.4.0 checkpoint, rewritten once)

Works on the state dict alone (no model is built), so it is fast, keeps the stored dtype and
is bit-exact both ways; sat -> HF -> sat gives back identical tensors. LoRA layers (a sat
fine-tune) are merged into the weights on the way to HF, which has no LoRA layers. HF output is
``model*.safetensors`` unless ``--bin`` asks for ``pytorch_model*.bin``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.options import add_trust_arg


def convert(src: str | Path, dst: str | Path, to: str, tokenizer=None, shard_size: str | int = "2GB",
            iteration: int = 1, safe_serialization: bool = True) -> Path:
    """Convert ``src`` (sat or HF directory) into format ``to`` ("hf" or "sat") at ``dst``."""
    from remoteglm.model.checkpoint import TOKENIZER_FILE, read_checkpoint, resolve_tokenizer, save_hf_checkpoint, save_sat_checkpoint
    from remoteglm.model.lora import lora_layers_in, merge_lora_state_dict

    if to not in ("hf", "sat"):
        raise RemoteGLMError(f"--to must be hf or sat, got {to!r}")
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise RemoteGLMError(f"{dst} exists and is not empty: choose a new output directory")
    ckpt = read_checkpoint(src)
    if ckpt.fmt == to and not (to == "sat" and ckpt.upgraded_from):  # an old sat layout is worth rewriting
        raise RemoteGLMError(f"{ckpt.directory} is already in {to} format")
    tok = None
    if tokenizer is not None or (ckpt.directory / TOKENIZER_FILE).is_file():
        tok = resolve_tokenizer(ckpt.directory, tokenizer, ckpt.config)
    elif to == "hf":
        resolve_tokenizer(ckpt.directory, None)  # raises the "pass --tokenizer" error
    sd, config = ckpt.state_dict, ckpt.config
    if to == "hf":
        if lora_layers_in(sd) is not None:
            print(f"merging LoRA (rank {config.lora_rank}) into the weights: HF VisualGLM has no LoRA layers", file=sys.stderr)
            sd = merge_lora_state_dict(sd, lora_alpha=config.lora_alpha)
            config = replace(config, use_lora=False, use_qlora=False)
        return save_hf_checkpoint(sd, config, tok, dst, shard_size=shard_size, safe_serialization=safe_serialization)
    return save_sat_checkpoint(sd, config, dst, iteration=iteration, tokenizer=tok)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m remoteglm.model.convert", description=__doc__.split("\n\n")[0])
    ap.add_argument("--to", required=True, choices=["hf", "sat"], help="output format")
    ap.add_argument("src", help="checkpoint directory to read (sat or HF)")
    ap.add_argument("dst", help="new directory to write")
    ap.add_argument("--tokenizer", help="ice_text.model to include (default: the one in SRC)")
    ap.add_argument("--shard-size", default="2GB", help="HF shard size, e.g. 2GB or 500MB (default 2GB)")
    fmt = ap.add_mutually_exclusive_group()
    fmt.add_argument("--safetensors", dest="bin", action="store_false", help="HF shards as model*.safetensors (the default)")
    fmt.add_argument("--bin", action="store_true", help="HF shards as pytorch_model*.bin (pickle) instead of safetensors")
    ap.set_defaults(bin=False)
    ap.add_argument("--iteration", type=int, default=1, help="sat iteration folder name, >= 1 as sat's loader requires (default 1)")
    add_trust_arg(ap)
    args = ap.parse_args(argv)
    from remoteglm.model.checkpoint import trust_checkpoints

    trust_checkpoints(args.trust_checkpoint)
    out = convert(args.src, args.dst, args.to, tokenizer=args.tokenizer, shard_size=args.shard_size,
                  iteration=args.iteration, safe_serialization=not args.bin)
    print(f"wrote {args.to} checkpoint to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
