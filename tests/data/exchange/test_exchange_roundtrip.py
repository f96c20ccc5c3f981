"""Round trip: records -> each tool's file -> records gives the same records (boxes within 1 px),
for captions, a conversation (history), VQA, classification and every grounding kind, through
the commands a user runs, for every family's box text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remoteglm.commands import export, import_chat
from remoteglm.data.box_text import render_record
from remoteglm.data.records import load_records
from remoteglm.model.image import image_size
from remoteglm.registry import family_named

from exchangehelp import MAX_PIXELS, MIN_PIXELS

FORMATS = ("llamafactory", "swift", "qwen")
PIXELS = ["--min_pixels", str(MIN_PIXELS), "--max_pixels", str(MAX_PIXELS)]


def roundtrip(data_dir: Path, fmt: str, *target, src: str = "records.json", out_name: str | None = None,
              export_extra=(), import_extra=()) -> tuple[Path, Path]:
    out = data_dir / "tool" / (out_name or f"{fmt}.json")
    back = data_dir / "back" / f"{fmt}.json"
    assert export.main([fmt, str(data_dir / src), str(out), *target, *export_extra]) == 0
    assert import_chat.main([fmt, str(out), str(back), *target, *import_extra]) == 0
    return out, back


def assert_same_records(src: Path, back: Path, exact_labels: bool = True) -> None:
    """Every field equal, images the same files, boxes within 1 px (labels equal)."""
    a, b = json.loads(src.read_text(encoding="utf-8")), json.loads(back.read_text(encoding="utf-8"))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (src.parent / x["img"]).resolve() == (back.parent / y["img"]).resolve()
        assert {k: v for k, v in x.items() if k not in ("img", "prompt_boxes", "label_boxes")} == \
               {k: v for k, v in y.items() if k not in ("img", "prompt_boxes", "label_boxes")}
        for key in ("prompt_boxes", "label_boxes"):
            bx, by = x.get(key, []), y.get(key, [])
            assert len(bx) == len(by), (key, x, y)
            for p, q in zip(bx, by):
                assert max(abs(u - v) for u, v in zip(p[:4], q[:4])) <= 1.0, (p, q)
                assert p[4:] == q[4:]
    load_records(back)  # what fine-tuning reads


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_kind_round_trips_through_qwen2_5_vl_resized_pixels(data_dir, fmt):
    _, back = roundtrip(data_dir, fmt, "--family", "qwen2_5_vl", *PIXELS)
    assert_same_records(data_dir / "records.json", back)


@pytest.mark.parametrize("fmt", FORMATS)
def test_labelled_boxes_round_trip_in_qwen_json(data_dir, fmt):
    for family in ("qwen2_5_vl", "qwen3_vl"):
        _, back = roundtrip(data_dir, fmt, "--family", family, *PIXELS, src="labelled.json")
        assert_same_records(data_dir / "labelled.json", back)


@pytest.mark.parametrize("family", ["qwen3_vl", "glm4v", "visualglm"])
@pytest.mark.parametrize("fmt", ["llamafactory", "swift"])
def test_every_kind_round_trips_in_relative_families(data_dir, fmt, family):
    _, back = roundtrip(data_dir, fmt, "--family", family)
    assert_same_records(data_dir / "records.json", back)


@pytest.mark.parametrize("family", ["glm4v", "visualglm"])
def test_bracket_labels_come_back_as_the_words_before_the_box(data_dir, family):
    """GLM's box text does not mark where a label starts: a labelled box returns as its label's
    words in front of an unlabelled box, and the family's text is the same as before."""
    _, back = roundtrip(data_dir, "llamafactory", "--family", family, src="labelled.json")
    a = load_records(data_dir / "labelled.json")[0]
    b = load_records(back)[0]
    assert b.label == "2个：储油罐<box>\n大型储油罐<box>" and all(x.label is None for x in b.label_boxes)
    codec = family_named(family).box_codec()
    size = image_size(a.img)
    assert render_record(a, codec, size) == render_record(b, codec, size)


def test_llamafactory_boxes_follow_its_own_resize(data_dir):
    """LLaMA-Factory scales big.png (800,000 px) into image_max_pixels before the processor's own
    resize: the box numbers are of that image, and still come back to the same pixels."""
    args = ["--family", "qwen2_5_vl", "--min_pixels", "3136", "--max_pixels", "12845056"]
    out, back = roundtrip(data_dir, "llamafactory", *args, export_extra=["--image_max_pixels", "200704"],
                          import_extra=["--image_max_pixels", "200704"])
    rows = json.loads(out.read_text(encoding="utf-8"))
    # 1000x800 -> int(1000 * 0.5009), int(800 * 0.5009) = 500x400 -> 504x392 (not 476x392 of one resize)
    assert rows[4]["messages"][1]["content"] == '```json\n[\n\t{"bbox_2d": [51, 98, 151, 196]}\n]\n```'
    assert_same_records(data_dir / "records.json", back)


