"""``remoteglm export FORMAT RECORDS OUT``: fine-tune records (captions, multi-task, VQA,
classification, conversations with history, grounding) as the data files of the tools users
already train with, read by each tool's own data code.

formats:
  llamafactory  LLaMA-Factory ShareGPT-style {"messages": [{role, content}], "images": [...]}, "<image>" where the
                image goes, plus its entry in the dataset_info.json beside OUT (formatting "sharegpt", columns
                {messages, images}, tags {role_tag, content_tag, user_tag, assistant_tag})
  swift         ms-swift {"messages", "images"}; earlier answers "loss": false; Qwen grounding as "objects"
                {ref, bbox, bbox_type: real} with <ref-object>/<bbox> placeholders (set QWENVL_BBOX_FORMAT=new)
  qwen          Qwen's qwen-vl-finetune {"image", "conversations": [{from: human|gpt, value}]}, "<image>\\n" first

A record's history turns become earlier message pairs. Boxes (kept in original pixels in the
records) are written in the TARGET family's own text and coordinates, for the pixel settings you
name, in the frame of the image that tool shows the model (LLaMA-Factory has no box code and
resizes images itself first; this accounts for it). Record fields no chat format has (kind,
task, category, ...) travel in each sample's "remoteglm" object, which the tools ignore and
`remoteglm import_chat` restores. OUT ending in .jsonl is written as JSON Lines.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from remoteglm.commands.exchange_args import add_target_args, codec_for, size_of
from remoteglm.errors import cli_entry
from remoteglm.options import Parser

EXAMPLES = """examples:
  remoteglm export llamafactory data/UCM_zh/UCM_train.json lf/ucm_zh.json --relative
  remoteglm export llamafactory data/dior_zh/dior_train.json lf/dior.json --family qwen2_5_vl \\
      --min_pixels 3136 --max_pixels 12845056 --image_max_pixels 589824 --relative
  remoteglm export swift data/dior_zh/dior_train.json dior_swift.jsonl --family qwen2_5_vl \\
      --min_pixels 3136 --max_pixels 1003520
  remoteglm export qwen data/dior_zh/dior_train.json dior_qwen.json --family qwen3_vl

then run the tool itself (export prints the command for your file):
  llamafactory-cli train --stage sft --do_train --model_name_or_path Qwen/Qwen2.5-VL-7B-Instruct \\
      --template qwen2_vl --dataset NAME --dataset_dir DIR --mask_history true --image_max_pixels 589824 ...
  QWENVL_BBOX_FORMAT=new MIN_PIXELS=3136 MAX_PIXELS=1003520 swift sft --model Qwen/Qwen2.5-VL-7B-Instruct \\
      --dataset FILE.jsonl --train_type lora ...
  qwen-vl-finetune: add {"annotation_path": FILE, "data_path": ""} to qwenvl/data/__init__.py, then
      torchrun qwenvl/train/train_qwen.py --dataset_use NAME --min_pixels 3136 --max_pixels 1003520 ...
"""

LF_TEMPLATES = {"qwen2_5_vl": "qwen2_vl", "qwen3_vl": "qwen3_vl_nothink", "glm4v": "glm4v"}


def next_step(fmt: str, a, fam, out: Path, pixels: dict | None, objects: int) -> str:
    """The command that trains on ``out`` with the tool itself (the settings the boxes were written for)."""
    model = shlex.quote(a.model) if a.model else "MODEL"
    if fmt == "llamafactory":
        template = LF_TEMPLATES.get(fam.name if fam else "", "TEMPLATE")
        imax = a.image_max_pixels or 768 * 768
        imin = a.image_min_pixels or 32 * 32
        return (f"llamafactory-cli train --stage sft --do_train --model_name_or_path {model} --template {template} "
                f"--dataset {shlex.quote(a.dataset_name or out.stem)} --dataset_dir {shlex.quote(str(out.parent))} "
                f"--mask_history true --image_max_pixels {imax} --image_min_pixels {imin} --finetuning_type lora "
                "--output_dir saves/remoteglm")
    if fmt == "swift":
        env = "QWENVL_BBOX_FORMAT=new " if objects else ""
        if pixels:
            env += f"MIN_PIXELS={pixels['min_pixels']} MAX_PIXELS={pixels['max_pixels']} "
        return f"{env}swift sft --model {model} --dataset {shlex.quote(str(out.absolute()))} --train_type lora"
    px = f" --min_pixels {pixels['min_pixels']} --max_pixels {pixels['max_pixels']}" if pixels else ""
    return (f"add {{\"annotation_path\": \"{out.absolute()}\", \"data_path\": \"\"}} as NAME to qwenvl/data/__init__.py, "
            f"then: torchrun qwenvl/train/train_qwen.py --model_name_or_path {model} --dataset_use NAME{px} ...")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = Parser(prog="remoteglm export", description=__doc__.split("\n\n", 1)[0].replace("``", "'"),
                epilog=__doc__.split("\n\n", 1)[1] + "\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("format", choices=("llamafactory", "swift", "qwen"))
    ap.add_argument("records", help="a fine-tune record file (JSON list of {img, prompt, label, ...}) or a "
                                    "dataset_<name>_zh.json")
    ap.add_argument("out", help="the file to write (.json or .jsonl)")
    ap.add_argument("--relative", nargs="?", const="", default=None, metavar="DIR",
                    help="write image paths relative to DIR (alone: to OUT's folder: LLaMA-Factory's dataset_dir, "
                         "Qwen's data_path) instead of absolute paths")
    ap.add_argument("--dataset_name", metavar="NAME", help="llamafactory: the dataset_info.json entry's name [OUT's stem]")
    ap.add_argument("--swift_boxes", choices=("objects", "text"), default="objects",
                    help="swift: Qwen boxes as ms-swift objects with placeholders (ms-swift scales them), or as the "
                         "family's text in the messages; other families always get text [objects]")
    ap.add_argument("--split", default="train", help="a Karpathy dataset's split to export [train]")
    ap.add_argument("--seed", type=int, default=42, help="a Karpathy dataset's question draw [42]")
    add_target_args(ap)
    a = ap.parse_args(argv)
    from remoteglm.data.exchange.files import export_file

    out = Path(a.out)
    fam, codec, pixels = codec_for(a.format, a)
    rel = None if a.relative is None else Path(a.relative or out.parent)
    s = export_file(a.format, a.records, out, codec, size_of, split=a.split, seed=a.seed, image_root=a.image_root,
                    relative_to=rel, dataset_name=a.dataset_name, swift_objects=a.swift_boxes == "objects",
                    pixels=pixels)
    print(f"wrote {s.samples} samples to {out} ({s.with_boxes} with boxes, {s.conversations} conversations)"
          + (f"; dataset {a.dataset_name or out.stem!r} in {s.info}" if s.info else ""))
    print(f"next: {next_step(a.format, a, fam, out, pixels, s.objects)}")
    if a.format == "llamafactory" and pixels and not a.model and s.with_boxes:
        # LLaMA-Factory passes no pixel range to the processor: the model folder's own decides the resize
        print(f"note: the boxes assume the model folder's preprocessor_config.json has min_pixels "
              f"{pixels['min_pixels']} / max_pixels {pixels['max_pixels']}; export with --model MODEL to take its own")
    return 0


if __name__ == "__main__":
    sys.exit(main())
