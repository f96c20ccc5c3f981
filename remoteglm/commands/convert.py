"""Convert a VisualGLM checkpoint between sat and HF layouts, bit-exact both ways (LoRA layers are
merged on the way to HF, which has none): ``remoteglm convert --to hf|sat SRC DST``."""

from __future__ import annotations

import sys

from remoteglm.errors import cli_entry
from remoteglm.options import Parser, add_trust_arg


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="remoteglm convert", description=__doc__)
    ap.add_argument("--to", required=True, choices=["hf", "sat"], help="output format")
    ap.add_argument("src", help="checkpoint directory to read (sat or HF)")
    ap.add_argument("dst", help="new directory to write")
    ap.add_argument("--tokenizer", help="ice_text.model to include (default: the one in SRC)")
    ap.add_argument("--shard_size", default="2GB", help="HF shard size, e.g. 2GB or 500MB (default 2GB)")
    fmt = ap.add_mutually_exclusive_group()
    fmt.add_argument("--safetensors", dest="bin", action="store_false", help="HF shards as model*.safetensors (the default)")
    fmt.add_argument("--bin", action="store_true", help="HF shards as pytorch_model*.bin (pickle) instead of safetensors")
    ap.set_defaults(bin=False)
    ap.add_argument("--iteration", type=int, default=1, help="sat iteration folder name, >= 1 as sat's loader requires (default 1)")
    add_trust_arg(ap)
    args = ap.parse_args(argv)
    from remoteglm.model.convert import convert
    from remoteglm.model.unpickle import trust_checkpoints

    trust_checkpoints(args.trust_checkpoint)
    out = convert(args.src, args.dst, args.to, tokenizer=args.tokenizer, shard_size=args.shard_size,
                  iteration=args.iteration, safe_serialization=not args.bin)
    print(f"wrote {args.to} checkpoint to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
