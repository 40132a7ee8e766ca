"""Foreground masks: where the body is, so that swapped patches and Rubik cubes sit on it, not in the air.

:func:`foreground_mask` gives a boolean mask of a scan's spatial shape; pass it to a pretext's ``sample``
(``task.sample(shape, rng, spacing, foreground=mask)``) to place the corruption on the body. The threshold is
estimated on a strided copy of the scan (at most ``max_size`` voxels per axis), so a 256^3 volume costs one
comparison pass at full resolution plus a few milliseconds of statistics.

Methods
-------
``"otsu"``
    Otsu's threshold on the intensity histogram (MR with a dark, noisy background).
``"nonzero"``
    Every voxel that is not exactly zero (skull-stripped or zero-padded scans).
``"hu"``
    CT in Hounsfield units: voxels above ``threshold`` (default -500 HU: soft tissue and bone, not air).
``"auto"`` (default)
    ``"hu"`` when the scan reaches below -200 (CT in HU), else ``"nonzero"`` when at least 20% of the voxels
    are exactly zero, else ``"otsu"``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["HU_BODY", "METHODS", "foreground_bbox", "foreground_mask", "otsu_threshold", "resolve_method"]

METHODS = ("auto", "otsu", "nonzero", "hu")
#: default body threshold for CT (Hounsfield units): above air and most of the lung
HU_BODY = -500.0
_ZERO_FRACTION = 0.2
_CT_MIN = -200.0


def otsu_threshold(values: Any, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (any shape; non-finite values ignored).

    Returns the bin edge that maximises the between-class variance; the mean for a constant input.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)
    w1 = w0[-1] - w0
    m0 = np.cumsum(counts * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    between = between[:-1]
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a plateau over an empty gap: its middle
    return float(edges[1 + int(best[len(best) // 2])])


def _strided(array: np.ndarray, max_size: int) -> np.ndarray:
    """A strided view of the last three axes with at most ``max_size`` voxels per axis."""
    steps = [max(1, math.ceil(s / max_size)) for s in array.shape[-3:]]
    return array[(..., *(slice(None, None, k) for k in steps))]


def resolve_method(array: Any, method: str = "auto", max_size: int = 64) -> str:
    """The concrete method ``"auto"`` picks for ``array`` (others are returned as given, once checked)."""
    if method not in METHODS:
        raise ValueError(f"foreground method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method
    small = _strided(np.asarray(array), max_size)
    if small.size == 0:
        return "nonzero"
    if float(np.nanmin(small)) < _CT_MIN:
        return "hu"
    if np.count_nonzero(small == 0) >= _ZERO_FRACTION * small.size:
        return "nonzero"
    return "otsu"


def foreground_mask(
    array: Any, method: str = "auto", threshold: float | None = None, max_size: int = 64
) -> np.ndarray:
    """A boolean mask ``(z, y, x)`` of the body in ``array`` (numpy, ``(..., z, y, x)``).

    Parameters
    ----------
    array : array_like
        The scan; leading axes (channels) are combined: a voxel is foreground when it is in any channel.
    method : {"auto", "otsu", "nonzero", "hu"}, default "auto"
        See the module docstring.
    threshold : float, optional
        Override the threshold of ``"otsu"`` and ``"hu"`` (voxels strictly above it are foreground).
    max_size : int, default 64
        The threshold statistics use a strided copy with at most this many voxels per axis.

    Returns
    -------
    numpy.ndarray
        ``bool`` of the last three axes' shape. All ``False`` for a constant scan: pretexts then place
        their patches anywhere (see their ``sample``).
    """
    arr = np.asarray(array)
    if arr.ndim < 3:
        raise ValueError(f"foreground_mask needs a volume (..., z, y, x), got shape {arr.shape}")
    if max_size < 2:
        raise ValueError(f"max_size must be >= 2 voxels, got {max_size}")
    kind = resolve_method(arr, method, max_size)
    out: np.ndarray | None = None
    for channel in arr.reshape(-1, *arr.shape[-3:]):
        if kind == "nonzero":
            out = channel != 0 if out is None else out | (channel != 0)
            continue
        if threshold is not None:
            t = float(threshold)
        elif kind == "hu":
            t = HU_BODY
        else:
            small = _strided(channel, max_size)
            t = otsu_threshold(small)
            if t <= float(np.nanmin(small)):  # constant channel: nothing stands out
                continue
        out = channel > t if out is None else out | (channel > t)
    return np.zeros(arr.shape[-3:], dtype=bool) if out is None else out


def foreground_bbox(mask: np.ndarray, tail: float = 0.005) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Start and stop (exclusive) per axis of the mask's bulk, ignoring ``tail`` of its voxels at each end.

    Stray foreground specks (noise above an Otsu threshold) do not stretch the box. ``None`` for an
    empty mask.
    """
    m = np.asarray(mask, dtype=bool)
    total = int(np.count_nonzero(m))
    if total == 0:
        return None
    lo, hi = [], []
    for axis in range(m.ndim):
        others = tuple(a for a in range(m.ndim) if a != axis)
        cum = np.cumsum(np.count_nonzero(m, axis=others))
        lo.append(int(np.searchsorted(cum, tail * total, side="right")))
        hi.append(int(np.searchsorted(cum, (1 - tail) * total, side="left")) + 1)
    return tuple(lo), tuple(min(h, s) for h, s in zip(hi, m.shape, strict=True))
