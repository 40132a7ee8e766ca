"""Shared pieces of the pretext tasks: parameter specs, input checks, numpy/torch helpers.

Nothing here imports torch at module level: a torch tensor is recognised by its type's module, and torch is
imported only inside the functions that handle one, so ``import napari_ssl.pretext`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_ssl.io.volume import mm_spacing

__all__ = [
    "ParamSpec",
    "as_rng",
    "check_array",
    "check_foreground",
    "inside_fraction",
    "is_torch",
    "shape_and_spacing",
]


@dataclass(frozen=True)
class ParamSpec:
    """One constructor parameter of a pretext, for GUIs and docs built from a single definition.

    Parameters
    ----------
    name : str
        Keyword of the pretext's constructor.
    type : type
        ``int``, ``float``, ``bool`` or ``str``. A tuple-valued parameter (e.g. a per-axis size) is
        described by the type of its items; the constructor accepts one value or one per axis.
    default : object
        The constructor's default.
    min, max : float or None
        Inclusive limits, ``None`` where there is none (and for strings).
    help : str
        One line for a tooltip.
    choices : tuple of str, optional
        Allowed values of a string parameter.
    """

    name: str
    type: type
    default: Any
    min: float | None = None
    max: float | None = None
    help: str = ""
    choices: tuple[str, ...] | None = None


def is_torch(x: Any) -> bool:
    """True for a ``torch.Tensor`` (checked without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "device")


def as_rng(rng: Any) -> np.random.Generator:
    """A ``numpy.random.Generator`` from a Generator, an int seed or ``None`` (scikit-image convention)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise ValueError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")


def shape_and_spacing(
    shape: Any, spacing: Any = None
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Spatial shape ``(z, y, x)`` and spacing (mm) from a shape tuple or a :class:`~napari_ssl.io.volume.Volume`.

    A longer shape (batch / channel axes first) is accepted; its last three axes are used.
    """
    if hasattr(shape, "spatial_shape") and hasattr(shape, "spacing"):
        vol_spacing = shape.spacing
        shape = shape.spatial_shape
        spacing = vol_spacing if spacing is None else spacing
    try:
        dims = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"shape must be a sequence of ints (..., z, y, x), got {shape!r}") from None
    if len(dims) < 3:
        raise ValueError(
            f"shape must have at least 3 axes (..., z, y, x), got {dims}; a 2D image is a (1, H, W) plane"
        )
    zyx = dims[-3:]
    if min(zyx) < 1:
        raise ValueError(f"shape must be positive along (z, y, x), got {zyx}")
    sp = (1.0, 1.0, 1.0) if spacing is None else mm_spacing(spacing)
    return (zyx[0], zyx[1], zyx[2]), (sp[0], sp[1], sp[2])


def check_array(x: Any, shape: tuple[int, int, int] | None = None, name: str = "x") -> None:
    """Validate an input: numpy array or torch tensor, at least 3 axes, finite, spatial shape as sampled.

    Finiteness costs one vectorised pass (less than a copy): a dot product for numpy, a sum for torch,
    with an exact elementwise test only when that reduction is not finite.
    """
    if is_torch(x):
        import torch

        spatial = tuple(int(s) for s in x.shape[-3:])
        ndim = x.ndim
        if ndim >= 3 and (x.is_floating_point() or x.is_complex()) and x.numel():
            # a finite sum proves every element finite (NaN and inf propagate); torch's elementwise
            # isfinite().all() is ~50x slower on CPU, so it only runs when the sum is not finite
            low = x.dtype in (torch.float16, torch.bfloat16)
            total = x.sum(dtype=torch.float32) if low else x.sum()
            if not bool(torch.isfinite(total)) and not bool(torch.isfinite(x).all()):
                raise ValueError(f"{name} contains NaN or inf values; pretexts need finite intensities")
    elif isinstance(x, np.ndarray):
        spatial = tuple(int(s) for s in x.shape[-3:])
        ndim = x.ndim
        if ndim >= 3 and x.dtype.kind in "fc" and x.size and not _finite_numpy(x):
            raise ValueError(f"{name} contains NaN or inf values; pretexts need finite intensities")
    else:
        raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if ndim < 3:
        raise ValueError(
            f"{name} must have at least 3 axes (..., z, y, x), got shape {tuple(x.shape)}; "
            "a 2D image is a (1, H, W) plane"
        )
    if shape is not None and spatial != tuple(shape):
        raise ValueError(
            f"{name} has spatial shape {spatial} but the params were sampled for shape {tuple(shape)}"
        )


def _finite_numpy(x: np.ndarray) -> bool:
    """True when every element of a float array is finite.

    Fast path: a finite dot product of the array with itself (one SIMD BLAS pass, about half the time
    of ``isfinite(x).all()``) proves every element finite, since NaN and inf propagate; only an overflow
    of a finite array (or an unusual dtype or layout) falls back to the elementwise test.
    """
    if x.dtype in (np.float32, np.float64) and x.flags.c_contiguous:
        flat = x.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.dot(flat, flat)):
                return True
    return bool(np.isfinite(x).all())


