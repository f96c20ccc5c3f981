"""VQA answer normalisation (是/否, counts, 农村/城市, areas) on realistic answers, and accuracy
overall and per question type."""

import pytest

from remoteglm.eval.normalize import (AREA_BINS, RURAL, URBAN, Area, area_bin, count_range, normalize_answer, normalize_area,
                                      normalize_count, normalize_rural_urban, normalize_yes_no, parse_area)
from remoteglm.eval.numbers import chinese_number, first_number, numbers
from remoteglm.eval.vqa import answer_kind, canonical_qtype, evaluate_vqa, expected_value, is_correct


# ---- yes / no ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("answer", [
    "是", "是。", "是的", "是的，有两座桥", "对", "对的", "有", "有的", "有。", "存在", "正确", "没错", "当然有",
    "确实有一条河", "图中有两座桥", "这张图像中存在一座桥", "可以看到一条道路穿过农田", "图中可以看到几栋建筑",
    "有不少房子", "有，图中有许多建筑物", "yes", "Yes.", "YES", "Yes, there is a bridge.", "true", "是的！",
    "答：是", "答案：是的", "但是有一条河",  # 但是 (but) is not a yes; 有 is
    "图中包含一个停车场", "只有一座桥", "ｙｅｓ",
])
def test_yes(answer):
    assert normalize_yes_no(answer) == "是"


@pytest.mark.parametrize("answer", [
    "否", "否。", "不是", "不", "不，图中没有", "不对", "没有", "没有。", "没", "无", "不存在", "图中没有桥梁",
    "这张图里不存在桥", "图像中并没有河流", "看不到任何桥", "未发现建筑物", "没有看到飞机", "并非如此",
    "no", "No.", "NO", "There is no bridge.", "Not at all", "false", "答：否", "没有，只有农田",
    "不，道路比建筑物少", "不是的，这里是农田",
])
def test_no(answer):
    assert normalize_yes_no(answer) == "否"


@pytest.mark.parametrize("answer", [
    "", "   ", "我不知道", "不确定", "无法判断", "看不清楚", "难以确定", "不好说", "I don't know", "not sure",
    "图中是否有桥？",  # an echoed question decides nothing
    "道路比建筑物少",  # no yes/no word
    "非常多的房子", "2", "森林", "无人机",
])
def test_yes_no_undecided(answer):
    assert normalize_yes_no(answer) is None


def test_first_decisive_word_wins():
    assert normalize_yes_no("是的，没有桥") == "是"  # 是 comes first
    assert normalize_yes_no("没有，但是有一条河") == "否"
    assert normalize_yes_no("不确定，可能有") is None  # a hedge before any decision
    assert normalize_yes_no("有，但不确定") == "是"


# ---- numbers -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("run, value", [
    ("零", 0), ("一", 1), ("二", 2), ("两", 2), ("三", 3), ("十", 10), ("十五", 15), ("二十", 20), ("二十一", 21),
    ("九十九", 99), ("一百", 100), ("一百零五", 105), ("一百一十", 110), ("一百十", 110), ("三百五", 350),
    ("三百五十", 350), ("两千", 2000), ("两千零一十", 2010), ("一万", 10000), ("两万三千", 23000), ("两万三", 23000),
    ("十万", 100000), ("一亿三千万", 130000000), ("叁拾", 30),
])
def test_chinese_numbers(run, value):
    assert chinese_number(run) == (value, len(run))


def test_chinese_number_prefixes():
    assert chinese_number("两三") == (2, 1)  # a range "two or three": its first number
    assert chinese_number("三四十") == (3, 1)
    assert chinese_number("万") is None and chinese_number("百") is None


