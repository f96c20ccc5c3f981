"""Image loading and VisualGLM preprocessing without torchvision.

Same numbers as the official BLIP eval transform: PIL bicubic resize straight to 224x224 (no
crop, no aspect ratio kept), scale to [0, 1], normalise with the CLIP mean/std.

Input modes are brought to 8-bit RGB first:
- grayscale / bilevel / palette / CMYK / YCbCr: PIL's own conversion to RGB;
- with transparency (RGBA, LA, PA, palette with a transparent colour): composited on white, so
  transparent no-data areas look the way image viewers show them instead of keeping whatever
  colour the hidden pixels happen to hold;
- 16/32-bit integer (I;16*, I) and float (F): the scene reader's stretch
  (``remoteglm.stretch``), 2nd to 98th percentile of the finite pixels -> 0..255, so a
  16-bit satellite export (reflectance in a few thousand of 65535) is not drawn black;
  a flat image is black, or white where above its value (e.g. a few bright pixels).
Multi-frame files (some TIFFs) use the first frame. The EXIF orientation is applied (phone and
drone JPEGs are stored sideways with a tag saying how to turn them).

Memory: the pixels are decoded once. A caller that resizes the image afterwards says to what
(``fit``): a larger image is then decoded at a reduced scale (JPEG's DCT scaling) or reduced by a
whole factor (box average) to no less than twice that size, before any mode conversion, so a
36 MP photo costs a fraction of its full-size copies.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from remoteglm.errors import RemoteGLMError
from remoteglm.stretch import stretch, stretch_limits

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 224

ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image]
Fit = Callable[[int, int], "tuple[int, int]"]  # (width, height) -> the size the caller resizes to

# PIL warns (two lines on stderr) when a header promises more pixels than its own limit; every
# image here is measured against ``max_pixels`` right after its header is read, and refused in
# one line, so the warning only repeats that, out of order.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
REDUCE_MARGIN = 2  # reduce to no less than this times the caller's size: its resize still filters
_REDUCIBLE = ("L", "RGB", "CMYK", "YCbCr")  # reduced as they are (no alpha, palette or 16-bit to convert first)

_FIX = "convert it to an 8-bit RGB PNG or JPEG (e.g. with an image editor or `gdal_translate -ot Byte -scale`)"


# Pixel budget checked from the header before anything is decoded. 40 MP covers RS tiles and
# most scenes users crop (a 6000x6000 GeoTIFF is 36 MP, ~110 MB as RGB) while a "decompression
# bomb" - a few KB of PNG that decodes to gigabytes - is refused at once. REMOTEGLM_MAX_PIXELS raises it.
DEFAULT_MAX_PIXELS = 40_000_000


def max_pixels() -> int:
    try:
        return max(1, int(os.environ.get("REMOTEGLM_MAX_PIXELS", DEFAULT_MAX_PIXELS)))
    except ValueError:
        return DEFAULT_MAX_PIXELS


def too_large_message(name: str, width: int, height: int, limit: int) -> str:
    return (f"图片太大 / image too large: {name} is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{limit:,}; downscale or crop it (or raise REMOTEGLM_MAX_PIXELS)")


def _describe(src) -> str:
    if isinstance(src, (bytes, bytearray)):
        return f"<{len(src)} bytes of image data>"
    return str(src)


def open_image(src: str | os.PathLike | bytes | bytearray):
    """The image's header only (nothing decoded): a PIL image, checked against ``max_pixels``;
    RemoteGLMError in one line for a missing file, a non-image, a bomb. Close it when done."""
    if isinstance(src, (bytes, bytearray)):
        fp = io.BytesIO(bytes(src))
    elif isinstance(src, (str, os.PathLike)):
        p = Path(src).expanduser()
        if not p.exists():
            raise RemoteGLMError(f"image file not found: {p}: check the path")
        if p.is_dir():
            raise RemoteGLMError(f"{p} is a directory, not an image file: pass the path of one image")
        fp = p
    else:
        raise RemoteGLMError(f"cannot read an image from a {type(src).__name__}: pass a file path, bytes or a PIL image")
    name = _describe(src)
    limit = max_pixels()
    try:
        img = Image.open(fp)
    except Image.DecompressionBombError as e:  # PIL's own guard fired first (at open, past 2x its limit)
        import re

        m = re.search(r"\((\d+) pixels\)", str(e))
        n = f"{int(m.group(1)):,} pixels" if m else "too many pixels"
        raise RemoteGLMError(f"图片太大 / image too large: {name} has {n}, over the limit of {limit:,}; downscale or crop it "
                             "(or raise REMOTEGLM_MAX_PIXELS)") from None
    except UnidentifiedImageError:
        raise RemoteGLMError(f"cannot read image {name}: not a recognised image format (corrupt or not an image); {_FIX}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise RemoteGLMError(f"cannot read image {name}: {str(e).strip() or type(e).__name__} (corrupt or unsupported); {_FIX}") from None
    width, height = img.size
    if width * height > limit:
        img.close()
        raise RemoteGLMError(too_large_message(name, width, height, limit))
    return img


_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def image_size(src: str | os.PathLike | bytes | bytearray) -> tuple[int, int]:
    """(width, height) of the image as ``load_image`` gives it (upright), from the header alone:
    the size boxes in original-image pixels refer to."""
    with open_image(src) as img:
        w, h = img.size
        if img.getexif().get(0x0112) in _ROTATED:
            w, h = h, w
    return w, h


def _open(src: ImageSource, fit: Fit | None = None) -> Image.Image:
    """Decoded pixels, once (a JPEG at a reduced scale when ``fit`` allows), upright."""
    if isinstance(src, Image.Image):
        if src.size[0] * src.size[1] > max_pixels():
            raise RemoteGLMError(too_large_message("the image", *src.size, max_pixels()))
        return src
    img = open_image(src)
    name = _describe(src)
    try:
        if fit is not None and img.format == "JPEG":
            w, h = fit(*img.size)
            img.draft(img.mode, (REDUCE_MARGIN * w, REDUCE_MARGIN * h))
        # The pixels are decoded once, here, so truncated/corrupt data fails with the file name
        # (the image is not copied: single-frame files close themselves once loaded).
        img.seek(0)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
    except Image.DecompressionBombError:
        raise RemoteGLMError(too_large_message(name, *img.size, max_pixels())) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise RemoteGLMError(f"cannot read image {name}: {str(e).strip() or type(e).__name__} (corrupt or unsupported); {_FIX}") from None
    return img


def _reduced(img: Image.Image, fit: Fit) -> Image.Image:
    """``img`` reduced by the largest whole factor that keeps it ``REDUCE_MARGIN`` times the size
    ``fit`` names (itself when there is none)."""
    w, h = fit(*img.size)
    k = min(img.width // max(1, REDUCE_MARGIN * w), img.height // max(1, REDUCE_MARGIN * h))
    return img.reduce(k) if k >= 2 else img


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """High-bit-depth single-band pixels -> uint8 by the percentile stretch (see module doc)."""
    limits = stretch_limits(arr)
    if limits is None:  # no finite pixel
        return np.zeros(arr.shape, np.uint8)
    return stretch(arr, *limits)


def to_rgb(img: Image.Image, name: str = "image") -> Image.Image:
    """Any PIL mode -> 8-bit RGB (module doc says how)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in ("1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    if mode.startswith("I") or mode == "F":
        try:
            arr = np.asarray(img)
        except (TypeError, ValueError) as e:
            raise RemoteGLMError(f"cannot read image {name}: pixel mode {mode} is not supported ({e}); {_FIX}") from None
        if arr.ndim != 2:
            raise RemoteGLMError(f"cannot read image {name}: pixel mode {mode} with shape {arr.shape} is not supported; {_FIX}")
        return Image.fromarray(_to_uint8(arr), mode="L").convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise RemoteGLMError(f"cannot read image {name}: pixel mode {mode} is not supported ({e}); {_FIX}") from None


def load_image(src: ImageSource, fit: Fit | None = None) -> Image.Image:
    """Open a path / bytes / PIL image as an 8-bit RGB PIL image, upright; one-line error on bad
    input. ``fit(width, height)``: the size the caller resizes the image to next; a larger one is
    reduced while decoding (module doc), which a family's resize then hardly tells apart."""
    name = _describe(src)
    img = _open(src, fit)
    if fit is None:
        return to_rgb(img, name)
    if img.mode not in _REDUCIBLE:
        img = to_rgb(img, name)
    return to_rgb(_reduced(img, fit), name)


def preprocess_image(src: ImageSource, image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """Image -> float32 tensor [3, image_size, image_size], CLIP-normalised (VisualGLM's input)."""
    img = load_image(src, fit=lambda w, h: (image_size, image_size))
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).div_(255.0).permute(2, 0, 1)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std


def preprocess_images(srcs: Sequence[ImageSource], image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """A batch: float32 tensor [N, 3, image_size, image_size]."""
    if len(srcs) == 0:
        return torch.empty(0, 3, image_size, image_size)
    return torch.stack([preprocess_image(s, image_size) for s in srcs])
