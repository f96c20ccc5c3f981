"""Scene reading: GeoTIFF / COG / JPEG 2000 of any size, by windows, stretched to 8-bit RGB.

Reading goes through rasterio (GDAL in its wheel; rasterio 1.4.4 carries GDAL 3.10 with the
GTiff, COG, PNG, JPEG and JP2OpenJPEG drivers, so JPEG 2000 reads and writes without anything
else installed). Nothing here ever holds a whole scene in memory:
- ``read_rgb`` reads one window (optionally resampled to ``out_size`` by GDAL while reading);
- the stretch limits and ``overview`` come from one decimated read (``out_shape`` with nearest
  sampling, at most ``SAMPLE_SIDE`` pixels a side), done in chunks of at most ``CHUNK`` output
  pixels a side. GDAL serves such a read from the file's overviews when it has them (COGs do);
  without them it still decodes block by block, so memory stays that of the output. A chunk that
  fails to decode is halved down to the file's blocks; the corrupt tile is then left out of the
  limits and drawn black in the overview, so it costs its own window (``read_rgb`` names it),
  not the scene;
- GDAL's block cache is held to ``GDAL_CACHE_BYTES`` while we read (its default is 5 % of RAM).

Bands: ``--bands 3,2,1`` picks red, green, blue by 1-based index (one band: grey). Without it:
the bands whose description or colour interpretation says red / green / blue (Sentinel-2's
"B04", "B03", "B02"; "Red Edge" is not red), else the first three, else band 1 as grey.

Stretch: ``remoteglm.stretch`` (percentile 2-98 or min/max per band, the one chat's 16-bit
path uses too), over the valid pixels: not masked by GDAL (nodata value, internal mask or alpha
band) and finite; invalid pixels are black and left out of the limits.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from remoteglm.errors import RemoteGLMError
from remoteglm.stretch import STRETCHES, stretch, stretch_limits

SAMPLE_SIDE = 1024  # the decimated read behind the limits (and the default overview)
CHUNK = 256  # output pixels a side per read of the decimated sample
GDAL_CACHE_BYTES = 128 * 1024 * 1024
_BANDS_HELP = "pick them with --bands, e.g. 3,2,1 (red,green,blue) or 1 (grey)"
_JP2_DRIVERS = ("JP2OpenJPEG", "JP2ECW", "JP2KAK", "JP2MrSID", "JPEG2000")

Window4 = tuple[int, int, int, int]  # x0, y0, x1, y1 in scene pixels


def _env() -> rasterio.Env:
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)


def _first_line(e: BaseException) -> str:
    """GDAL's own words, one line: rasterio raises "Read failed. See previous exception" with
    GDAL's errors chained below it; the first of those and the innermost (the codec's) are kept."""
    said: list[str] = []
    while e is not None and len(said) < 8:
        lines = str(e).strip().splitlines()
        text = lines[0].strip() if lines else ""
        if text and "see previous exception" not in text.lower() and text not in said:
            said.append(text)
        e = e.__cause__ or e.__context__
    if not said:
        return "unknown GDAL error"
    return said[0] if len(said) == 1 else f"{said[0]} ({said[-1]})"


def parse_bands(text: str) -> tuple[int, ...]:
    """``"3,2,1"`` -> (3, 2, 1); one band (grey) or three (red, green, blue), each >= 1."""
    parts = [p.strip() for p in str(text).split(",")]
    if not all(re.fullmatch(r"\d+", p) for p in parts) or len(parts) not in (1, 3):
        raise RemoteGLMError(f"--bands {text!r}: give one band number or three separated by commas, "
                             "1-based, e.g. 3,2,1 (red,green,blue) or 1 (grey)")
    bands = tuple(int(p) for p in parts)
    if min(bands) < 1:
        raise RemoteGLMError(f"--bands {text!r}: band numbers start at 1; {_BANDS_HELP}")
    return bands


def _band_role(description: str | None, interp: ColorInterp) -> str | None:
    tokens = set(re.split(r"[^a-z0-9]+", (description or "").lower())) - {""}
    if "edge" not in tokens:
        for role, names in (("red", {"red", "b04"}), ("green", {"green", "b03"}), ("blue", {"blue", "b02"})):
            if tokens & names:
                return role
    return {ColorInterp.red: "red", ColorInterp.green: "green", ColorInterp.blue: "blue"}.get(interp)


def _default_bands(src) -> tuple[int, ...]:
    found: dict[str, int] = {}
    for i, (desc, interp) in enumerate(zip(src.descriptions, src.colorinterp), start=1):
        role = _band_role(desc, interp)
        if role and role not in found:
            found[role] = i
    if len(found) == 3:
        return found["red"], found["green"], found["blue"]
    return (1, 2, 3) if src.count >= 3 else (1,)


def _open_dataset(path: Path):
    if not path.exists():
        raise RemoteGLMError(f"scene file not found: {path}: check the path")
    if path.is_dir():
        raise RemoteGLMError(f"{path} is a directory, not a raster file: pass a GeoTIFF, COG or JPEG 2000 file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
    except (RasterioError, OSError) as e:
        raise RemoteGLMError(f"not a raster: {path}: GDAL cannot read it ({_first_line(e)}); "
                             "pass a GeoTIFF, COG or JPEG 2000 scene") from None
    if src.count == 0:
        src.close()
        raise RemoteGLMError(f"not a raster: {path} has no raster bands (a container of subdatasets?); "
                             "pass one GeoTIFF, COG or JPEG 2000 scene")
    return src


def is_scene(path: str | os.PathLike) -> bool:
    """True for a file GDAL opens that is JPEG 2000, georeferenced (a CRS), has more than three
    colour bands (an alpha band not counted) or is not 8-bit; plain 8-bit RGB(A)/grey pictures
    without a CRS keep the picture path."""
    try:
        src = _open_dataset(Path(path))
    except RemoteGLMError:
        return False
    with src:
        colour = sum(1 for c in src.colorinterp if c != ColorInterp.alpha)
        return (src.driver in _JP2_DRIVERS or src.crs is not None or colour > 3
                or any(d != "uint8" for d in src.dtypes))


def _pixels_valid(data: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per band: GDAL's mask says valid and the value is finite."""
    valid = masks > 0
    if data.dtype.kind == "f":
        valid &= np.isfinite(data)
    return valid


