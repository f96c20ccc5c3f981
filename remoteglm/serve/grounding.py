"""Boxes in answers, for the front ends: an answer's boxes in the ORIGINAL image's pixels
(``answer_boxes``, through the family's codec, so no front end knows a family's box text), and
how each front end shows them: lines for the terminal (``box_lines``), the API's ``boxes`` field
(``box_fields``), a copy of the image with the boxes drawn and labelled (``draw_boxes``).

    boxes, failures = answer_boxes(engine.box_codec, answer, original=(800, 600), seen=(400, 300))
"""

from __future__ import annotations

from remoteglm.boxes import Box

Size = tuple[int, int]

_FONTS = ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
          "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc", "/System/Library/Fonts/PingFang.ttc",
          "C:/Windows/Fonts/msyh.ttc")
COLOURS = ("#ff3030", "#30c030", "#3080ff", "#ffb000", "#d040d0", "#00c0c0")


def answer_boxes(codec, text: str, original: Size, seen: Size | None = None) -> tuple[list[Box], int]:
    """(the boxes in ``text``, in pixels of the ``original`` upright image; how many boxes could
    not be read). ``seen``: the size of the image the model was given when a front end reduced
    it first (the codec's frame is the one of that image: Qwen2.5-VL's resize of it); the boxes
    are then scaled to the original. No codec (a family without boxes): no boxes."""
    if codec is None or not text:
        return [], 0
    seen = seen or original
    boxes, failures = codec.decode(text, seen)
    sx, sy = original[0] / seen[0], original[1] / seen[1]
    if (sx, sy) != (1, 1):
        boxes = [Box(b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy, b.label) for b in boxes]
    return boxes, failures


def _num(v: float) -> float | int:
    r = round(v, 1)
    return int(r) if r == int(r) else r


def box_fields(boxes: list[Box]) -> list[dict]:
    """The API's ``boxes``: ``[{"bbox": [x1, y1, x2, y2], "label": str | None}]``, original pixels."""
    return [{"bbox": [_num(v) for v in b.xyxy], "label": b.label} for b in boxes]


def box_lines(boxes: list[Box]) -> list[str]:
    """One line per box for a terminal: ``框 / box 1: 储油罐 12,30,200,310`` (original pixels)."""
    return [f"框 / box {i}: " + (f"{b.label} " if b.label else "") + ",".join(str(round(v)) for v in b.xyxy)
            for i, b in enumerate(boxes, 1)]


def _font(size: int):
    from PIL import ImageFont

    for path in _FONTS:  # a CJK font where there is one: the labels are Chinese
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def draw_boxes(image, boxes: list[Box], max_side: int | None = None):
    """A copy of the PIL ``image`` (the original, upright) with ``boxes`` (its pixels) outlined,
    each label on a filled tab above its box; ``max_side``: the copy is scaled down to fit first
    (lines and labels keep their width on screen)."""
    from PIL import ImageDraw

    img = image.convert("RGB")  # (a copy: the caller's image is untouched)
    scale = 1.0
    if max_side and max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 250))
    font = _font(max(12, round(max(img.size) / 40)))
    for i, b in enumerate(boxes):
        colour = COLOURS[i % len(COLOURS)]
        x1, y1, x2, y2 = (v * scale for v in b.xyxy)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        if b.label:
            left, top, right, bottom = draw.textbbox((0, 0), b.label, font=font)
            tw, th = right - left + 2 * width, bottom - top + 2 * width
            ty = y1 - th if y1 - th >= 0 else y1  # above the box, inside it at the top edge
            draw.rectangle((x1, ty, x1 + tw, ty + th), fill=colour)
            draw.text((x1 + width - left, ty + width - top), b.label, fill="white", font=font)
    return img
