"""Grounding metrics on boxes in pixel coordinates of the original image: ``remoteglm.boxes.Box``
or four numbers ``(x1, y1, x2, y2)``.

- IoU: ``remoteglm.boxes.iou``, continuous coordinates, area = (x2 - x1) * (y2 - y1) (no VOC "+1");
  a box with x2 <= x1 or y2 <= y1 has no area, so its IoU with anything is 0.
- Referring (one true box and one predicted box per expression): Acc@0.5 and Acc@0.7 = share of
  expressions whose IoU >= the threshold; mean IoU over all expressions. An answer with no readable
  box (``None``: the family's codec could not parse it) is a parse failure, scored IoU 0 and a miss,
  so it stays in the denominator (the parse-failure rate says how many).
- Detect / count (a set of true boxes and a set of predicted boxes per image), at IoU 0.5: greedy
  one-to-one matching by IoU. All (true, predicted) pairs with IoU >= the threshold are taken in
  order of IoU, highest first (ties: lower true index, then lower predicted index); a pair is kept
  when neither box is matched yet. A true positive is a kept pair; precision = TP / predicted
  boxes, recall = TP / true boxes, summed over all images. A duplicate prediction of an object
  already matched is a false positive, never a second hit. An unreadable answer (``None``) predicts
  nothing and counts as a parse failure. Precision or recall with a zero denominator is None.
"""

from __future__ import annotations

import math
from typing import Sequence

from remoteglm.boxes import Box, iou
from remoteglm.errors import RemoteGLMError

BoxLike = Box | Sequence[float]  # a Box, or (x1, y1, x2, y2) in original-image pixels
THRESHOLDS = (0.5, 0.7)


def _check(box: BoxLike, what: str) -> Box:
    try:
        nums = tuple(float(v) for v in (box.xyxy if isinstance(box, Box) else box))
    except (TypeError, ValueError):
        nums = ()
    if len(nums) != 4 or not all(math.isfinite(v) for v in nums):
        raise RemoteGLMError(f"{what} must be four numbers (x1, y1, x2, y2) in pixels, got {box!r}")
    return Box(*nums)


def _check_truth(box: BoxLike, i: int) -> Box:
    b = _check(box, f"true box {i}")
    if not (b.x2 > b.x1 and b.y2 > b.y1):
        raise RemoteGLMError(f"true box {i} {list(b.xyxy)} has no area: it needs x2 > x1 and y2 > y1")
    return b


def score_referring(truths: Sequence[BoxLike], predictions: Sequence[BoxLike | None]) -> dict:
    """``{"n", "parse_failures", "parse_failure_rate", "acc@0.5", "acc@0.7", "mean_iou", "ious"}``
    (rates as fractions) for one predicted box (or None) per true box."""
    if len(truths) != len(predictions):
        raise RemoteGLMError(f"{len(truths)} true boxes but {len(predictions)} predictions: one answer per expression")
    if not truths:
        raise RemoteGLMError("no referring expressions: nothing to score")
    gt = [_check_truth(b, i) for i, b in enumerate(truths)]
    ious = [0.0 if p is None else iou(t, _check(p, f"predicted box {i}")) for i, (t, p) in enumerate(zip(gt, predictions))]
    n, failed = len(gt), sum(p is None for p in predictions)
    out = {"n": n, "parse_failures": failed, "parse_failure_rate": failed / n}
    for th in THRESHOLDS:
        out[f"acc@{th}"] = sum(v >= th for v in ious) / n
    out["mean_iou"] = sum(ious) / n
    out["ious"] = ious
    return out


def match_boxes(truth: Sequence[BoxLike], predicted: Sequence[BoxLike], threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching (module docstring): ``[(true index, predicted index, IoU)]`` in
    the order the pairs were taken."""
    truth = [_check(b, f"true box {i}") for i, b in enumerate(truth)]
    predicted = [_check(b, f"predicted box {i}") for i, b in enumerate(predicted)]
    pairs = sorted(((iou(t, p), ti, pi) for ti, t in enumerate(truth) for pi, p in enumerate(predicted)),
                   key=lambda x: (-x[0], x[1], x[2]))
    used_t, used_p, kept = set(), set(), []
    for v, ti, pi in pairs:
        if v < threshold:
            break
        if ti not in used_t and pi not in used_p:
            used_t.add(ti)
            used_p.add(pi)
            kept.append((ti, pi, v))
    return kept


def score_detection(truths: Sequence[Sequence[BoxLike]], predictions: Sequence[Sequence[BoxLike] | None],
                    threshold: float = 0.5) -> dict:
    """Precision and recall at ``threshold`` over all images (module docstring): ``{"threshold",
    "true_positives", "n_pred", "n_true", "precision", "recall", "parse_failures",
    "parse_failure_rate", "per_image": [{"true_positives", "n_pred", "n_true"}]}``."""
    if len(truths) != len(predictions):
        raise RemoteGLMError(f"{len(truths)} images of true boxes but {len(predictions)} predictions: one answer per image")
    if not truths:
        raise RemoteGLMError("no images: nothing to score")
    per_image, failed = [], 0
    for i, (t, p) in enumerate(zip(truths, predictions)):
        gt = [_check_truth(b, j) for j, b in enumerate(t)]
        if p is None:
            failed += 1
            p = []
        pred = [_check(b, f"image {i}: predicted box {j}") for j, b in enumerate(p)]
        per_image.append({"true_positives": len(match_boxes(gt, pred, threshold)), "n_pred": len(pred), "n_true": len(gt)})
    tp = sum(r["true_positives"] for r in per_image)
    n_pred = sum(r["n_pred"] for r in per_image)
    n_true = sum(r["n_true"] for r in per_image)
    return {"threshold": threshold, "true_positives": tp, "n_pred": n_pred, "n_true": n_true,
            "precision": tp / n_pred if n_pred else None, "recall": tp / n_true if n_true else None,
            "parse_failures": failed, "parse_failure_rate": failed / len(truths), "per_image": per_image}