def test_swift_objects_keep_original_pixels_and_placeholders(data_dir):
    out, back = roundtrip(data_dir, "swift", "--family", "qwen2_5_vl", *PIXELS, src="labelled.json",
                          out_name="swift.jsonl")
    row = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert row["messages"][1]["content"] == ('2个：```json\n[\n\t{"bbox_2d": <bbox>, "label": "<ref-object>"},\n'
                                             '\t{"bbox_2d": <bbox>, "label": "<ref-object>"}\n]\n```')
    assert row["objects"] == {"ref": ["储油罐", "大型储油罐"], "bbox": [[10, 20, 300, 400], [500, 60, 990, 790]],
                              "bbox_type": "real"}
    assert row["chat_template_kwargs"] == {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS}
    assert json.loads(back.read_text(encoding="utf-8")) == [json.loads((data_dir / "labelled.json").read_text())[0]
                                                            | {"img": "../images/big.png"}]


def test_swift_text_boxes_and_history_loss(data_dir):
    out, back = roundtrip(data_dir, "swift", "--family", "qwen2_5_vl", *PIXELS, export_extra=["--swift_boxes", "text"])
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert not any("objects" in r for r in rows)
    conv = rows[1]["messages"]
    assert [m.get("loss") for m in conv] == [None, False, None, False, None, None]
    assert_same_records(data_dir / "records.json", back)


def test_captions_need_no_family_and_paths_can_be_relative(data_dir):
    caps = data_dir / "caps.json"
    caps.write_text(json.dumps(json.loads((data_dir / "records.json").read_text())[:4], ensure_ascii=False))
    out, back = roundtrip(data_dir, "qwen", src="caps.json", export_extra=["--relative"])
    assert json.loads(out.read_text(encoding="utf-8"))[0]["image"] == "../images/wide.png"
    assert_same_records(caps, back)
    out, back = roundtrip(data_dir, "llamafactory", src="caps.json", out_name="abs.json")
    assert Path(json.loads(out.read_text(encoding="utf-8"))[0]["images"][0]).is_absolute()
    assert_same_records(caps, back)


def test_llamafactory_dataset_info_keeps_other_datasets(data_dir):
    info = data_dir / "tool" / "dataset_info.json"
    info.parent.mkdir()
    info.write_text(json.dumps({"mine": {"file_name": "other.json"}}))
    roundtrip(data_dir, "llamafactory", "--family", "qwen3_vl", export_extra=["--dataset_name", "rs_zh"])
    assert json.loads(info.read_text()) == {
        "mine": {"file_name": "other.json"},
        "rs_zh": {"file_name": "llamafactory.json", "formatting": "sharegpt",
                  "columns": {"messages": "messages", "images": "images"},
                  "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}


def test_karpathy_dataset_exports_its_split(tmp_path):
    from exchangehelp import make_images

    make_images(tmp_path / "images")
    ds = {"images": [{"filename": "wide.png", "filepath": "images", "split": "train",
                      "sentences": [{"raw": "一片农田。"}, {"raw": "绿色的田地。"}]},
                     {"filename": "big.png", "filepath": "images", "split": "test", "sentences": [{"raw": "河流。"}]}]}
    (tmp_path / "dataset_x_zh.json").write_text(json.dumps(ds, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "x.jsonl"
    assert export.main(["swift", str(tmp_path / "dataset_x_zh.json"), str(out), "--split", "train"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["messages"][1]["content"] for r in rows] == ["一片农田。", "绿色的田地。"]


@pytest.mark.parametrize("main, words", [
    (export.main, ["llamafactory", "dataset_info.json", "sharegpt", "<ref-object>", "QWENVL_BBOX_FORMAT=new",
                   "qwen-vl-finetune", "--image_max_pixels", "llamafactory-cli train", "swift sft", "--mask_history"]),
    (import_chat.main, ["openai", "image_url", "history", "one image per sample", "--drop_system", "--family"]),
])
def test_help_explains_the_formats_and_the_tools_commands(capsys, main, words):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and all(w in out for w in words), [w for w in words if w not in out]


def test_llamafactory_export_says_which_processor_range_its_boxes_assume(data_dir, capsys):
    """LLaMA-Factory hands no pixel range to the processor (the model folder's own decides): boxes
    exported for a range given by hand come with a note naming it; with the folder (--model) none."""
    roundtrip(data_dir, "llamafactory", "--family", "qwen2_5_vl", *PIXELS)
    note = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("note:")]
    assert note == [f"note: the boxes assume the model folder's preprocessor_config.json has min_pixels {MIN_PIXELS} "
                    f"/ max_pixels {MAX_PIXELS}; export with --model MODEL to take its own"]