class Scene:
    """An open scene (see ``open_scene``); a context manager, ``close()`` when done."""

    def __init__(self, path: Path, src, bands: tuple[int, ...], stretch_method: str):
        self.path = path
        self._src = src
        self.width, self.height, self.count = src.width, src.height, src.count
        self.dtype = str(src.dtypes[bands[0] - 1])
        self.crs = src.crs
        self.transform = src.transform
        self.nodata = src.nodata
        self.bands = bands
        self.stretch = stretch_method
        self._sample: tuple[int, np.ndarray, np.ndarray] | None = None
        self._failed = 0  # parts of the last decimated read that failed to decode
        data, valid = self._decimated(SAMPLE_SIDE)
        limits = [stretch_limits(data[i], valid[i], stretch_method) for i in range(len(bands))]
        if any(lim is None for lim in limits):
            self.close()
            if self._failed:
                raise RemoteGLMError(f"cannot read {path}: GDAL failed to decode {self._failed} part(s) of it and found "
                                     "no valid pixel elsewhere (a corrupt file?); re-download or repair it")
            what = f"nodata value {self.nodata:g}" if self.nodata is not None else "masked or not finite"
            raise RemoteGLMError(f"all-nodata scene: {path} has no valid pixels in band(s) "
                                 f"{','.join(str(bands[i]) for i, lim in enumerate(limits) if lim is None)} "
                                 f"(every sampled pixel is {what}); check the file or pick other bands with --bands")
        self.limits: tuple[tuple[float, float], ...] = tuple(limits)  # type: ignore[arg-type]

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._sample = None
        if self._src is not None:
            self._src.close()
            self._src = None

    def __repr__(self) -> str:
        return (f"Scene({str(self.path)!r}, {self.width}x{self.height}, {self.count} band(s) {self.dtype}, "
                f"bands={self.bands}, crs={self.crs})")

    def _read(self, window: Window, shape: tuple[int, int], resampling: Resampling) -> tuple[np.ndarray, np.ndarray]:
        """(data, valid) of the used bands in ``window`` read at ``shape`` (rows, cols)."""
        if self._src is None:
            raise RemoteGLMError(f"scene {self.path} is closed: open it again with open_scene")
        out = (len(self.bands), *shape)
        with _env():
            data = self._src.read(self.bands, window=window, out_shape=out, resampling=resampling)
            masks = self._src.read_masks(self.bands, window=window, out_shape=out, resampling=Resampling.nearest)
        return data, _pixels_valid(data, masks)

    def _decimated(self, max_side: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole scene at most ``max_side`` pixels a side, read in chunks; parts that fail
        to decode stay invalid. The last sample is kept (limits and overview share it)."""
        if self._sample is not None and self._sample[0] == max_side:
            return self._sample[1], self._sample[2]
        scale = max(1.0, max(self.width, self.height) / max_side)
        ow, oh = max(1, round(self.width / scale)), max(1, round(self.height / scale))
        data = np.zeros((len(self.bands), oh, ow), dtype=self._src.dtypes[self.bands[0] - 1])
        valid = np.zeros((len(self.bands), oh, ow), dtype=bool)
        self._failed = 0
        for r0 in range(0, oh, CHUNK):
            for c0 in range(0, ow, CHUNK):
                self._read_part(data, valid, (c0, r0, min(c0 + CHUNK, ow), min(r0 + CHUNK, oh)))
        self._sample = (max_side, data, valid)
        return data, valid

    def _read_part(self, data: np.ndarray, valid: np.ndarray, part: Window4) -> None:
        """Fill ``part`` (c0, r0, c1, r1 of the sample) from its scene window; a part that fails
        to decode is halved until it is one block of the file, so a corrupt tile costs about itself."""
        c0, r0, c1, r1 = part
        oh, ow = data.shape[1:]
        x0, x1 = round(c0 * self.width / ow), round(c1 * self.width / ow)
        y0, y1 = round(r0 * self.height / oh), round(r1 * self.height / oh)
        try:
            d, v = self._read(Window(x0, y0, x1 - x0, y1 - y0), (r1 - r0, c1 - c0), Resampling.nearest)
        except (RasterioError, OSError):
            bh, bw = self._src.block_shapes[self.bands[0] - 1]
            if c1 - c0 > 1 and x1 - x0 > bw and (c1 - c0 >= r1 - r0 or y1 - y0 <= bh):
                m = (c0 + c1) // 2
                halves = [(c0, r0, m, r1), (m, r0, c1, r1)]
            elif r1 - r0 > 1 and y1 - y0 > bh:
                m = (r0 + r1) // 2
                halves = [(c0, r0, c1, m), (c0, m, c1, r1)]
            else:
                self._failed += 1  # a corrupt tile: invalid here, named by read_rgb of its window
                return
            for half in halves:
                self._read_part(data, valid, half)
            return
        data[:, r0:r1, c0:c1], valid[:, r0:r1, c0:c1] = d, v

    def _to_rgb(self, data: np.ndarray, valid: np.ndarray) -> Image.Image:
        planes = [stretch(data[i], lo, hi, valid[i]) for i, (lo, hi) in enumerate(self.limits)]
        if len(planes) == 1:
            planes = planes * 3
        return Image.fromarray(np.stack(planes, axis=-1), mode="RGB")

    def _window(self, window: Sequence[int]) -> Window4:
        try:
            x0, y0, x1, y1 = (int(v) for v in window)
            exact = all(int(v) == v for v in window)
        except (TypeError, ValueError):
            exact = False
        if not exact or not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
            raise RemoteGLMError(f"window {tuple(window)!r} is not inside {self.path} ({self.width}x{self.height}): "
                                 "give whole pixels x0, y0, x1, y1 with 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height")
        return x0, y0, x1, y1

    def read_rgb(self, window: Sequence[int], out_size: tuple[int, int] | None = None) -> tuple[Image.Image, float]:
        """The window ``(x0, y0, x1, y1)`` as stretched 8-bit RGB (resampled to ``out_size``
        (width, height) while reading, averaging when it shrinks) and its fraction of valid pixels."""
        x0, y0, x1, y1 = self._window(window)
        w, h = x1 - x0, y1 - y0
        if out_size is not None:
            ok = len(out_size) == 2 and all(isinstance(v, int) and v > 0 for v in out_size)
            if not ok:
                raise RemoteGLMError(f"out_size {out_size!r} must be (width, height) in whole pixels > 0")
            w_out, h_out = out_size
        else:
            w_out, h_out = w, h
        resampling = Resampling.average if w_out * h_out < w * h else Resampling.bilinear
        try:
            data, valid = self._read(Window(x0, y0, w, h), (h_out, w_out), resampling)
        except (RasterioError, OSError) as e:
            raise RemoteGLMError(f"corrupt tile: cannot read window ({x0}, {y0}, {x1}, {y1}) of {self.path}: "
                                 f"{_first_line(e)}; skip this tile or repair the file (e.g. re-download it)") from None
        return self._to_rgb(data, valid), float(valid.any(axis=0).mean())

    def overview(self, max_side: int = SAMPLE_SIDE) -> Image.Image:
        """The whole scene at most ``max_side`` pixels a side, stretched (bounded memory)."""
        if not (isinstance(max_side, int) and max_side > 0):
            raise RemoteGLMError(f"overview size {max_side!r} must be a whole number of pixels > 0")
        data, valid = self._decimated(max_side)
        return self._to_rgb(data, valid)


def open_scene(path: str | os.PathLike, bands: Sequence[int] | None = None, stretch: str = "percentile") -> Scene:
    """Open a scene for windowed reading; one-line RemoteGLMError for a missing file, not a
    raster, a band out of range, an unknown stretch, an all-nodata scene (module doc)."""
    path = Path(path).expanduser()
    if stretch not in STRETCHES:
        raise RemoteGLMError(f"stretch {stretch!r} is not one of {', '.join(STRETCHES)}")
    src = _open_dataset(path)
    try:
        if bands is None:
            used = _default_bands(src)
        else:
            used = tuple(bands)
            if len(used) not in (1, 3) or not all(isinstance(b, int) and not isinstance(b, bool) for b in used):
                raise RemoteGLMError(f"bands {used!r}: give one band (grey) or three (red, green, blue); {_BANDS_HELP}")
            for b in used:
                if not 1 <= b <= src.count:
                    raise RemoteGLMError(f"band {b} is out of range: {path} has {src.count} band(s) "
                                         f"(1..{src.count}); {_BANDS_HELP}")
    except RemoteGLMError:
        src.close()
        raise
    return Scene(path, src, used, stretch)