@pytest.mark.parametrize("answer, count", [
    ("3", "3"), ("3。", "3"), ("三", "3"), ("两", "2"), ("二十一", "21"), ("21个", "21"), ("有3座", "3"),
    ("图中有三座桥", "3"), ("是的，有两座桥", "2"), ("大约有二十多栋建筑", "20"), ("共有 12 辆汽车", "12"),
    ("１２", "12"), ("1,200", "1200"), ("3万", "30000"), ("一百零五栋房子", "105"),
    ("图中有一些建筑，共12栋", "12"),  # 一些 is no number
    ("第一座桥旁边有三栋楼", "3"),  # 第一 is an ordinal
    ("道路两旁有五栋房子", "5"),  # 两旁 is no number
    ("十分密集，大约四十栋", "40"),  # 十分 (very) is no number
    ("两三个", "2"), ("There are two bridges.", "2"), ("twenty-one", "21"), ("twenty one houses", "21"),
    ("没有", "0"), ("没有桥", "0"), ("图中没有建筑物", "0"), ("一座都没有", "0"), ("一个也没有", "0"), ("零", "0"),
    ("0", "0"), ("无", "0"), ("none", "0"), ("no buildings", "0"),
    ("有3座，没有更多", "3"),  # the number comes first
    ("2.5", "2.5"),
])
def test_counts(answer, count):
    assert normalize_count(answer) == count


@pytest.mark.parametrize("answer", ["", "很多", "几座", "十几栋", "数百", "无法确定", "不知道", "一些房子", "森林"])
def test_count_unreadable(answer):
    assert normalize_count(answer) is None


def test_numbers_positions():
    assert numbers("有3座桥和二十一栋房子") == [(1, 2, 3.0), (5, 8, 21.0)]
    assert first_number("m2 的 5 平方米") == 5.0  # the 2 of m2 is part of a unit
    assert first_number("没有数字") is None


# ---- rural / urban -----------------------------------------------------------------------------------
@pytest.mark.parametrize("answer, expected", [
    ("农村", RURAL), ("农村。", RURAL), ("乡村", RURAL), ("这是一个农村地区", RURAL), ("农村地区", RURAL),
    ("rural", RURAL), ("It is a rural area.", RURAL), ("countryside", RURAL), ("这里是乡下", RURAL),
    ("不是城市，是农村", RURAL), ("非城市", RURAL), ("not a city", RURAL), ("这不是城市", RURAL),
    ("城市", URBAN), ("城区", URBAN), ("这是城市地区", URBAN), ("市区", URBAN), ("城镇", URBAN), ("urban", URBAN),
    ("An urban area", URBAN), ("city", URBAN), ("不是农村", URBAN), ("不属于农村，是城市", URBAN),
    ("", None), ("不确定", None), ("城市和农村都有", None), ("suburban", None), ("森林", None),
])
def test_rural_urban(answer, expected):
    assert normalize_rural_urban(answer) == expected


# ---- area --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, name", [(0, "0平方米"), (1, "1-10平方米"), (10, "1-10平方米"), (11, "11-100平方米"),
                                         (100, "11-100平方米"), (101, "101-1000平方米"), (1000, "101-1000平方米"),
                                         (1001, "1000平方米以上"), (5e6, "1000平方米以上")])
def test_area_bins(value, name):
    assert area_bin(value) == name


@pytest.mark.parametrize("answer, expected", [
    ("34平方米", "11-100平方米"), ("34 平方米", "11-100平方米"), ("34m2", "11-100平方米"), ("34 m²", "11-100平方米"),
    ("34㎡", "11-100平方米"), ("大约30平米", "11-100平方米"), ("5平方米", "1-10平方米"), ("0平方米", "0平方米"),
    ("0m2", "0平方米"), ("0", "0平方米"), ("没有", "0平方米"), ("面积为一百平方米", "11-100平方米"),
    ("1,500 m²", "1000平方米以上"), ("0.5公顷", "1000平方米以上"), ("1平方公里", "1000平方米以上"),
    ("2亩", "1000平方米以上"),  # 1333 平方米
    ("120", "101-1000平方米"),  # a bare number is in 平方米
    ("10到100平方米之间", "11-100平方米"), ("between 10m2 and 100m2", "11-100平方米"),
    ("between 0m2 and 10m2", "1-10平方米"), ("between 100m2 and 1000m2", "101-1000平方米"),
    ("超过1000平方米", "1000平方米以上"), ("more than 1000m2", "1000平方米以上"), ("1000平方米以上", "1000平方米以上"),
    ("小于10平方米", "1-10平方米"), ("1-10平方米", "1-10平方米"),
    ("是的，住宅区面积约为250平方米", "101-1000平方米"),  # says more: the first area counts
    ("", None), ("很大", None), ("无法确定", None),
])
def test_areas(answer, expected):
    assert normalize_area(answer) == expected


