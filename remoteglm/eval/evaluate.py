"""Evaluate one checkpoint, or two side by side, on a split of a Chinese caption dataset.

    python -m remoteglm.eval --from_pretrained checkpoints/visualglm-6b \\
        --data data/ucm/dataset_ucm_zh.json --split test
    python -m remoteglm.eval --compare checkpoints/visualglm-6b checkpoints/finetune-visualglm-11-22-10-00 \\
        --data data/ucm/dataset_ucm_zh.json --train_data data/ucm/ucm_train.json

For every image: one caption (prompt 描述这张图片。) and, when the data has scene classes, one
classification answer (prompt listing the Chinese class names); greedy decoding, batched, with a
progress bar. Writes ``OUT/metrics.json`` and ``OUT/report.html``; answers are kept in
``OUT/answers/*.jsonl`` as they come, so an interrupted run continues where it stopped.

A fine-tune JSON of RSVQA questions (``task: "vqa"`` records) or of a folder-per-class scene set
(``task: "classify"`` records) is evaluated the same way: VQA accuracy overall and per question
type (remoteglm/eval/normalize.py), zero-shot scene accuracy per class with a confusion matrix; GeoChat's
published numbers are shown beside ours for UCM, AID and RSVQA-HR (remoteglm/eval/anchors.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from remoteglm.data.instructions import CLASSIFY_PROMPT
from remoteglm.errors import cli_entry
from remoteglm.eval.anchors import BENCHMARKS
from remoteglm.eval.evalset import CAPTION_PROMPT
from remoteglm.eval.grounding_report import grounding_summary
from remoteglm.eval.metrics import LEVEL_NOTES, LEVELS, METRICS
from remoteglm.eval.runner import run_evaluation
from remoteglm.options import Parser, add_trust_arg

EXAMPLES = """examples:
  # one checkpoint on the test split
  python -m remoteglm.eval --from_pretrained checkpoints/visualglm-6b --data data/ucm/dataset_ucm_zh.json
  # base vs fine-tune on the same images, with the leakage guard against the training file
  python -m remoteglm.eval --compare checkpoints/visualglm-6b checkpoints/finetune-visualglm-11-22-10-00 \\
      --data data/ucm/dataset_ucm_zh.json --train_data data/ucm/ucm_train.json --out eval/ucm
  # a quick look: the first 20 images, 4-bit weights
  python -m remoteglm.eval --from_pretrained checkpoints/visualglm-6b --data data/ucm/ucm_test.json --limit 20 --quant 4
  # RSVQA-HR questions or a folder-per-class scene set (records with task "vqa" / "classify")
  python -m remoteglm.eval --from_pretrained checkpoints/visualglm-6b --data data/rsvqa_hr/rsvqa_hr_test.json
  python -m remoteglm.eval --from_pretrained checkpoints/visualglm-6b --data data/aid/aid_test.json
  # re-score a run's saved answers (no model): the same numbers again
  python -m remoteglm.eval --predictions eval/ucm/answers/base.jsonl eval/ucm/answers/tuned.jsonl \
      --data data/ucm/dataset_ucm_zh.json --out eval/ucm_rescored
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m remoteglm.eval", description=__doc__.split("\n\n")[0],
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--from_pretrained", metavar="CKPT", help="checkpoint directory (sat or HF; base, LoRA, merged or quantised)")
    which.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two checkpoints (e.g. base and fine-tuned) on the same images")
    which.add_argument("--predictions", nargs="+", metavar="FILE",
                       help="re-score saved answers without a model: an evaluation's OUT/answers/<label>.jsonl (one "
                            "JSON object per line with img, prompt, answer), one file per model, with the --data, "
                            "--split, --limit and prompts of the run that wrote it")
    p.add_argument("--family", help="--predictions: the model family whose box text the answers are in (qwen2_5_vl, "
                                     "qwen3_vl, glm4v, visualglm) [the one the log records]")
    p.add_argument("--labels", nargs="+", help="names for the checkpoints in the report [folder names; file names "
                                               "without .jsonl for --predictions]")
    p.add_argument("--data", required=True,
                   help="dataset_<name>_zh.json (Karpathy style), a split's fine-tune JSON, or a file of RSVQA / "
                        "scene-set records (task \"vqa\" / \"classify\"), told apart by each record's task")
    p.add_argument("--split", default="test", help="split of a Karpathy dataset [test]")
    p.add_argument("--image_root", help="folder for relative image paths [the JSON's folder]")
    p.add_argument("--train_data", nargs="+", default=[], help="training file(s): refuse when evaluation images are in them")
    p.add_argument("--allow_leak", "--allow-leak", action="store_true",
                   help="evaluate even when images are in the training data (with a loud warning)")
    p.add_argument("--out", help="output folder [eval_results/<data>_<split>]")
    p.add_argument("--limit", type=int, help="only the first N images (with their questions)")
    p.add_argument("--batch_size", type=int, default=8, help="prompts per generation batch [8]")
    p.add_argument("--max_new_tokens", type=int, default=64, help="caption length limit in tokens [64]")
    p.add_argument("--repetition_penalty", type=float, default=1.2, help="as VisualGLM's chat() [1.2]; 1 = none")
    p.add_argument("--caption_prompt", default=CAPTION_PROMPT, help=f"[{CAPTION_PROMPT}]")
    p.add_argument("--classify_prompt", default=CLASSIFY_PROMPT,
                   help="template with {classes} (joined by 、) [the sample's prompt]; fine-tune JSON records keep their own")
    p.add_argument("--no_classify", action="store_true", help="no scene classification")
    p.add_argument("--no_vqa", action="store_true", help="skip the file's VQA questions")
    p.add_argument("--benchmark", default="auto", choices=["auto", "none", *BENCHMARKS],
                   help="whose published numbers to show beside ours [auto: from the file and folder names]")
    p.add_argument("--report_examples", type=int, default=5,
                   help="questions per type and images per class the report shows for VQA and scene sets [5]")
    p.add_argument("--quant", type=int, choices=[4, 8], help="quantise ChatGLM to 4 or 8 bits (bitsandbytes)")
    p.add_argument("--device", help="cuda, cuda:N or cpu [cuda if available]")
    p.add_argument("--dtype", help="fp16, bf16 or fp32 [fp16 on GPU, fp32 on CPU]")
    p.add_argument("--min_pixels", type=int, help="transformers families: smallest image area after resizing")
    p.add_argument("--max_pixels", type=int, help="transformers families: largest image area (one token per 28 x 28 pixels; Qwen3-VL: 32 x 32)")
    p.add_argument("--tokenizer", help="ice_text.model when the checkpoint folder has none")
    add_trust_arg(p)
    p.add_argument("--thumb_size", type=int, default=160, help="thumbnail size in the report, pixels [160]")
    return p


