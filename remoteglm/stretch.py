"""THE stretch of high-bit-depth pixels to 8-bit, for scenes (``remoteglm.scene.raster``) and for
16-bit / float pictures in chat (``remoteglm.model.image``). numpy only, so both can use it.

Per band, ``lo``..``hi`` maps linearly to 0..255, clipped and rounded; the limits are the 2nd and
98th percentiles of the valid pixels ("percentile", the usual true-colour stretch of GIS viewers,
e.g. QGIS's "cumulative count cut 2-98 %") or their minimum and maximum ("minmax"). Valid pixels:
finite, and inside the caller's ``valid`` mask (nodata, masks); the others are black and left out
of the limits.
"""

from __future__ import annotations

import numpy as np

from remoteglm.errors import RemoteGLMError

PERCENTILES = (2.0, 98.0)
STRETCHES = ("percentile", "minmax")


def stretch_limits(arr: np.ndarray, valid: np.ndarray | None = None,
                   method: str = "percentile") -> tuple[float, float] | None:
    """(lo, hi) of one band's valid, finite pixels by ``method``; None when there are none."""
    if method not in STRETCHES:
        raise RemoteGLMError(f"stretch {method!r} is not one of {', '.join(STRETCHES)}")
    ok = np.isfinite(arr) if arr.dtype.kind == "f" else np.ones(arr.shape, bool)
    if valid is not None:
        ok &= valid
    values = arr[ok]
    if values.size == 0:
        return None
    if method == "minmax":
        return float(values.min()), float(values.max())
    lo, hi = np.percentile(values, PERCENTILES)
    return float(lo), float(hi)


def stretch(arr: np.ndarray, lo: float, hi: float, valid: np.ndarray | None = None) -> np.ndarray:
    """``lo``..``hi`` -> 0..255 (clipped, rounded) as uint8; invalid or non-finite pixels -> 0.
    ``hi <= lo`` (a flat band): pixels above ``lo`` are 255, the rest 0."""
    a = np.asarray(arr, dtype=np.float64)
    bad = ~np.isfinite(a)
    if valid is not None:
        bad |= ~valid
    if hi > lo:
        out = np.clip((a - lo) * (255.0 / (hi - lo)), 0.0, 255.0)
        out = np.rint(np.where(bad, 0.0, out))
    else:
        out = np.where(a > lo, 255.0, 0.0)
    out[bad] = 0.0
    return out.astype(np.uint8)
