"""The tiler of large detection images: windows cover the image and end on its edge; boxes are
clipped and moved into each window; objects mostly outside a window are dropped there."""

from __future__ import annotations

from pathlib import Path

import pytest

from remoteglm.boxes import Box
from remoteglm.data.annotations import AnnotatedImage, Annotation
from remoteglm.data.dota import read_dota
from remoteglm.data.tiles import tile, tile_name, windows
from remoteglm.errors import RemoteGLMError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "annotations"


@pytest.mark.parametrize("w,h,size,overlap", [(1000, 800, 512, 100), (4000, 3000, 1024, 200), (300, 200, 512, 0),
                                              (1024, 1024, 1024, 0), (1025, 513, 512, 0)])
def test_windows_cover_the_image_and_end_on_its_edge(w, h, size, overlap):
    wins = windows(w, h, size, overlap)
    cols, rows = sorted({(x0, x1) for x0, _, x1, _ in wins}), sorted({(y0, y1) for _, y0, _, y1 in wins})
    assert len(wins) == len(cols) * len(rows)  # every column in every row
    for spans, end in ((cols, w), (rows, h)):  # each axis covered from 0 to its end without a gap
        assert spans[0][0] == 0 and spans[-1][1] == end and all(b[0] <= a[1] for a, b in zip(spans, spans[1:]))
    assert all(0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h for x0, y0, x1, y1 in wins)
    assert all(x1 - x0 == min(size, w) and y1 - y0 == min(size, h) for x0, y0, x1, y1 in wins)
    assert max(x1 for *_, x1, _ in wins) == w and max(y1 for *_, y1 in wins) == h
    xs = sorted({x0 for x0, *_ in wins})
    assert all(b - a <= size - overlap for a, b in zip(xs, xs[1:]))  # neighbours overlap at least `overlap`


def test_boxes_are_clipped_moved_and_the_mostly_outside_dropped():
    image = AnnotatedImage("P0009.png", 1000, 600, objects=(
        Annotation(Box(100, 100, 200, 140), "ship", polygon=(100, 100, 200, 100, 200, 140, 100, 140)),
        Annotation(Box(480, 50, 560, 90), "plane", polygon=(480, 50, 560, 50, 560, 90, 480, 90), difficult=True),
        Annotation(Box(490, 300, 520, 320), "storage-tank", text="the tank"),
    ))
    tiles = dict(tile(image, 512, 0))
    assert list(tiles) == [(0, 0, 512, 512), (488, 0, 1000, 512), (0, 88, 512, 600), (488, 88, 1000, 600)]
    first = tiles[(0, 0, 512, 512)]
    assert first.image == "P0009__0_0.png" and (first.width, first.height) == (512, 512)
    assert [o.category for o in first.objects] == ["ship", "storage-tank"]  # 32 of the plane's 80 px: dropped
    assert first.objects[0].polygon == (100, 100, 200, 100, 200, 140, 100, 140)
    tank = first.objects[1]
    assert tank.box.xyxy == (490, 300, 512, 320) and tank.polygon is None and tank.text == "the tank"
    second = tiles[(488, 0, 1000, 512)]
    plane = [o for o in second.objects if o.category == "plane"][0]
    assert plane.box.xyxy == (0, 50, 72, 90) and plane.difficult
    assert plane.polygon is None  # clipped: its corners are no longer all in the tile
    low = tiles[(488, 88, 1000, 600)]
    assert [o.box.xyxy for o in low.objects] == [(2, 212, 32, 232)]  # the whole tank, moved


def test_a_whole_object_keeps_its_rotated_box_moved_into_the_tile():
    image = read_dota(FIX / "P0001.txt", (1000, 800))
    tiles = dict(tile(image, 512, 100))
    plane = [o for o in tiles[(412, 288, 924, 800)].objects if o.category == "plane"][0]
    assert plane.polygon == (18.5, 92.0, 58.0, 107.5, 48.0, 132.0, 8.5, 117.0)
    assert plane.box.xyxy == (8.5, 92.0, 58.0, 132.0)
    assert tile_name("a/b/P1.png", (412, 288, 924, 800)) == "P1__412_288.png"


@pytest.mark.parametrize("size,overlap,keep,says", [(0, 0, 0.5, "tile size"), (512, 512, 0.5, "tile overlap"),
                                                    (512, -1, 0.5, "tile overlap"), (512, 0, 0, "keep")])
def test_bad_tile_settings_are_one_line(size, overlap, keep, says):
    image = AnnotatedImage("a.png", 100, 100, objects=(Annotation(Box(1, 1, 9, 9), "ship"),))
    with pytest.raises(RemoteGLMError, match=says):
        tile(image, size, overlap, keep)
