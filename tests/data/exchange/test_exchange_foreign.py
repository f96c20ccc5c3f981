"""Files made elsewhere, read into records: OpenAI-style messages with image parts (file paths,
file:// and data URLs, text before the image), LLaMA-Factory's other layouts (sharegpt default
tags, a dataset_info.json entry with its own column names), ms-swift's generic grounding
placeholders and Qwen's README grounding answer."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from remoteglm.commands import import_chat
from remoteglm.data.records import load_records


def write(path: Path, obj) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in obj), encoding="utf-8")
    else:
        path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def back(data_dir: Path, fmt: str, src: Path, *args) -> list[dict]:
    out = data_dir / "back" / "records.json"
    assert import_chat.main([fmt, str(src), str(out), *map(str, args)]) == 0
    load_records(out)
    return json.loads(out.read_text(encoding="utf-8"))


def test_openai_messages_with_image_parts(data_dir):
    wide = data_dir / "images" / "wide.png"
    png = base64.b64encode((data_dir / "images" / "small.png").read_bytes()).decode()
    rows = [
        {"messages": [{"role": "system", "content": "你是遥感助手。"},
                      {"role": "user", "content": [{"type": "text", "text": "描述这张图片。"},
                                                   {"type": "image_url", "image_url": {"url": wide.as_uri()}}]},
                      {"role": "assistant", "content": "一片农田。"},
                      {"role": "user", "content": [{"type": "text", "text": "有河吗？"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "没有。"}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                                                   {"type": "text", "text": "框出飞机。"}]},
                      {"role": "assistant", "content": '{"bbox_2d": [27, 49, 973, 976]}'}]},
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "images/big.png"}, {"type": "text", "text": "场景？"}]},
                      {"role": "assistant", "content": "机场"}]},
    ]
    got = back(data_dir, "openai", write(data_dir / "chat.jsonl", rows), "--drop_system", "--family", "qwen3_vl")
    assert got[0] == {"img": "../images/wide.png", "prompt": "有河吗？", "label": "没有。",
                      "history": [["描述这张图片。", "一片农田。"]]}
    assert got[1]["prompt"] == "框出飞机。" and got[1]["label"] == "<box>" and got[1]["prompt_boxes"] == []
    assert got[1]["img"].startswith("records_images/") and got[1]["label_boxes"] == [[1, 2.01, 36, 40.02]]
    assert (data_dir / "back" / got[1]["img"]).read_bytes() == (data_dir / "images" / "small.png").read_bytes()
    assert got[2] == {"img": "../images/big.png", "prompt": "场景？", "label": "机场"}


def test_llamafactory_sharegpt_defaults_and_a_custom_entry(data_dir):
    rows = [{"conversations": [{"from": "human", "value": "<image>描述这张图片。"}, {"from": "gpt", "value": "农田。"}],
             "images": ["images/wide.png"]}]
    assert back(data_dir, "llamafactory", write(data_dir / "a.json", rows))[0]["prompt"] == "描述这张图片。"
    # a dataset_info.json entry beside the file names its own columns and tags
    custom = [{"dialog": [{"speaker": "me", "text": "<image>这是哪里？"}, {"speaker": "bot", "text": "机场。"}],
               "pics": "images/big.png", "sys": "你好"}]
    write(data_dir / "dataset_info.json", {"rs": {"file_name": "b.json", "formatting": "sharegpt",
                                                  "columns": {"messages": "dialog", "images": "pics", "system": "sys"},
                                                  "tags": {"role_tag": "speaker", "content_tag": "text",
                                                           "user_tag": "me", "assistant_tag": "bot"}}})
    got = back(data_dir, "llamafactory", write(data_dir / "b.json", custom), "--drop_system")
    assert got == [{"img": "../images/big.png", "prompt": "这是哪里？", "label": "机场。"}]


def test_swift_generic_placeholders_and_qwen_readme_answer(data_dir):
    rows = [{"messages": [{"role": "user", "content": "<image>找出<ref-object>。"},
                          {"role": "assistant", "content": "<ref-object><bbox>和<ref-object><bbox>"}],
             "images": ["images/wide.png"],
             "objects": {"ref": ["飞机", "飞机", "油罐"], "bbox": [[0.1, 0.2, 0.5, 0.6], [0.6, 0.1, 0.9, 0.4]],
                         "bbox_type": "norm1"}}]
    got = back(data_dir, "swift", write(data_dir / "s.json", rows))
    assert got == [{"img": "../images/wide.png", "prompt": "找出飞机。", "label": "飞机<box>和油罐<box>",
                    "prompt_boxes": [], "label_boxes": [[30, 40, 150, 120], [180, 20, 270, 80]]}]
    # qwen-vl-finetune README's grounding example answers with one bare JSON object
    qwen = [{"image": "images/big.png", "conversations": [
        {"from": "human", "value": "<image>\nLocate house in this image and output the bbox coordinates in JSON format."},
        {"from": "gpt", "value": '{\n"bbox_2d": [135, 114, 1000, 672]\n}'}]}]
    got = back(data_dir, "qwen", write(data_dir / "q.json", qwen), "--family", "qwen2_5_vl",
               "--min_pixels", 3136, "--max_pixels", 12845056)
    assert got[0]["prompt"].startswith("Locate house") and got[0]["label"] == "<box>"
    assert got[0]["label_boxes"] == [[133.93, 112.32, 992.06, 662.07]]  # big.png 1000x800 is seen at 1008x812