def test_area_bin_names_read_back():
    assert [normalize_area(b) for b in AREA_BINS] == list(AREA_BINS)


def test_parse_area_values_and_ranges():
    assert parse_area("3万平方米") == Area(30000.0, 30000.0)
    assert parse_area("10到100平方米") == Area(10.0, 100.0)
    assert parse_area("超过1000平方米").high == float("inf")
    assert parse_area("2 km2") == Area(2e6, 2e6)
    assert parse_area("没有") is None


# ---- kinds, types, correctness -----------------------------------------------------------------------
def test_types_and_kinds():
    assert canonical_qtype("comp") == "comparison" and canonical_qtype("Rural_Urban") == "rural_urban"
    assert canonical_qtype("presence") == "presence" and canonical_qtype("colour") is None and canonical_qtype(None) is None
    assert answer_kind("presence", "是") == answer_kind("comparison", "否") == "yesno"
    assert answer_kind("count", "3") == "count" and answer_kind("area", "34平方米") == "area"
    assert answer_kind("rural_urban", "农村") == "rural_urban"
    # no (known) type: the label tells
    assert answer_kind(None, "否") == "yesno" and answer_kind("other", "12") == "count"
    assert answer_kind(None, "城市") == "rural_urban" and answer_kind(None, "120平方米") == "area"
    assert answer_kind(None, "一片森林") is None
    with pytest.raises(ValueError, match="kind must be one of"):
        normalize_answer("是", "colour")


@pytest.mark.parametrize("answer, label, kind, ok", [
    ("是的，有两座桥", "是", "yesno", True),
    ("是的，有两座桥", "否", "yesno", False),
    ("没有", "否", "yesno", True),
    ("是的，有两座桥", "2", "count", True),  # for a count, the first number
    ("两", "2", "count", True),
    ("二十一栋", "21", "count", True),
    ("三栋", "4", "count", False),
    ("很多", "4", "count", False),  # unreadable: wrong
    ("这是农村地区", "农村", "rural_urban", True),
    ("城市", "农村", "rural_urban", False),
    ("约50平方米", "34平方米", "area", True),  # the same RSVQA-HR bin
    ("500平方米", "34平方米", "area", False),
    ("0 m2", "0平方米", "area", True),
])
def test_is_correct(answer, label, kind, ok):
    assert is_correct(answer, label, kind) is ok


