"""Bad inputs to export / import_chat: one line each (``error: ...``, exit 2), and nothing written:
no output file, an existing output untouched, no stored image."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from remoteglm.commands import export, import_chat

from exchangehelp import MAX_PIXELS, MIN_PIXELS

QWEN = ["--family", "qwen2_5_vl", "--min_pixels", str(MIN_PIXELS), "--max_pixels", str(MAX_PIXELS)]


def fails(main, args, capsys, says: str, out: Path) -> None:
    before = out.read_bytes() if out.exists() else None
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err, err
    assert (out.read_bytes() if out.exists() else None) == before
    assert not [p for p in out.parent.glob("*_images")] if out.parent.exists() else True


def write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def lf_row(content="<image>描述这张图片。", answer="农田。", images=("images/wide.png",), **extra) -> dict:
    return {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": answer}],
            "images": list(images), **extra}


# ---- export -------------------------------------------------------------------------------------
def rec(**kw) -> dict:
    return {"img": "images/big.png", "prompt": "描述这张图片。", "label": "农田。"} | kw


@pytest.mark.parametrize("records, args, says", [
    ({"annotations": []}, [], "unknown format"),
    ([rec(img="images/nope.png")], [], "image file not found"),
    ([rec(prompt="<box>在哪？", prompt_boxes=[[10, 10, 1200, 50]])], QWEN, "reaches outside the 1000 x 800 image"),
    ([rec(prompt="<box>在哪？", prompt_boxes=[[10, 10, 100, 50]])], [], "name the family"),
    ([rec(prompt="<image>描述")], [], "holds '<image>'"),
    ([rec(prompt="<box>在哪？", prompt_boxes=[[10, 10, 100, 50]])], ["--family", "qwen2_5_vl"], "min/max pixels"),
    ([rec(prompt="<box>在哪？", prompt_boxes=[[10, 10, 10.2, 50]])], ["--family", "visualglm"], "under one step"),
])
def test_export_refuses_in_one_line(data_dir, capsys, records, args, says):
    src = write(data_dir / "bad.json", records)
    fails(export.main, ["llamafactory", src, data_dir / "out" / "x.json", *args], capsys, says, data_dir / "out" / "x.json")


def test_export_other_refusals(data_dir, capsys):
    src = data_dir / "records.json"
    fails(export.main, ["qwen", src, data_dir / "q.json", "--family", "glm4v"], capsys, "train Qwen models", data_dir / "q.json")
    fails(export.main, ["swift", src, src], capsys, "is the input file", src)
    fails(export.main, ["swift", src, data_dir / "s.json", "--image_max_pixels", "100"], capsys,
          "LLaMA-Factory's settings", data_dir / "s.json")
    fails(export.main, ["swift", src, data_dir / "s.txt"], capsys, "name the output .json", data_dir / "s.txt")
    write(data_dir / "s.json", ["old"])  # an existing output stays as it was
    bad = write(data_dir / "late.json", json.loads(src.read_text())[:3] + [rec(img="images/nope.png")])
    fails(export.main, ["swift", bad, data_dir / "s.json"], capsys, "item 3: image file not found", data_dir / "s.json")


# ---- import -------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows, says", [
    ({"messages": []}, "expected a JSON list of samples"),
    ([], "no samples in the file"),
    (["text"], "item 0 is a str"),
    ([{"instruction": "x", "output": "y"}], "no 'messages' or 'conversations'"),
    ([lf_row(images=("images/nope.png",))], "image not found"),
    ([lf_row(answer='```json\n[{"bbox_2d": [0, 0, 1200, 100]}]\n```')], "lies outside the image"),  # (qwen3_vl: 0..1000)
    ([lf_row(answer="农田。"), {"conversations": [{"from": "human", "value": "<image>x"},
                                                {"from": "function_call", "value": "y"}], "images": ["a.png"]}],
     "item 1: unknown role 'function_call'"),
    ([lf_row(content="<image><image>比较", images=("images/wide.png", "images/big.png"))], "2 image(s)"),
    ([lf_row(content="描述", images=())], "0 image(s)"),
    ([{"messages": [{"role": "system", "content": "你是助手"}, *lf_row()["messages"]], "images": ["images/wide.png"]}],
     "--drop_system"),
    ([{"messages": [*lf_row()["messages"], {"role": "user", "content": "还有呢？"}], "images": ["images/wide.png"]}],
     "user/assistant pairs"),
    ([lf_row(answer="")], "the last answer is empty"),
    ([lf_row(content="<image>[{\"bbox_2d\": [1, 2, 3, 4]}]是什么？", answer="船。")], "name the family"),
])
def test_import_refuses_in_one_line(data_dir, capsys, rows, says):
    src = write(data_dir / "lf.json", rows)
    args = ["--family", "qwen3_vl"] if "outside" in says else []
    fails(import_chat.main, ["llamafactory", src, data_dir / "back.json", *args], capsys, says, data_dir / "back.json")


def test_import_refuses_per_format(data_dir, capsys):
    out = data_dir / "back.json"
    qwen = write(data_dir / "q.json", [{"image": "images/wide.png", "conversations": [
        {"from": "system", "value": "x"}, {"from": "gpt", "value": "y"}]}])
    fails(import_chat.main, ["qwen", qwen, out], capsys, "unknown role 'system'", out)
    swift = write(data_dir / "s.json", [lf_row(answer="<bbox>", objects={"ref": [], "bbox": [[0, 0, 2000, 10]]})])
    fails(import_chat.main, ["swift", swift, out, "--family", "qwen3_vl"], capsys, "not a box on the 300 x 200 image", out)
    swift = write(data_dir / "s.json", [lf_row(answer="<bbox><bbox>", objects={"ref": [], "bbox": [[0, 0, 20, 10]]})])
    fails(import_chat.main, ["swift", swift, out], capsys, "more <bbox> placeholders than objects boxes", out)
    oa = write(data_dir / "o.json", [{"messages": [{"role": "tool", "content": "x"}]}])
    fails(import_chat.main, ["openai", oa, out], capsys, "unknown role 'tool'", out)
    conv = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.org/a.png"}},
                                                      {"type": "text", "text": "描述"}]},
                         {"role": "assistant", "content": "农田。"}]}
    fails(import_chat.main, ["openai", write(data_dir / "o.json", [conv]), out], capsys, "download the images", out)
    jl = data_dir / "x.jsonl"
    jl.write_text(json.dumps(lf_row()) + "\n{not json\n", encoding="utf-8")
    fails(import_chat.main, ["llamafactory", jl, out], capsys, "line 2 is not JSON", out)
    jl.write_text("\n\n", encoding="utf-8")
    fails(import_chat.main, ["llamafactory", jl, out], capsys, "no samples in the file", out)


def test_a_late_bad_sample_leaves_nothing_written(data_dir, capsys):
    """The first sample's image comes as a data URL: not stored, since a later sample is bad."""
    buf = io.BytesIO()
    Image.new("RGB", (20, 30), (1, 2, 3)).save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    good = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": "描述"}]},
                         {"role": "assistant", "content": "农田。"}]}
    bad = {"messages": [{"role": "user", "content": "描述"}, {"role": "assistant", "content": "农田。"}]}
    out = write(data_dir / "back.json", ["old"])
    fails(import_chat.main, ["openai", write(data_dir / "o.json", [good, bad]), out], capsys, "item 1: 0 images", out)
    assert import_chat.main(["openai", str(write(data_dir / "o.json", [good])), str(out)]) == 0
    stored = list((data_dir / "back_images").iterdir())
    assert len(stored) == 1 and stored[0].suffix == ".png"
    assert json.loads(out.read_text(encoding="utf-8")) == [{"img": f"back_images/{stored[0].name}", "prompt": "描述",
                                                            "label": "农田。"}]
