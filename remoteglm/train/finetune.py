"""``remoteglm finetune`` (also ``finetune_visualglm.py`` and ``finetune.sh``): one command, one
option set, one preflight and one run-folder layout for every model family. The folder's family
(``remoteglm.registry``) gives the defaults a user left out and trains with its own trainer.

    remoteglm finetune --from_pretrained checkpoints/visualglm-tiny --train_data data/sample/sample_train.json
"""

from __future__ import annotations

import sys

from remoteglm.errors import cli_entry


@cli_entry
def main(argv: list[str] | None = None, prog: str = "remoteglm finetune") -> int:
    from remoteglm.train.options import build_parser, resolve, validate

    opts = build_parser(prog).parse_args(argv)
    from remoteglm import compat
    from remoteglm.registry import family_of

    compat.single_process_env()  # one process: an in-memory process group, no TCPStore listening on every interface
    family = family_of(opts.from_pretrained)
    given = {k: getattr(opts, k) is not None for k in ("max_pixels", "batch_size")}  # the user's (before the recipe)
    resolve(opts, family)
    validate(opts)
    if opts.vram is not None or opts.plan_only:
        from remoteglm.train.planner import plan_run

        plan_run(opts, family, given)
        if opts.plan_only:
            return 0
    family.finetune(opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