def summary_table(m: dict) -> str:
    """Plain-text summary for the terminal, with the published anchors beside ours."""
    lines = []
    runs = m["models"]
    w = max(8, *(len(r["label"]) for r in runs))
    if any(r.get("caption") for r in runs):
        for level in LEVELS:
            lines.append(f"{LEVEL_NOTES[level]}")
            lines.append(f"  {'model':<{w}} " + " ".join(f"{k:>8}" for k in METRICS))
            for r in runs:
                lines.append(f"  {r['label']:<{w}} " + " ".join(f"{r['caption'][level][k]:>8.4f}" for k in METRICS))
    if m["classes"]:
        lines.append("scene classification accuracy")
        for r in runs:
            c = r["classification"]
            lines.append(f"  {r['label']:<{w}} {c['accuracy'] * 100:6.1f}%  ({c['correct']}/{c['n']}, parsed {c['parsed']})")
    if m.get("qtypes"):
        qtypes = m["qtypes"]
        cw = max(8, *(len(q) for q in qtypes))
        lines.append(f"VQA accuracy ({m['n_questions']} questions; OA = all questions, AA = mean over types)")
        lines.append(f"  {'model':<{w}} " + " ".join(f"{q:>{cw}}" for q in qtypes) + f" {'OA':>7} {'AA':>7}")
        for r in runs:
            v = r["vqa"]
            cells = " ".join(f"{v['per_type'][q]['accuracy'] * 100:>{cw - 1}.1f}%" for q in qtypes)
            lines.append(f"  {r['label']:<{w}} {cells} {v['accuracy'] * 100:>6.1f}% {v['average_accuracy'] * 100:>6.1f}%")
        lines.append("  n" + " " * (w - 1) + " " + " ".join(f"{r0:>{cw}}" for r0 in
                                                            (runs[0]["vqa"]["per_type"][q]["n"] for q in qtypes)))
    lines += grounding_summary(runs, w)
    a = m.get("anchors")
    if a:
        lines.append(f"anchors: {a['source']} (English prompts) beside ours (Chinese prompts): not directly comparable")
        for row in a["rows"]:
            ours = ", ".join(f"{lab} {v:.2f}%" if v is not None else f"{lab} -" for lab, v in row["ours"].items())
            lines.append(f"  {a['benchmark']} {row['metric']}: {row['who']} {row['value']:.2f}% | ours: {ours}")
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    m = run_evaluation(args)
    print(summary_table(m))
    print(f"wrote {Path(m['out_dir']) / 'metrics.json'} and {Path(m['out_dir']) / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
