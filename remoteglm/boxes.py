"""Boxes, model-neutral: pixel coordinates on the ORIGINAL image, x1, y1 (top left) to x2, y2
(bottom right), floats. Geometry only (area, clip, IoU); a family's text form for boxes is its
codec (``remoteglm.box_codec``, chosen by ``Family.box_codec``).

    iou(Box(10, 10, 50, 40), Box(30, 20, 70, 60, "储油罐"))
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float
    label: str | None = None

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2, self.y2

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    def clip(self, width: float, height: float) -> Box:
        """This box cut to a ``width`` x ``height`` image (a box wholly outside becomes empty,
        area 0, on the nearest edge)."""
        x1, x2 = (min(max(v, 0.0), float(width)) for v in (self.x1, self.x2))
        y1, y2 = (min(max(v, 0.0), float(height)) for v in (self.y1, self.y2))
        return replace(self, x1=x1, y1=y1, x2=x2, y2=y2)


def intersection(a: Box, b: Box) -> float:
    """Area both boxes cover."""
    w = min(a.x2, b.x2) - max(a.x1, b.x1)
    h = min(a.y2, b.y2) - max(a.y1, b.y1)
    return w * h if w > 0 and h > 0 else 0.0


def iou(a: Box, b: Box) -> float:
    """Intersection over union, 0 for two empty boxes (never a division by zero)."""
    inter = intersection(a, b)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0
