"""remoteglm.scene.raster: scenes read by windows, band choice, stretch, nodata, bad input in one
line; a 30,000 x 30,000 sparse GeoTIFF opens in bounded memory (measured in a fresh process)."""

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.enums import ColorInterp, Resampling
from rasterio.windows import Window

from remoteglm.errors import RemoteGLMError
from remoteglm.scene.raster import is_scene, open_scene, parse_bands
from remoteglm.stretch import stretch, stretch_limits

ROOT = Path(__file__).resolve().parents[2]
S2_CROP = ROOT / "tests" / "fixtures" / "scenes" / "s2_crop_384.tif"
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)


def write_tif(path, data, *, crs="EPSG:32618", nodata=None, block=64, descriptions=None, colorinterp=None, **extra):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype,
                   tiled=True, blockxsize=block, blockysize=block, compress="deflate", nodata=nodata)
    if crs is not None:
        profile.update(crs=crs, transform=TRANSFORM)
    profile.update(extra)
    with warnings.catch_warnings():  # no CRS: rasterio warns that it is not georeferenced
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        dst = rasterio.open(path, "w", **profile)
    with dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = descriptions
        if colorinterp:
            dst.colorinterp = colorinterp
    return path


def ramp(h=128, w=128, bands=3, base=100, dtype=np.uint16):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([base + 20 * b + x * (b + 1) + y for b in range(bands)]).astype(dtype)


