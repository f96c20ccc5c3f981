"""``remoteglm quantize SRC DST --bits 4|8``: a saved quantised copy of a checkpoint, so later
starts load it directly (how, and whether, is the family's: the transformers families quantise
as they load instead)."""

from __future__ import annotations

import sys
from pathlib import Path

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.options import Parser, add_trust_arg


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="remoteglm quantize", description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="float checkpoint directory (sat or HF; LoRA runs too)")
    ap.add_argument("dst", help="output directory (sat format)")
    ap.add_argument("--bits", type=int, choices=(4, 8), required=True)
    ap.add_argument("--tokenizer", help="ice_text.model (default: the one in SRC)")
    ap.add_argument("--device", default=None, help="where to quantise: cuda (default if available) or cpu")
    ap.add_argument("--merge_lora", action="store_true", help="fold LoRA pairs into the weights before quantising")
    ap.add_argument("--lm_head_int8", action="store_true", help="also store the output head in int8")
    add_trust_arg(ap)
    args = ap.parse_args(argv)
    from remoteglm.compat import single_process_env
    from remoteglm.model.unpickle import trust_checkpoints
    from remoteglm.registry import family_of

    single_process_env()
    trust_checkpoints(args.trust_checkpoint)
    src, dst = Path(args.src), Path(args.dst)
    if dst.resolve() == src.resolve():
        raise RemoteGLMError("dst must differ from src: the float checkpoint is kept")
    family_of(src).quantize(src, dst, args.bits, tokenizer=args.tokenizer, device=args.device,
                            merge_lora=args.merge_lora, lm_head_int8=args.lm_head_int8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