def copy_array(x: Any) -> Any:
    """A copy of a numpy array or torch tensor (same type, dtype, device)."""
    return x.clone() if is_torch(x) else np.array(x, copy=True)


def flip(x: Any, axes: tuple[int, ...]) -> Any:
    """``x`` flipped along ``axes``: a view for numpy, a new tensor for torch."""
    if not axes:
        return x
    if is_torch(x):
        return x.flip(dims=axes)
    index = [slice(None)] * x.ndim
    for axis in axes:
        index[axis] = slice(None, None, -1)
    return x[tuple(index)]


def stack(items: list[Any]) -> Any:
    """``numpy.stack`` or ``torch.stack`` along a new first axis."""
    if items and is_torch(items[0]):
        import torch

        return torch.stack(items, dim=0)
    return np.stack(items, axis=0)


def int_triple(value: Any, name: str) -> tuple[int, int, int]:
    """One int or three ints (z, y, x) as a tuple; a clear error otherwise."""
    arr = np.broadcast_to(np.asarray(value), (3,)) if np.ndim(value) == 0 else np.asarray(value)
    if arr.shape != (3,) or not all(float(v).is_integer() for v in arr.astype(float)):
        raise ValueError(f"{name} must be an int or three ints (z, y, x), got {value!r}")
    return (int(arr[0]), int(arr[1]), int(arr[2]))


def float_triple(value: Any, name: str) -> tuple[float, float, float]:
    """One float or three floats (z, y, x) as a tuple; a clear error otherwise."""
    arr = np.asarray(value, dtype=float)
    arr = np.broadcast_to(arr, (3,)) if arr.ndim == 0 else arr
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a number or three numbers (z, y, x), got {value!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def check_range(value: Any, name: str, low: float | None = None, high: float | None = None) -> None:
    """Raise ``ValueError`` naming ``name`` and the limit when ``value`` is outside ``[low, high]``."""
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_foreground(foreground: Any, shape: tuple[int, int, int]) -> np.ndarray | None:
    """A foreground mask as a ``bool`` array of ``shape``, or ``None`` when absent or empty.

    ``None`` and an all-``False`` mask both mean "anywhere" (a patch of air has no body to aim at); a mask of
    another shape raises ``ValueError`` naming both shapes.
    """
    if foreground is None:
        return None
    if is_torch(foreground):
        foreground = foreground.detach().cpu().numpy()
    mask = np.asarray(foreground)
    if mask.shape[-3:] != tuple(shape) or mask.ndim < 3:
        raise ValueError(
            f"foreground mask has shape {tuple(mask.shape)} but the volume's spatial shape is {tuple(shape)}"
        )
    if mask.ndim > 3:  # channels: foreground in any of them
        mask = mask.reshape(-1, *shape).any(axis=0)
    mask = mask.astype(bool, copy=False)
    return mask if mask.any() else None


def inside_fraction(mask: np.ndarray, corners: np.ndarray, patch: tuple[int, int, int]) -> np.ndarray:
    """Fraction of each patch ``[corner, corner + patch)`` (corners ``(n, 3)``) that lies in ``mask``."""
    out = np.empty(len(corners))
    volume = float(np.prod(patch))
    for k, (z, y, x) in enumerate(np.asarray(corners, dtype=np.int64).tolist()):
        out[k] = np.count_nonzero(mask[z : z + patch[0], y : y + patch[1], x : x + patch[2]]) / volume
    return out


def masked_pair_draw(
    high: Any, patch: tuple[int, int, int], mask: np.ndarray, rng: Any, mode: str = "3d"
) -> Any:
    """A drawer of candidate patch-corner pairs ``(m, 2, 3)`` among the corners (``0 .. high - 1`` per axis)
    whose patch centre is in ``mask``; in ``"2d"`` mode both patches of a pair in one slice. ``None`` when
    no corner qualifies."""
    high = np.asarray(high)
    half = [p // 2 for p in patch]
    allowed = mask[tuple(slice(h, h + int(n)) for h, n in zip(half, high, strict=True))]
    index = np.flatnonzero(allowed)
    if index.size == 0:
        return None
    per_slice = int(high[1] * high[2])

    def draw(m: int) -> np.ndarray:
        first = index[rng.integers(0, index.size, size=m)]
        if mode == "2d":  # the second patch in the same slice as the first
            z = first // per_slice
            lo = np.searchsorted(index, z * per_slice)
            hi = np.searchsorted(index, (z + 1) * per_slice)
            second = index[lo + (rng.random(m) * (hi - lo)).astype(np.int64)]
        else:
            second = index[rng.integers(0, index.size, size=m)]
        flat = np.stack([first, second], axis=1)
        return np.stack(np.unravel_index(flat, tuple(int(h) for h in high)), axis=-1).astype(np.int32)

    return draw