def one_line(fn, *args, **kwargs) -> str:
    with pytest.raises(RemoteGLMError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def test_parse_bands():
    assert parse_bands("3,2,1") == (3, 2, 1)
    assert parse_bands(" 4 ") == (4,)
    assert parse_bands("4, 3 ,2") == (4, 3, 2)
    for junk in ("", "a,b,c", "1,2", "1,2,3,4", "1.5", "-1", "3;2;1"):
        assert "--bands" in one_line(parse_bands, junk)
    assert "start at 1" in one_line(parse_bands, "0,1,2")


def test_real_s2_crop_defaults_to_b04_b03_b02_and_reads_windows():
    with open_scene(S2_CROP) as scene:
        assert (scene.width, scene.height, scene.count, scene.dtype) == (384, 384, 4, "uint16")
        assert scene.crs.to_epsg() == 32618 and scene.nodata == 0
        assert scene.transform == Affine(10.0, 0.0, 443410.0, 0.0, -10.0, 4171780.0)
        assert scene.bands == (1, 2, 3)  # from the descriptions B04, B03, B02 (B08 last)
        with rasterio.open(S2_CROP) as src:  # 384 < 1024: the sample is every pixel
            full = src.read([1, 2, 3]).astype(np.float64)
        for (lo, hi), band in zip(scene.limits, full):
            assert (lo, hi) == pytest.approx(tuple(np.percentile(band[band > 0], [2, 98])))
        img, valid = scene.read_rgb((0, 0, 256, 256))
        assert img.mode == "RGB" and img.size == (256, 256) and valid == 1.0
        arr = np.asarray(img)
        assert arr.min() == 0 and arr.max() == 255 and 40 < arr.mean() < 200  # stretched, not black
        small, _ = scene.read_rgb((128, 128, 384, 384), out_size=(64, 32))
        assert small.size == (64, 32)
        assert scene.overview(100).size == (100, 100) and scene.overview().size == (384, 384)  # never enlarged
    with open_scene(S2_CROP, bands=parse_bands("4,3,2"), stretch="minmax") as nir:
        assert nir.bands == (4, 3, 2)
        assert nir.limits[0] == (float(rasterio.open(S2_CROP).read(4).min()), float(rasterio.open(S2_CROP).read(4).max()))
    assert is_scene(S2_CROP)


def test_band_choice_from_descriptions_colour_interpretation_first_three_and_grey(tmp_path):
    data = ramp(bands=4)
    p = write_tif(tmp_path / "shuffled.tif", data, descriptions=("B08", "B02", "B03", "B04"))
    with open_scene(p) as s:
        assert s.bands == (4, 3, 2)
    p = write_tif(tmp_path / "edge.tif", data, descriptions=("Red Edge 1", "Green", "Blue", "Red"))
    with open_scene(p) as s:
        assert s.bands == (4, 2, 3)  # "Red Edge" is not red
    bgr = [ColorInterp.blue, ColorInterp.green, ColorInterp.red]
    p = write_tif(tmp_path / "bgr.tif", data[:3], colorinterp=bgr, photometric="MINISBLACK")
    with open_scene(p) as s:
        assert s.bands == (3, 2, 1)
    p = write_tif(tmp_path / "plain5.tif", ramp(bands=5))
    with open_scene(p) as s:
        assert s.bands == (1, 2, 3)
    p = write_tif(tmp_path / "grey.tif", ramp(bands=1))
    with open_scene(p) as s:
        assert s.bands == (1,)
        arr = np.asarray(s.read_rgb((0, 0, 128, 128))[0])
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all() and arr.max() == 255
    msg = one_line(open_scene, S2_CROP, bands=(5, 3, 2))
    assert "band 5 is out of range" in msg and "has 4 band(s)" in msg and str(S2_CROP) in msg
    assert "one band" in one_line(open_scene, S2_CROP, bands=(1, 2))
    assert "stretch" in one_line(open_scene, S2_CROP, stretch="gamma")


def test_stretch_percentile_and_minmax():
    arr = np.arange(101, dtype=np.uint16) * 10  # 0..1000
    assert stretch_limits(arr) == pytest.approx((20.0, 980.0))
    assert stretch_limits(arr, method="minmax") == (0.0, 1000.0)
    out = stretch(arr, 20.0, 980.0)
    assert out.dtype == np.uint8 and out[:3].tolist() == [0, 0, 0] and out[-3:].tolist() == [255, 255, 255]
    assert out[50] == 128  # (500 - 20) / 960 * 255 = 127.5
    valid = arr >= 500
    assert stretch_limits(arr, valid, "minmax") == (500.0, 1000.0)
    assert (stretch(arr, 500, 1000, valid)[:50] == 0).all()
    assert stretch_limits(arr, np.zeros(arr.shape, bool)) is None
    f = np.array([np.nan, -np.inf, 0.25, 0.75], np.float32)
    assert stretch_limits(f, method="minmax") == (0.25, 0.75)
    assert stretch(f, 0.25, 0.75).tolist() == [0, 0, 0, 255]
    assert stretch(np.array([5, 5, 9]), 5, 5).tolist() == [0, 0, 255]  # a flat band: above lo is white


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_8_16_bit_and_float_scenes_with_nodata(tmp_path, dtype):
    data = ramp(bands=3, dtype=np.float64)
    nodata = -9999 if dtype in ("int16", "float32") else 0
    if dtype == "uint8":
        data = data % 200 + 10
    data[:, :, :32] = nodata  # a quarter of the scene is nodata
    data = data.astype(dtype)
    if dtype == "float32":
        data = data / 1000.0
        data[:, :, :32] = nodata
        data[:, 0, 40] = np.nan  # not finite: invalid too
    p = write_tif(tmp_path / f"{dtype}.tif", data, nodata=nodata)
    with open_scene(p) as s:
        assert s.dtype == dtype and s.nodata == nodata
        for (lo, hi), band in zip(s.limits, data.astype(np.float64)):
            vals = band[:, 32:][np.isfinite(band[:, 32:])]
            assert lo == pytest.approx(np.percentile(vals, 2)) and hi == pytest.approx(np.percentile(vals, 98))
        img, valid = s.read_rgb((0, 0, 128, 128))
        assert valid == pytest.approx(0.75, abs=1e-3)
        arr = np.asarray(img)
        assert (arr[:, :32] == 0).all() and arr[:, 32:].max() == 255
        assert s.read_rgb((0, 0, 32, 32))[1] == 0.0  # an all-nodata tile: fraction 0
    with open_scene(p, stretch="minmax") as s:
        band = data[0, :, 32:].astype(np.float64)
        assert s.limits[0] == pytest.approx((np.nanmin(band), np.nanmax(band)))


def test_all_nodata_scene_is_one_line(tmp_path):
    p = write_tif(tmp_path / "empty.tif", np.zeros((3, 64, 64), np.uint16), nodata=0)
    msg = one_line(open_scene, p)
    assert "all-nodata scene" in msg and str(p) in msg and "nodata value 0" in msg
    f = np.full((1, 64, 64), np.nan, np.float32)
    assert "all-nodata scene" in one_line(open_scene, write_tif(tmp_path / "nan.tif", f))


def test_not_a_raster_missing_png_and_no_crs(tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("just some text, not a GeoTIFF\n" * 20)
    msg = one_line(open_scene, text)
    assert msg.startswith("not a raster") and str(text) in msg
    assert not is_scene(text) and not is_scene(tmp_path / "missing.tif") and not is_scene(tmp_path)
    assert "not found" in one_line(open_scene, tmp_path / "missing.tif")
    assert "directory" in one_line(open_scene, tmp_path)
    png = tmp_path / "plain.png"
    Image.fromarray(np.asarray(ramp(bands=3, dtype=np.uint8)).transpose(1, 2, 0)).save(png)
    with open_scene(png) as s:  # a plain picture opens too: no CRS, 8-bit
        assert s.crs is None and s.dtype == "uint8" and s.bands == (1, 2, 3)
    assert not is_scene(png)  # ...but is not routed as a scene
    png16 = tmp_path / "sixteen.png"
    Image.fromarray(ramp(bands=1)[0]).save(png16)
    assert is_scene(png16)  # non-8-bit
    p = write_tif(tmp_path / "nocrs.tif", ramp(bands=4), crs=None)
    with open_scene(p) as s:
        assert s.crs is None and s.read_rgb((0, 0, 10, 10))[1] == 1.0
    assert is_scene(p)  # 4 colour bands
    assert not is_scene(write_tif(tmp_path / "rgb8.tif", ramp(dtype=np.uint8), crs=None, photometric="RGB"))


def test_bad_windows_and_closed_scene():
    with open_scene(S2_CROP) as s:
        for bad in ((0, 0, 385, 10), (10, 10, 10, 20), (-1, 0, 5, 5), (0.5, 0, 5, 5), (1, 2, 3)):
            assert "window" in one_line(s.read_rgb, bad)
        assert "out_size" in one_line(s.read_rgb, (0, 0, 10, 10), out_size=(0, 5))
        assert "overview size" in one_line(s.overview, 0)
    assert "closed" in one_line(s.read_rgb, (0, 0, 10, 10))


def test_a_corrupt_tile_fails_its_window_in_one_line_not_the_scene(tmp_path):
    p = write_tif(tmp_path / "corrupt.tif", ramp(256, 256), block=64)
    with rasterio.open(p) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_0", "TIFF", bidx=1))  # tile x 1, y 0
        size = int(src.get_tag_item("BLOCK_SIZE_1_0", "TIFF", bidx=1))
    raw = bytearray(p.read_bytes())
    raw[offset + size // 3: offset + size // 3 + 16] = b"\xff" * 16  # inside its DEFLATE stream
    p.write_bytes(bytes(raw))
    with open_scene(p) as s:  # the limits and overview leave the bad tile out
        assert s.limits[0][1] > s.limits[0][0]
        ov = np.asarray(s.overview())
        assert (ov[0:64, 64:128] == 0).all() and (ov[64:, :].max(axis=-1) > 0).mean() > 0.99
        assert s.read_rgb((0, 64, 64, 128))[1] == 1.0
        msg = one_line(s.read_rgb, (32, 0, 96, 64))
        assert msg.startswith("corrupt tile: cannot read window (32, 0, 96, 64)") and str(p) in msg


def test_overviews_are_used_for_the_decimated_read(tmp_path):
    p = write_tif(tmp_path / "ovr.tif", np.full((3, 2048, 2048), 1000, np.uint16), block=256)
    with rasterio.open(p, "r+") as dst:
        dst.build_overviews([2, 4, 8], Resampling.nearest)
        dst.write(np.full((3, 2048, 2048), 3000, np.uint16))  # full resolution changed, overviews not
    with open_scene(p, stretch="minmax") as s:
        assert s.limits[0] == (1000.0, 1000.0)  # sampled from an overview
        assert s.overview(256).size == (256, 256)
        assert np.asarray(s.read_rgb((0, 0, 64, 64))[0]).min() == 255  # full-res 3000 > 1000


def test_jpeg2000_reads_through_the_wheels_gdal(tmp_path):
    assert "JP2OpenJPEG" in rasterio.drivers.raster_driver_extensions().values()
    data = ramp(96, 80, bands=4)
    p = tmp_path / "scene.jp2"
    profile = dict(driver="JP2OpenJPEG", width=80, height=96, count=4, dtype="uint16", crs="EPSG:32618",
                   transform=TRANSFORM, QUALITY=100, REVERSIBLE="YES")
    with rasterio.open(p, "w", **profile) as dst:
        dst.write(data)
    assert is_scene(p)
    with open_scene(p, bands=(3, 2, 1), stretch="minmax") as s:
        assert s.crs.to_epsg() == 32618 and (s.width, s.height, s.count) == (80, 96, 4)
        assert s.limits[0] == (float(data[2].min()), float(data[2].max()))  # lossless
        assert s.read_rgb((0, 0, 80, 96))[0].size == (80, 96)


BIG = """
import json, resource, sys, time
import numpy as np, rasterio
from rasterio.windows import Window
from remoteglm.scene.raster import open_scene
path = sys.argv[1]
y, x = np.mgrid[0:512, 0:512]
block = np.stack([100 + x + y, 200 + 2 * x, 300 + 2 * y]).astype(np.uint16)
written = [(0, 0), (14848, 14848), (29184, 29184)]
with rasterio.open(path, "w", driver="GTiff", width=30000, height=30000, count=4, dtype="uint16",
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate", sparse_ok=True, nodata=0,
                   crs="EPSG:32618", transform=rasterio.Affine(10, 0, 400000, 0, -10, 4300000)) as dst:
    for x0, y0 in written:
        dst.write(np.concatenate([block, block[:1]]), window=Window(x0, y0, 512, 512))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
with open_scene(path) as s:
    limits = s.limits
    ov = s.overview()
    tile, valid = s.read_rgb((14848, 14848, 15360, 15360))
    empty, none = s.read_rgb((5000, 5000, 6024, 6024), out_size=(448, 448))
    out = dict(size=[s.width, s.height], limits=limits, overview=list(ov.size), tile=list(tile.size), valid=valid,
               none=none, empty=list(empty.size), seconds=time.perf_counter() - t,
               rss_mb=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
print(json.dumps(out))
"""


def test_a_30000_pixel_sparse_scene_in_bounded_memory(tmp_path):
    path = tmp_path / "big.tif"
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(BIG), str(path)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert path.stat().st_size < 5_000_000  # sparse: 3 of 3,481 blocks written
    assert out["size"] == [30000, 30000] and out["overview"] == [1024, 1024] and out["tile"] == [512, 512]
    assert out["valid"] == 1.0 and out["none"] == 0.0 and out["empty"] == [448, 448]
    lo, hi = out["limits"][0]
    assert 100 <= lo < hi <= 1122  # from the written blocks only (nodata left out)
    assert out["seconds"] < 10, out
    assert out["rss_mb"] < 300, out  # a full read would be 30000 * 30000 * 4 * 2 bytes = 7.2 GB