def test_accuracy_overall_and_per_type():
    rows = [  # qtype, label, answer, correct?
        ("presence", "是", "是的，有两座桥", True),
        ("presence", "否", "有", False),
        ("presence", "否", "图中没有桥", True),
        ("presence", "是", "不知道", False),  # unreadable
        ("comparison", "是", "对", True),
        ("comparison", "否", "是", False),
        ("count", "3", "三座", True),
        ("count", "21", "二十一", True),
        ("count", "0", "没有", True),
        ("count", "5", "许多", False),  # unreadable
        ("rural_urban", "农村", "农村地区", True),
        ("area", "34平方米", "大约40平方米", True),
        ("area", "0平方米", "1000平方米以上", False),
    ]
    result, per_q = evaluate_vqa([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    assert [p["correct"] for p in per_q] == [r[3] for r in rows]
    assert per_q[0] == {"normalized": "是", "expected": "是", "correct": True}
    assert per_q[3]["normalized"] is None
    assert (result.n, result.correct, result.parsed) == (13, 8, 11)
    assert result.accuracy == pytest.approx(8 / 13)
    assert list(result.per_type) == ["presence", "comparison", "count", "rural_urban", "area"]
    acc = {q: t["accuracy"] for q, t in result.per_type.items()}
    assert acc == pytest.approx({"presence": 2 / 4, "comparison": 1 / 2, "count": 3 / 4, "rural_urban": 1.0, "area": 1 / 2})
    assert result.average_accuracy == pytest.approx((0.5 + 0.5 + 0.75 + 1 + 0.5) / 5)
    assert result.per_type["presence"]["answers"] == {"是": 2, "否": 1, "unparsed": 1}
    assert result.per_type["count"] == {"n": 4, "correct": 3, "parsed": 3, "accuracy": 0.75,
                                        "answers": {"3": 1, "21": 1, "0": 1, "unparsed": 1}}
    d = result.to_dict()
    assert d["accuracy"] == result.accuracy and d["average_accuracy"] == result.average_accuracy
    assert set(d) == {"accuracy", "average_accuracy", "n", "correct", "parsed", "per_type"}


def test_accuracy_errors_and_other_types():
    with pytest.raises(ValueError, match="not a yesno answer"):
        evaluate_vqa(["presence"], ["也许"], ["是"])
    with pytest.raises(ValueError, match="cannot tell"):
        evaluate_vqa(["colour"], ["红色"], ["红色"])
    with pytest.raises(ValueError, match="1 types, 2 labels"):
        evaluate_vqa(["presence"], ["是", "否"], ["是"])
    # an unknown type is grouped under its own name, after the known ones
    result, _ = evaluate_vqa(["other", "presence"], ["12", "是"], ["12", "是"])
    assert list(result.per_type) == ["presence", "other"] and result.accuracy == 1.0


# ---- RSVQA's binned labels, as the importer writes them (remoteglm.data.rsvqa.answer_zh) -----------
@pytest.mark.parametrize("label, expected, right, wrong", [
    ("12", "12", ["12", "十二栋"], ["11", "很多"]),
    ("10到100之间", "10-100", ["50", "五十栋", "10", "100"], ["9", "101", "没有"]),
    ("between 10 and 100", "10-100", ["二十"], ["5"]),
    ("超过1000", "≥1001", ["1001", "两千"], ["1000", "999"]),
    ("少于10", "0-9", ["0", "没有", "9"], ["10", "十一"]),
    ("1000以上", "≥1000", ["1000"], ["999"]),
    ("0", "0", ["没有", "零", "0"], ["1", "一座"]),
])
def test_count_labels_with_ranges(label, expected, right, wrong):
    assert expected_value(label, "count") == expected
    assert all(is_correct(a, label, "count") for a in right), [a for a in right if not is_correct(a, label, "count")]
    assert not any(is_correct(a, label, "count") for a in wrong), [a for a in wrong if is_correct(a, label, "count")]


@pytest.mark.parametrize("label, bin_", [
    ("0平方米", "0平方米"), ("10631平方米", "1000平方米以上"), ("100到1000平方米之间", "101-1000平方米"),
    ("超过1000平方米", "1000平方米以上"), ("10到100平方米之间", "11-100平方米"), ("少于10平方米", "1-10平方米"),
])
def test_importer_area_labels(label, bin_):
    assert answer_kind("area", label) == "area" and expected_value(label, "area") == bin_


def test_importer_qtypes_and_range_counts_in_accuracy():
    # the importer keeps RSVQA's own type names ("comp")
    result, per_q = evaluate_vqa(["comp", "count", "count"], ["否", "10到100之间", "超过1000"], ["不", "三十", "500"],
                                 [answer_kind("comp", "否"), "count", "count"])
    assert [p["correct"] for p in per_q] == [True, True, False]
    assert per_q[1] == {"normalized": "30", "expected": "10-100", "correct": True}
    assert list(result.per_type) == ["comparison", "count"]
    assert count_range("10到100之间") == (10, 100) and count_range("很多") is None
