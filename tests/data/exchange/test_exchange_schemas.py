"""Each exported file against its tool's documented schema (small hand-written checks, one per
documented rule), and read by the loader LLaMA-Factory and ms-swift both use
(``datasets.load_dataset("json")``); the boxes' frame against transformers' own image processor.

Sources: hiyouga/LLaMA-Factory ``data/README.md`` (dataset_info.json keys, "Multimodal Image
Dataset", "OpenAI Format"), modelscope/ms-swift ``docs/source_en/Customization/Custom-dataset.md``
(standard keys, "Multimodal", "Grounding", the "loss" field), QwenLM/Qwen3-VL
``qwen-vl-finetune/README.md`` ("Custom Dataset Configuration", its notes).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from PIL import Image

from remoteglm.commands import export
from remoteglm.data.exchange import llamafactory
from remoteglm.registry import family_named

from exchangehelp import MAX_PIXELS, MIN_PIXELS, SIZES

TARGET = ["--family", "qwen2_5_vl", "--min_pixels", str(MIN_PIXELS), "--max_pixels", str(MAX_PIXELS)]
# data/README.md: the keys of a dataset description, its columns and its tags
LF_ENTRY = {"hf_hub_url", "ms_hub_url", "script_url", "cloud_file_name", "file_name", "formatting", "ranking", "subset",
            "split", "folder", "num_samples", "columns", "tags"}
LF_COLUMNS = {"prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos", "audios",
              "chosen", "rejected", "kto_tag"}
LF_TAGS = {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"}
# Custom-dataset.md: the standard keys, plus the per-sample chat_template_kwargs; other keys are dropped
SWIFT_KEYS = {"messages", "rejected_response", "label", "images", "videos", "audios", "tools", "objects",
              "chat_template_kwargs"}


def made(data_dir: Path, fmt: str, name: str, *extra) -> tuple[list[dict], Path]:
    out = data_dir / "tool" / name
    assert export.main([fmt, str(data_dir / "records.json"), str(out), *TARGET, *extra]) == 0
    text = out.read_text(encoding="utf-8")
    rows = [json.loads(x) for x in text.splitlines()] if out.suffix == ".jsonl" else json.loads(text)
    return rows, out


def loads_with_datasets(path: Path, n: int) -> None:
    from datasets import load_dataset

    ds = load_dataset("json", data_files=str(path), split="train")
    assert len(ds) == n and ("messages" in ds.column_names or "conversations" in ds.column_names)


def test_llamafactory_file_and_entry_follow_its_readme(data_dir):
    rows, out = made(data_dir, "llamafactory", "rs.json", "--relative")
    info = json.loads((out.parent / "dataset_info.json").read_text(encoding="utf-8"))
    entry = info["rs"]
    assert set(entry) <= LF_ENTRY and set(entry["columns"]) <= LF_COLUMNS and set(entry["tags"]) <= LF_TAGS
    assert entry["formatting"] == "sharegpt" and (out.parent / entry["file_name"]).is_file()
    tags, cols = entry["tags"], entry["columns"]
    for r in rows:
        msgs, images = r[cols["messages"]], r[cols["images"]]
        # "human and observation should appear in odd positions, while gpt and function in even positions"
        assert [m[tags["role_tag"]] for m in msgs] == [tags["user_tag"], tags["assistant_tag"]] * (len(msgs) // 2)
        assert all(isinstance(m[tags["content_tag"]], str) for m in msgs)
        # "The number of images should be identical to the <image> tokens in the conversations."
        assert sum(m[tags["content_tag"]].count("<image>") for m in msgs) == len(images) == 1
        # converter.py _find_medias: os.path.join(media_dir, image), media_dir = dataset_dir by default
        assert os.path.isfile(os.path.join(out.parent, images[0]))
    loads_with_datasets(out, len(rows))


def test_swift_file_follows_its_custom_dataset_page(data_dir):
    rows, out = made(data_dir, "swift", "rs.jsonl")
    assert any("objects" in r for r in rows)
    for r in rows:
        assert set(r) - {"remoteglm"} <= SWIFT_KEYS and isinstance(r["messages"], list)
        assert all(m["role"] in ("system", "user", "assistant") and isinstance(m["content"], str) for m in r["messages"])
        assert all(isinstance(m["loss"], bool) for m in r["messages"] if "loss" in m)
        assert all(m["role"] == "assistant" for m in r["messages"] if "loss" in m)
        text = "".join(m["content"] for m in r["messages"])
        assert text.count("<image>") == len(r["images"]) == 1 and os.path.isabs(r["images"][0])
        obj = r.get("objects", {"ref": [], "bbox": []})
        assert text.count("<bbox>") == len(obj["bbox"]) and text.count("<ref-object>") == len(obj["ref"])
        assert all(isinstance(x, str) for x in obj["ref"]) and all(len(b) == 4 for b in obj["bbox"])
        assert obj.get("bbox_type", "real") in ("real", "norm1")
    loads_with_datasets(out, len(rows))


def test_qwen_file_follows_its_readme(data_dir):
    rows, out = made(data_dir, "qwen", "rs.json", "--relative")
    for r in rows:
        conv = r["conversations"]
        assert isinstance(r["image"], str) and [c["from"] for c in conv] == ["human", "gpt"] * (len(conv) // 2)
        # "One <image> tag in the question must correspond to exactly one image file"
        assert sum(c["value"].count("<image>") for c in conv if c["from"] == "human") == 1
        # "These special tokens should not appear in the answer text"
        assert not any("<image>" in c["value"] or "<video>" in c["value"] for c in conv if c["from"] == "gpt")
        # "data_path can be left empty if the image paths in the annotations are absolute"; else relative to it
        assert (out.parent / r["image"]).is_file()


@pytest.mark.parametrize("size", [*SIZES.values(), (1000, 800), (2000, 1200)])
def test_box_frames_are_the_image_transformers_processor_makes(size):
    """Qwen2.5-VL's codec frame is the size of the image the real image processor resizes to; in
    LLaMA-Factory's frame, after its own pre-resize (mm_plugin.py, reimplemented from its source here)."""
    from transformers import Qwen2VLImageProcessorPil

    fam = family_named("qwen2_5_vl")
    img = Image.new("RGB", size)

    def processed(image, lo, hi):
        grid = Qwen2VLImageProcessorPil(size={"shortest_edge": lo, "longest_edge": hi})(images=[image])["image_grid_thw"][0]
        return int(grid[2]) * 14, int(grid[1]) * 14

    assert fam.box_codec(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS).frame(*size) == processed(img, MIN_PIXELS, MAX_PIXELS)
    lo, hi, image_max = 3136, 12845056, 200704  # the published folder's processor range; LLaMA-Factory's setting
    pre = img
    if pre.width * pre.height > image_max:
        f = math.sqrt(image_max / (pre.width * pre.height))
        pre = pre.resize((int(pre.width * f), int(pre.height * f)))
    if min(pre.size) < 28:
        pre = pre.resize((max(pre.width, 28), max(pre.height, 28)))
    lf = llamafactory.tool_frame(fam.box_codec(min_pixels=lo, max_pixels=hi), image_max, 1024)
    assert lf.frame(*size) == processed(pre, lo, hi)
