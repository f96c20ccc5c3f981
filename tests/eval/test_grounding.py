"""Grounding metrics on hand-computed cases: IoU, referring Acc@0.5 / Acc@0.7 / mean IoU with parse
failures counted, detect/count precision and recall with greedy one-to-one matching; VRSBench's
published grounding anchors beside ours."""

import math

import pytest

from remoteglm.boxes import Box, iou
from remoteglm.errors import RemoteGLMError
from remoteglm.eval.anchors import ANCHORS, anchor_table, detect_benchmark
from remoteglm.eval.evaluate import summary_table
from remoteglm.eval.grounding import match_boxes, score_detection, score_referring


def test_iou_the_metrics_use_by_hand():
    """remoteglm.boxes.iou on the cases grounding scoring meets (continuous pixels, no "+1")."""
    assert iou(Box(0, 0, 10, 10), Box(0, 0, 10, 10)) == 1.0
    assert iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(50 / 150)   # half overlap side by side
    assert iou(Box(0, 0, 10, 10), Box(0, 0, 5, 5)) == pytest.approx(25 / 100)     # one inside the other
    assert iou(Box(0, 0, 10, 10), Box(10, 0, 20, 10)) == 0.0                      # touching edges: no area shared
    assert iou(Box(0, 0, 10, 10), Box(3, 3, 3, 8)) == 0.0                          # a zero-width prediction
    assert iou(Box(0, 0, 10, 10), Box(8, 8, 2, 2)) == 0.0                          # corners swapped: no area
    # Box and plain (x1, y1, x2, y2) score alike; a Box's label plays no part
    assert score_referring([Box(0, 0, 10, 10, "储油罐")], [(5, 0, 15, 10)])["mean_iou"] == pytest.approx(1 / 3)
    assert score_detection([[(0, 0, 10, 10)]], [[Box(1, 0, 10, 10, "x")]])["true_positives"] == 1


def test_referring_by_hand():
    truth = [(0, 0, 10, 10)] * 5
    pred = [(0, 0, 10, 10),      # IoU 1
            (0, 0, 10, 7),       # 0.7: counts at both thresholds (>=)
            (0, 0, 10, 5),       # 0.5: counts at 0.5 only
            (0, 0, 10, 4),       # 0.4: a miss
            None]                # the answer held no readable box: a parse failure, IoU 0, a miss
    r = score_referring(truth, pred)
    assert r["n"] == 5 and r["parse_failures"] == 1
    assert r["parse_failure_rate"] == pytest.approx(0.2)
    assert r["acc@0.5"] == pytest.approx(3 / 5)
    assert r["acc@0.7"] == pytest.approx(2 / 5)
    assert r["mean_iou"] == pytest.approx((1 + 0.7 + 0.5 + 0.4 + 0) / 5)
    assert r["ious"] == pytest.approx([1, 0.7, 0.5, 0.4, 0])


def test_referring_all_parse_failures_and_refusals():
    r = score_referring([(0, 0, 4, 4), (1, 1, 2, 2)], [None, None])
    assert (r["acc@0.5"], r["acc@0.7"], r["mean_iou"], r["parse_failure_rate"]) == (0, 0, 0, 1)
    with pytest.raises(RemoteGLMError, match="2 true boxes but 1 prediction"):
        score_referring([(0, 0, 4, 4), (1, 1, 2, 2)], [None])
    with pytest.raises(RemoteGLMError, match="nothing to score"):
        score_referring([], [])
    with pytest.raises(RemoteGLMError, match=r"true box 1 .*x2 > x1"):
        score_referring([(0, 0, 4, 4), (5, 1, 2, 2)], [None, None])
    with pytest.raises(RemoteGLMError, match=r"true box 0 .*four numbers"):
        score_referring([(0, 0, math.nan, 4)], [None])


