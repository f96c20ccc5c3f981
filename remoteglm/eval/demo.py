"""The closing demo of ``bash finetune.sh``: one question about a training image, asked of the base
model (before) and of the fine-tuned run (after), each answered greedily, with the character F1 of
each answer against that image's training labels (the best label counts).

    python -m remoteglm.eval.demo --base checkpoints/visualglm-tiny --run checkpoints/finetune-visualglm-12-01-10-00 \\
        --image data/sample/images/s2_farmland.png --train_data data/sample/sample_train.json

Decoding is that of ``cli_demo.py --greedy --max_new_tokens 48`` (its sampling defaults, greedy).
The last line reads ``>> char F1 vs the training label: before 0.48 -> after 1.00``. It is a demo:
it exits 0 whatever the scores (tests/train/test_default_job.py checks them for the default job).
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import Sequence

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.model.prompt import DEFAULT_PROMPT
from remoteglm.options import Parser, add_trust_arg

F1_LINE = ">> char F1 vs the training label: before {before} -> after {after}"


def image_labels(image: str | Path, train_data: Sequence[str | Path]) -> list[str]:
    """Training labels of ``image``: records naming the same file, or a file with the same bytes."""
    from remoteglm.io import file_digest
    from remoteglm.data.records import load_records

    target = Path(image).resolve()
    size, digest = target.stat().st_size, None
    same: dict[Path, bool] = {}
    labels: list[str] = []
    for path in train_data:
        for r in load_records(path, "train"):
            p = r.img.resolve()
            if p not in same:
                same[p] = p == target
                if not same[p] and p.is_file() and p.stat().st_size == size:
                    digest = digest or file_digest(target)
                    same[p] = file_digest(p) == digest
            if same[p]:
                labels.append(r.label)
    return labels


def answer(model_dir: str | Path, image: str | Path, prompt: str, max_new_tokens: int = 48,
           tokenizer=None, device: str | None = None) -> str:
    """Greedy answer of the checkpoint in ``model_dir`` (base, LoRA run or merged) about ``image``."""
    import torch

    from remoteglm.serve.loading import load_engine
    from remoteglm.serve.sampling import DEMO_DEFAULTS

    engine, _ = load_engine(model_dir, tokenizer=tokenizer, device=device,
                            defaults=DEMO_DEFAULTS, progress=False)
    try:
        text = engine.reply(str(image), prompt, do_sample=False, max_new_tokens=max_new_tokens).text
    finally:
        del engine  # the full-size model is 15 GB: free it before the next one loads
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return text


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="python -m remoteglm.eval.demo",
                                 description="Ask the base model and the fine-tuned run one question about a training "
                                             "image; print both answers and their char F1 against its training labels.")
    ap.add_argument("--base", required=True, metavar="DIR", help="the base checkpoint the run was trained from")
    ap.add_argument("--run", required=True, metavar="DIR", help="the fine-tuned run folder (or a merged checkpoint)")
    ap.add_argument("--image", required=True, metavar="PATH", help="an image of the training data")
    ap.add_argument("--train_data", required=True, nargs="+", metavar="JSON",
                    help="the run's training files (fine-tune JSON or dataset_*_zh.json): where the labels come from")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"the question [{DEFAULT_PROMPT}]")
    ap.add_argument("--max_new_tokens", type=int, default=48, help="answer length cap in tokens [48]")
    ap.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    add_trust_arg(ap)
    return ap


def _fmt(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.2f}"


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from remoteglm.eval.metrics import char_f1
    from remoteglm.model.unpickle import trust_checkpoints
    from remoteglm.model.image import load_image

    trust_checkpoints(args.trust_checkpoint)
    load_image(args.image)  # a bad image fails before any model loads
    labels = image_labels(args.image, args.train_data)
    # The run folder always holds the tokenizer it trained with; a sat base folder may have none.
    run_tok = Path(args.run) / "ice_text.model"
    tokenizer = str(run_tok) if run_tok.is_file() else None

    print(f">> question about {args.image}: {args.prompt}", flush=True)
    try:
        before_text = answer(args.base, args.image, args.prompt, args.max_new_tokens, tokenizer, args.device)
        print(f"   before (base model {args.base}): {before_text}", flush=True)
    except RemoteGLMError as e:  # the run is trained and saved whatever happens here: still show it
        before_text = None
        print(f"warning: could not ask the base model {args.base}: {e}", file=sys.stderr, flush=True)
    after_text = answer(args.run, args.image, args.prompt, args.max_new_tokens, None, args.device)
    print(f"   after  (fine-tuned {args.run}): {after_text}", flush=True)

    if not labels:
        print(f">> char F1: {args.image} has no label in {' '.join(map(str, args.train_data))}; "
              f"pick one of its images to see how close the answer is", flush=True)
        return 0
    after = char_f1(after_text, labels)
    before = None if before_text is None else char_f1(before_text, labels)
    closest = max(labels, key=lambda lab: char_f1(after_text, lab))
    print(f"   closest training label of this image: {closest}", flush=True)
    print(F1_LINE.format(before=_fmt(before), after=_fmt(after))
          + f" (best of its {len(labels)} label(s); 1.00 = the same characters)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
