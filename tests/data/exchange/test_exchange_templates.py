"""Exported files, read the way each tool's own data code reads them, give the same token ids and
the same loss mask as this toolkit's own training encoding (``remoteglm.train.hf_data.HFEncoder``)
of the same record, on tiny folders made by ``python -m remoteglm tiny FAMILY DIR --pretrain_steps 0``
(which carry the families' published chat templates, remoteglm/model/assets).

Installing LLaMA-Factory or ms-swift in the suite is too heavy (each pulls its own torch /
transformers / deepspeed pins), so each tool's reading step is modelled here from its source,
and the real tool is run by hand (README "导出到其他训练框架" / "Other training tools"):

- LLaMA-Factory (hiyouga/LLaMA-Factory): ``converter.py`` maps the dataset_info.json tags to roles;
  ``mm_plugin.py`` replaces ``<image>`` with ``<|vision_start|>`` + one ``<|image_pad|>`` per merged
  patch + ``<|vision_end|>`` (``<|begin_of_image|>...<|end_of_image|>`` for GLM-4.1V); the Qwen
  templates of ``template.py`` (``qwen2_vl``, ``qwen3_vl_nothink``: format_system / format_user /
  format_assistant slots, default system) encode each message on its own; ``mask_history`` labels
  the last answer only. Manual run: ``llamafactory-cli train --stage sft --do_train --model_name_or_path
  Qwen/Qwen2.5-VL-7B-Instruct --template qwen2_vl --dataset NAME --dataset_dir DIR --mask_history true ...``.
  GLM-4.1V is checked against its published template (LLaMA-Factory's ``glm4v`` template adds its
  own reasoning marks, not modelled here), with the eos LLaMA-Factory's ``efficient_eos`` appends.
- ms-swift (modelscope/ms-swift): ``<ref-object>`` / ``<bbox>`` filled as ``base.py`` ``normalize_bbox``
  and ``templates/qwen.py`` (QWENVL_BBOX_FORMAT=new) do (``int(round(x / width * norm_width))`` on
  the image the processor resized; ``str(bbox)``); answers with ``"loss": false`` unlabelled; the
  published template renders. Manual run: ``QWENVL_BBOX_FORMAT=new MIN_PIXELS=.. MAX_PIXELS=.. swift sft
  --model Qwen/Qwen2.5-VL-7B-Instruct --dataset FILE.jsonl``.
- Qwen's qwen-vl-finetune: ``data_processor.py`` ``_build_messages`` (split human turns at ``<image>``,
  strip the pieces), the processor's ``apply_chat_template`` on the whole conversation, and
  ``preprocess_qwen_visual``'s labels: every assistant answer through ``<|im_end|>\\n``. It learns the
  earlier answers of a conversation too (no option to mask them), which this toolkit does not.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from remoteglm.data.exchange import llamafactory
from remoteglm.data.exchange.files import export_file
from remoteglm.data.records import load_records
from remoteglm.model.hf_folder import load_processor
from remoteglm.model.image import image_size, load_image
from remoteglm.model.sample import IGNORE_INDEX
from remoteglm.registry import family_named
from remoteglm.train.hf_data import HFEncoder

from exchangehelp import LABELLED, MAX_PIXELS, MIN_PIXELS, make_data, records

ROOT = Path(__file__).resolve().parents[3]
FAMILIES = ("qwen2_5_vl", "qwen3_vl", "glm4v")
VISION = {"qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>", "qwen3_vl": "<|vision_start|><|image_pad|><|vision_end|>",
          "glm4v": "<|begin_of_image|><|image|><|end_of_image|>"}
# LLaMA-Factory template.py, the Qwen templates' slots (qwen3_vl_nothink has no default system)
LF_SYSTEM = {"qwen2_5_vl": "You are a helpful assistant.", "qwen3_vl": ""}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exchange_tiny")
    procs = {f: subprocess.Popen([sys.executable, "-m", "remoteglm", "tiny", f, str(root / f), "--pretrain_steps", "0"],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in FAMILIES}
    for f, p in procs.items():
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    return {f: root / f for f in FAMILIES}


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    folder = make_data(tmp_path_factory.mktemp("exchange_data"))
    path = folder / "all.json"
    path.write_text(json.dumps(records() + [LABELLED], ensure_ascii=False), encoding="utf-8")
    return path


def exported(fmt: str, family: str, codec, src: Path, out: Path) -> list[dict]:
    if fmt == "llamafactory":  # an LLaMA-Factory run whose image_max_pixels leaves these images as they are
        codec = llamafactory.tool_frame(codec, 10 ** 8, 1)
    export_file(fmt, src, out, codec, image_size)
    return json.loads(out.read_text(encoding="utf-8"))


def tokens(proc, text: str, grid) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` with each image placeholder expanded to the image's merged patches
    (as the tools' processors do), and each token's character span."""
    e = proc.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    n = int(grid[0].prod()) // proc.merge ** 2
    ids, spans = [], []
    for t, s in zip(e["input_ids"], e["offset_mapping"]):
        k = n if t == proc.image_token_id else 1
        ids += [t] * k
        spans += [tuple(s)] * k
    return ids, spans


