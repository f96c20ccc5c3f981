"""``remoteglm import_chat FORMAT FILE RECORDS``: conversations made for other tools, as fine-tune
records, so data made elsewhere can be checked, translated, mixed, split and evaluated here.

formats:
  llamafactory  ShareGPT-style messages + images (the columns and tags of a dataset_info.json entry beside FILE
                that names it; else {"messages": [{role, content}]} or {"conversations": [{from, value}]})
  swift         ms-swift {"messages", "images"[, "objects"]}: <ref-object>/<bbox> placeholders filled as ms-swift
                fills them, the boxes taken exactly from objects (real or norm1)
  qwen          qwen-vl-finetune {"image", "conversations": [{from: human|gpt, value}]}
  openai        {"messages": [...]} with image parts {"type": "image_url", "image_url": {"url": ...}} (a path,
                file:// or data:image/...;base64; data URLs are stored under RECORDS_images/) or {"type": "image"}

Each sample becomes one record: its earlier turns the record's history, the last turn its prompt
and label. Box text in the family's form (--family / --model and the pixel settings the file was
made for, as for export) is read back to original pixels as <box> markers with prompt_boxes /
label_boxes. We train one image per sample: a sample with none or several is refused in one line, as are
unknown roles, missing images, boxes off the image and empty files; nothing is written then.
Fields in a sample's "remoteglm" object (written by `remoteglm export`) come back as record fields.
"""

from __future__ import annotations

import sys

from remoteglm.commands.exchange_args import add_target_args, codec_for, size_of
from remoteglm.errors import cli_entry
from remoteglm.options import Parser

EXAMPLES = """examples:
  remoteglm import_chat llamafactory lf/dior.json data/dior_back.json --family qwen2_5_vl \\
      --min_pixels 3136 --max_pixels 12845056 --image_max_pixels 589824
  remoteglm import_chat openai vision_ft.jsonl data/from_openai.json --drop_system
  remoteglm import_chat qwen qwen_data.json data/from_qwen.json --image_root /data/qwen_images --family qwen3_vl
"""


@cli_entry
def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = Parser(prog="remoteglm import_chat", description=__doc__.split("\n\n", 1)[0].replace("``", "'"),
                epilog=__doc__.split("\n\n", 1)[1] + "\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("format", choices=("llamafactory", "swift", "qwen", "openai"))
    ap.add_argument("file", help="the tool's data file (.json list or .jsonl)")
    ap.add_argument("records", help="the fine-tune record file to write (.json)")
    ap.add_argument("--drop_system", action="store_true",
                    help="leave system prompts out (records keep none; without this a system prompt is refused)")
    add_target_args(ap)
    a = ap.parse_args(argv)
    from remoteglm.data.exchange.files import import_file

    _, codec, pixels = codec_for(a.format, a)
    s = import_file(a.format, a.file, a.records, codec, size_of, image_root=a.image_root,
                    drop_system=a.drop_system, pixels=pixels)
    print(f"wrote {s.samples} records to {a.records} ({s.with_boxes} with boxes, {s.conversations} conversations"
          + (f", {s.images_stored} images stored from data URLs" if s.images_stored else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
