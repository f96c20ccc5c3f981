"""Scene-class answer parsing, class lists in prompts, accuracy and confusion matrix."""

import pytest

from remoteglm.data.glossary import class_names_zh
from remoteglm.data.instructions import CLASSIFY_PROMPT, classify_prompt
from remoteglm.eval.classify import UNPARSED, ClassParser, classes_in_prompt, evaluate_classification

SAMPLE_CLASSES = ["农田", "住宅区", "海洋", "海滩", "湿地", "河流", "森林", "道路"]


@pytest.fixture(scope="module")
def sample():
    return ClassParser(SAMPLE_CLASSES)


@pytest.fixture(scope="module")
def ucm():
    return ClassParser(class_names_zh("UCM"))


@pytest.mark.parametrize("answer, expected, how", [
    ("森林", "森林", "exact"),
    (" 森林。", "森林", "exact"),
    ("答：这是一片森林", "森林", "exact"),
    ("类别：海滩", "海滩", "exact"),
    ("湿地场景", "湿地", "exact"),
    ("树林", "森林", "synonym"),
    ("沙滩。", "海滩", "synonym"),
    ("Forest.", "森林", "synonym"),
    ("farmland", "农田", "synonym"),
    ("居民区", "住宅区", "synonym"),
    ("图中是一片茂密的森林，中间有空地。", "森林", "contains"),
    ("一条公路穿过树林", "道路", "contains"),  # two classes: the first mentioned
    ("图中是穿过树林的一条公路", "森林", "contains"),
    ("it shows a river between fields", "河流", "contains"),
    ("我不知道", None, "none"),
    ("可以看到一片路发", None, "none"),  # a lone 路 inside other text is no answer
    ("路", "道路", "synonym"),
    ("", None, "none"),
    ("农田、住宅区、海洋、海滩、湿地、河流、森林、道路", None, "ambiguous"),  # echoed the list
])
def test_parse_sample_classes(sample, answer, expected, how):
    assert sample.parse(answer) == (expected, how)


def test_longest_class_name_wins(ucm):
    assert ucm.parse("这是中密度住宅区") == ("中密度住宅区", "exact")
    assert ucm.parse("图中是一片中密度住宅区，房屋整齐") == ("中密度住宅区", "contains")
    assert ucm.parse("高速公路") == ("高速公路", "exact")
    assert ucm.parse("一条高速公路从中间穿过") == ("高速公路", "contains")  # not 公路 / 路
    assert ucm.parse("storage tanks") == ("储油罐", "synonym")
    assert ucm.parse("a seashore") == (None, "none")  # "sea" inside a word is no mention
    assert ucm.parse("tennis court") == ("网球场", "synonym")
    assert ucm.parse("there are some storage tanks.") == ("储油罐", "contains")
    assert ucm.parse("many airplanes at the gate") == ("飞机", "contains")


def test_class_names_are_never_aliases_of_another_class():
    # 海 is a synonym of 海洋, but 海滩 is its own class in the same list
    p = ClassParser(["海洋", "海滩"])
    assert p.parse("海滩") == ("海滩", "exact")
    assert p.parse("海") == ("海洋", "synonym")


def test_classes_in_prompt():
    prompt = classify_prompt(SAMPLE_CLASSES)
    assert prompt == CLASSIFY_PROMPT.format(classes="、".join(SAMPLE_CLASSES))
    assert classes_in_prompt(prompt) == SAMPLE_CLASSES
    for p in ("这张遥感图像属于哪一类场景？可选类别：农田、森林、道路。只回答类别名称。",
              "判断这张航拍图像的场景类型（农田、森林、道路），只回答一个类别。",
              "从以下类别中选出这张图像的场景类别：农田、森林、道路。"):
        assert classes_in_prompt(p) == ["农田", "森林", "道路"]
    assert classes_in_prompt("描述这张图片。") == []


def test_accuracy_per_class_and_confusion():
    classes = ["农田", "森林", "道路"]
    truth = ["森林", "森林", "道路", "农田", "道路"]
    pred = ["森林", "道路", "道路", None, "道路"]
    r = evaluate_classification(truth, pred, classes, ["exact", "contains", "exact", "none", "synonym"])
    assert r.accuracy == pytest.approx(3 / 5)
    assert r.parsed == 4
    assert r.per_class == {"农田": {"n": 1, "correct": 0, "accuracy": 0.0},
                           "森林": {"n": 2, "correct": 1, "accuracy": 0.5},
                           "道路": {"n": 2, "correct": 2, "accuracy": 1.0}}
    #             农田 森林 道路 unparsed
    assert r.confusion == [[0, 0, 0, 1],
                           [0, 1, 1, 0],
                           [0, 0, 2, 0]]
    d = r.to_dict()
    assert d["confusion"]["columns"] == classes + [UNPARSED]
    assert d["match_kinds"] == {"exact": 2, "contains": 1, "none": 1, "synonym": 1}
    with pytest.raises(ValueError, match="not in the class list"):
        evaluate_classification(["沙漠"], ["森林"], classes)


def test_training_records_ask_what_evaluation_asks(tmp_path):
    """The scene-class records the data builder writes and the question evaluation asks are one
    template (remoteglm.data.instructions.CLASSIFY_PROMPT), whichever file evaluation reads."""
    import json
    from pathlib import Path

    from remoteglm.data.build import build_finetune_records
    from remoteglm.eval.evalset import load_eval_set

    classes = ["农田", "住宅区", "森林"]
    splits = ["train", "train", "train", "val", "test", "test"]
    zh = {"dataset": "toy", "classes": ["farm", "residential", "forest"], "classes_zh": classes, "images": [
        {"filename": f"{i}.png", "imgid": i, "split": s, "class": "farm", "class_zh": classes[i % 3],
         "sentences": [{"raw": f"第{i}张图里有许多农田。"}]} for i, s in enumerate(splits)]}
    (tmp_path / "images").mkdir()
    for im in zh["images"]:
        (tmp_path / "images" / im["filename"]).write_bytes(b"not read here")
    out = build_finetune_records(zh, tmp_path / "images", tmp_path, seed=3)
    asked = classify_prompt(classes)
    records = [r for split in out.values() for r in split if r["task"] == "classify"]
    assert len(records) == len(splits) and {r["prompt"] for r in records} == {asked}
    dataset = tmp_path / "dataset_toy_zh.json"
    dataset.write_text(json.dumps(zh, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "toy_test.json").write_text(json.dumps(out["test"], ensure_ascii=False), encoding="utf-8")
    for es in (load_eval_set(dataset, "test", image_root=tmp_path / "images"), load_eval_set(tmp_path / "toy_test.json")):
        assert len(es.images) == 2 and {im.classify_prompt for im in es.images} == {asked}
    # the bundled sample's training records ask it too
    sample = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample_train.json"
    prompts = {r["prompt"] for r in json.loads(sample.read_text(encoding="utf-8")) if "类别" in r["prompt"]}
    assert prompts == {classify_prompt(SAMPLE_CLASSES)}