def templated(proc, grid, messages: list[dict], trained: list[int], eos: bool = False) -> tuple[list, list]:
    """The published template over the whole conversation, labels on the answers ``trained``
    (message indices): each answer and the template's end-of-turn marks after it."""
    text = proc.render(messages, add_generation_prompt=False)
    ids, spans = tokens(proc, text, grid)
    ranges = [(len(proc.render(messages[:k], add_generation_prompt=True)),
               len(proc.render(messages[:k + 1], add_generation_prompt=False))) for k in trained]
    labels = [t if any(a <= s0 and s1 <= b for a, b in ranges) else IGNORE_INDEX for t, (s0, s1) in zip(ids, spans)]
    if eos:
        ids, labels = ids + [proc.tokenizer.eos_token_id], labels + [proc.tokenizer.eos_token_id]
    return ids, labels


def lf_own_template(proc, grid, row: dict, family: str) -> tuple[list, list]:
    """LLaMA-Factory's qwen2_vl / qwen3_vl_nothink template, message by message, mask_history."""
    tok = proc.tokenizer
    n = int(grid[0].prod()) // proc.merge ** 2
    ids, labels = [], []
    msgs = row["messages"]
    for k, m in enumerate(msgs):
        content = m["content"].replace("<image>", "<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>")
        if m["role"] == "user":
            system = f"<|im_start|>system\n{LF_SYSTEM[family]}<|im_end|>\n" if k == 0 and LF_SYSTEM[family] else ""
            part = tok.encode(system + f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n",
                              add_special_tokens=False)
            ids, labels = ids + part, labels + [IGNORE_INDEX] * len(part)
        else:
            part = tok.encode(content + "<|im_end|>\n", add_special_tokens=False)
            last = k == len(msgs) - 1
            ids, labels = ids + part, labels + (part if last else [IGNORE_INDEX] * len(part))
    return ids, labels


def lf_messages(row: dict, family: str) -> list[dict]:
    entry = llamafactory.info_entry("x")
    tags = entry["tags"]
    role = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant"}
    return [{"role": role[m[tags["role_tag"]]], "content": m[tags["content_tag"]].replace("<image>", VISION[family])}
            for m in row[entry["columns"]["messages"]]]


def swift_messages(row: dict, family: str, image: Path, grid, patch: int) -> list[dict]:
    """ms-swift's placeholders filled as its Qwen template fills them."""
    w, h = image_size(image)
    fw, fh = (int(grid[0][2]) * patch, int(grid[0][1]) * patch) if family == "qwen2_5_vl" else (1000, 1000)
    objects = row.get("objects") or {"ref": [], "bbox": []}
    refs, boxes = iter(objects["ref"]), iter(objects["bbox"])

    def fill(text: str) -> str:
        text = re.sub("<ref-object>", lambda _: next(refs), text)
        text = re.sub("<bbox>", lambda _: str([int(round(v / (w if i % 2 == 0 else h) * (fw if i % 2 == 0 else fh)))
                                                  for i, v in enumerate(next(boxes))]), text)
        return text.replace("<image>", VISION[family])

    return [{"role": m["role"], "content": fill(m["content"])} for m in row["messages"]]


def qwen_messages(row: dict) -> list[dict]:
    """qwen-vl-finetune's _build_messages."""
    out = []
    for turn in row["conversations"]:
        if turn["from"] == "human":
            parts = [{"type": "image"} if seg == "<image>" else {"type": "text", "text": seg.strip()}
                     for seg in re.split(r"(<image>|<video>)", turn["value"]) if seg == "<image>" or seg.strip()]
            out.append({"role": "user", "content": parts})
        else:
            out.append({"role": "assistant", "content": [{"type": "text", "text": turn["value"]}]})
    return out


CASES = [(f, fmt) for f in FAMILIES for fmt in ("llamafactory", "swift", "qwen") if fmt != "qwen" or f != "glm4v"]


@pytest.mark.parametrize("family, fmt", CASES)
def test_tool_reading_gives_our_training_tokens_and_loss_mask(tiny, src, tmp_path, family, fmt):
    fam = family_named(family)
    proc = load_processor(tiny[family], fam, MIN_PIXELS, MAX_PIXELS)
    codec = fam.box_codec(tiny[family], min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    rows = exported(fmt, family, codec, src, tmp_path / f"{fmt}.json")
    encoder = HFEncoder(proc, 8192, codec)
    recs = load_records(src)
    assert len(rows) == len(recs) == 9
    for rec, row in zip(recs, rows):
        grid = proc.images([load_image(rec.img)])["image_grid_thw"]
        ours = encoder.encode(rec, grid)
        n_msgs = 2 * (len(rec.history) + 1)
        if fmt == "llamafactory" and family != "glm4v":
            tool = lf_own_template(proc, grid, row, family)
        elif fmt == "llamafactory":
            tool = templated(proc, grid, lf_messages(row, family), [n_msgs - 1], eos=True)
        elif fmt == "swift":
            msgs = swift_messages(row, family, rec.img, grid, fam.patch)
            trained = [k for k, m in enumerate(row["messages"]) if m["role"] == "assistant" and m.get("loss") is not False]
            tool = templated(proc, grid, msgs, trained, eos=family == "glm4v")
        else:
            tool = templated(proc, grid, qwen_messages(row), list(range(1, n_msgs, 2)))
        assert tool[0] == ours["input_ids"], (family, fmt, rec.prompt)
        if fmt == "qwen" and rec.history:  # Qwen's script also learns the earlier answers
            assert [b for a, b in zip(ours["labels"], tool[1]) if a != b and a == IGNORE_INDEX] and \
                   all(a == b for a, b in zip(ours["labels"], tool[1]) if a != IGNORE_INDEX)
        else:
            assert tool[1] == ours["labels"], (family, fmt, rec.prompt)
