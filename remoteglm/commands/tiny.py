"""``remoteglm tiny FAMILY DIR``: a tiny model of a family's real architecture, saved in the real
on-disk format (briefly pre-trained on the sample captions unless --pretrain_steps 0), for tests
and for trying the pipeline without downloading weights."""

from __future__ import annotations

import sys
from pathlib import Path

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.options import Parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    from remoteglm.registry import families, family_named

    names = [f.name for f in families()]
    ap = Parser(prog="remoteglm tiny", description=__doc__.split("\n\n")[0])
    ap.add_argument("family", choices=names)
    ap.add_argument("out_dir", help="folder to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain_steps", type=int, default=None,
                    help="full-parameter steps on the sample captions; 0 = random weights [the family's]")
    ap.add_argument("--pretrain_data", nargs="+", metavar="JSON",
                    help="VisualGLM: fine-tune JSON or dataset_*_zh.json files to pre-train on [data/sample/sample_train.json]")
    a = ap.parse_args(argv)
    if a.pretrain_steps is not None and a.pretrain_steps < 0:
        raise RemoteGLMError(f"--pretrain_steps must be >= 0, got {a.pretrain_steps}")
    from remoteglm.compat import quiet_warnings

    quiet_warnings()
    extra = {"pretrain_data": a.pretrain_data} if a.pretrain_data else {}
    print(family_named(a.family).make_tiny(Path(a.out_dir), a.seed, a.pretrain_steps, **extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