def test_greedy_matching_takes_the_best_pair_first():
    # same heights, so each IoU is the intervals' IoU. p1-t0 35/65 = 0.538, p1-t1 45/55 = 0.818,
    # p0-t0 26/50 = 0.52, p0-t1 6/70 = 0.086. Truth by truth, t0 would take its best, p1, and leave t1
    # nothing above 0.5 (one match); the best pair first gives t1-p1, then t0-p0 (two matches).
    truth = [(0, 0, 50, 10), (20, 0, 70, 10)]
    pred = [(0, 0, 26, 10), (15, 0, 65, 10)]
    pairs = match_boxes(truth, pred, 0.5)
    assert [(t, p) for t, p, _ in pairs] == [(1, 1), (0, 0)]
    assert [v for _, _, v in pairs] == pytest.approx([45 / 55, 26 / 50])
    assert match_boxes(truth, pred, 0.6) == [(1, 1, pytest.approx(45 / 55))]
    assert score_detection([truth], [pred])["true_positives"] == 2


def test_detection_duplicates_are_not_double_counted():
    truth = [[(0, 0, 10, 10), (20, 20, 30, 30)],      # image 0: two objects
             [(0, 0, 10, 10)],                         # image 1: one object
             [(0, 0, 10, 10)],                         # image 2: the answer is unreadable
             []]                                       # image 3: nothing there
    pred = [[(0, 0, 10, 10), (0, 0, 10, 10), (1, 0, 10, 10)],   # three on the first object: 1 TP, 2 FP; second missed
            [(0, 0, 10, 4)],                                     # IoU 0.4: FP and a miss
            None,                                                # parse failure: no boxes, a miss
            [(50, 50, 60, 60)]]                                  # FP on an empty image
    r = score_detection(truth, pred)
    assert (r["true_positives"], r["n_pred"], r["n_true"]) == (1, 5, 4)
    assert r["precision"] == pytest.approx(1 / 5) and r["recall"] == pytest.approx(1 / 4)
    assert r["parse_failures"] == 1 and r["parse_failure_rate"] == pytest.approx(1 / 4)
    assert r["per_image"][0] == {"true_positives": 1, "n_pred": 3, "n_true": 2}


def test_detection_nothing_predicted_has_no_precision():
    r = score_detection([[(0, 0, 10, 10)]], [[]])
    assert r["precision"] is None and r["recall"] == 0.0
    r = score_detection([[]], [[]])
    assert r["precision"] is None and r["recall"] is None
    perfect = score_detection([[(0, 0, 10, 10), (10, 0, 20, 10)]], [[(10, 0, 20, 10), (0, 0, 10, 10)]])
    assert perfect["precision"] == perfect["recall"] == 1.0


def test_vrsbench_grounding_anchors_beside_ours():
    """VRSBench's published referring numbers (its README's "Object Referring Results", All column)
    are set beside a run's grounding scores, each row saying whose number it is."""
    assert detect_benchmark("data/vrsbench/vrsbench_refer_test.json") == "VRSBench"
    assert detect_benchmark("data/x/test.json", ["/d/VRSBench/Images_val/00001.png"]) == "VRSBench"
    a = ANCHORS["VRSBench"]
    assert a["task"] == "grounding" and "2406.12384" in a["source"] and "LoRA" in a["source"]
    assert [(r["who"], r["metric"], r["value"]) for r in a["rows"]] == [
        ("GeoChat fine-tuned", "acc@0.5", 39.6), ("GeoChat fine-tuned", "acc@0.7", 19.1),
        ("GeoChat zero-shot", "acc@0.5", 12.9), ("GeoChat zero-shot", "acc@0.7", 3.2)]
    runs = [{"label": "m", "grounding": score_referring([(0, 0, 10, 10)] * 4,
                                                         [(0, 0, 10, 10), (0, 0, 10, 6), None, (0, 0, 10, 1)])}]
    t = anchor_table("VRSBench", runs)
    assert [r["ours"]["m"] for r in t["rows"]] == pytest.approx([50.0, 25.0, 50.0, 25.0])
    out = summary_table({"models": runs, "classes": [], "anchors": t})
    assert "VRSBench acc@0.5: GeoChat fine-tuned 39.60% | ours: m 50.00%" in out
    assert "VRSBench acc@0.7: GeoChat zero-shot 3.20% | ours: m 25.00%" in out
    assert anchor_table("VRSBench", [{"label": "m", "vqa": {"per_type": {}}}]) is None  # no grounding scores
