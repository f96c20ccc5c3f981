"""``remoteglm recipe MODEL_DIR``: the fine-tune defaults the folder's family gives, as shell
assignments for ``finetune.sh`` (which keeps only the settings a user did not make). A family's
conventional tiny folder (``checkpoints/visualglm-tiny``, ...) is made here on first use
(``--make_tiny``); a folder no family loads is its one error line before anything starts."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from remoteglm.errors import cli_entry
from remoteglm.options import Parser


def valid_beside(train_data: list[str]) -> str:
    """The held-out split beside a ``X_train.json`` (``X_val.json``), if there is one; else ''.
    (A real model never gets the bundled sample's split unless it trains on the sample.)"""
    if len(train_data) == 1 and train_data[0].endswith("_train.json"):
        guess = train_data[0][: -len("_train.json")] + "_val.json"
        if Path(guess).is_file():
            return guess
    return ""


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="remoteglm recipe", description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--train_data", nargs="*", default=[], help="the training files (for the held-out guess)")
    ap.add_argument("--lora_rank", type=int, default=None, help="the rank a user set (alpha follows it)")
    ap.add_argument("--make_tiny", action="store_true", help="make the family's tiny model if this is its missing folder")
    a = ap.parse_args(argv)
    from remoteglm.registry import family_of, tiny_family

    path = Path(a.model_dir)
    fam = tiny_family(path) if not path.exists() else None
    if fam is not None and a.make_tiny:
        print(f">> creating the tiny {fam.label} model in {path} (briefly pre-trained on the sample captions, "
              "for trying the pipeline)", file=sys.stderr, flush=True)
        from remoteglm.compat import quiet_warnings

        quiet_warnings()
        fam.make_tiny(path)
    if fam is None or path.exists():
        fam = family_of(path)
        fam.check(path)
    r = fam.recipe(path, a.lora_rank)
    out = {"FAMILY": fam.name, "FAMILY_LABEL": fam.label, "TRAIN_ITERS": r["train_iters"], "BATCH_SIZE": r["batch_size"],
           "LR": r["lr"], "LORA_RANK": r["lora_rank"], "LORA_ALPHA": r["lora_alpha"], "DEMO_IMAGE": r["demo_image"],
           "THREADS": r["threads"] or "", "VALID_DATA": valid_beside(a.train_data)}
    for k, v in out.items():
        v = f"{v:g}" if isinstance(v, float) else str(v)
        print(f"RECIPE_{k}={shlex.quote(v)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
