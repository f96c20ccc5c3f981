"""remoteglm.boxes: IoU, intersection, area and clipping on hand-computed cases."""

import pytest

from remoteglm.boxes import Box, intersection, iou


def test_iou_of_a_box_with_itself_is_one():
    assert iou(Box(3, 4, 50, 60), Box(3, 4, 50, 60, "label ignored")) == 1.0


def test_iou_of_disjoint_and_touching_boxes_is_zero():
    assert iou(Box(0, 0, 10, 10), Box(20, 20, 30, 30)) == 0.0
    assert iou(Box(0, 0, 10, 10), Box(10, 0, 20, 10)) == 0.0  # a shared edge is no area


def test_iou_of_partial_overlap_and_containment():
    # overlap 1 x 2 = 2 of a union 4 + 4 - 2 = 6
    assert iou(Box(0, 0, 2, 2), Box(1, 0, 3, 2)) == pytest.approx(1 / 3)
    # a 10 x 10 box inside a 20 x 20 one: 100 / 400
    assert iou(Box(5, 5, 15, 15), Box(0, 0, 20, 20)) == pytest.approx(0.25)
    assert intersection(Box(5, 5, 15, 15), Box(0, 0, 20, 20)) == 100


def test_iou_is_symmetric_and_empty_boxes_give_zero_not_an_error():
    a, b = Box(0.5, 1.5, 7.25, 9), Box(3, 2, 11, 4.5)
    assert iou(a, b) == iou(b, a)
    assert iou(Box(5, 5, 5, 5), Box(5, 5, 5, 5)) == 0.0
    assert iou(Box(5, 5, 5, 9), Box(0, 0, 10, 10)) == 0.0


def test_an_inverted_box_has_no_area():
    assert Box(10, 10, 0, 0).area == 0.0
    assert iou(Box(10, 10, 0, 0), Box(0, 0, 10, 10)) == 0.0


def test_clip_keeps_an_inside_box_and_its_label():
    b = Box(1, 2, 30, 40, "储油罐")
    assert b.clip(100, 50) == b


def test_clip_cuts_an_overhanging_box_to_the_image():
    assert Box(-5, -1, 120, 60, "x").clip(100, 50) == Box(0, 0, 100, 50, "x")
    assert Box(90, 40, 130, 70).clip(100, 50).xyxy == (90, 40, 100, 50)


def test_clip_of_a_box_wholly_outside_is_empty():
    out = Box(150, 10, 200, 20).clip(100, 50)
    assert out.area == 0.0 and out.xyxy == (100, 10, 100, 20)
