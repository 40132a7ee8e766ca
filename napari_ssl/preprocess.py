"""The model grid: one preprocessing path shared by training and inference.

A scan reaches a network through the same four steps whether it is a training case, a held-out case or the
scan a user segments (nnU-Net's lesson: the segmenter must see at inference exactly what it saw in training):

1. :func:`canonical`: reorient to the model's orientation (``LPS``; a lossless axis permutation / flip),
2. :func:`resample`: to the plan's voxel spacing (linear for images, nearest for labels; SimpleITK),
3. :class:`Normalization`: intensities as the plan says (CT: clip to the foreground's 0.5-99.5 percentiles, then
   the dataset's z-score; MR: a per-scan z-score inside the nonzero mask), in place on one float32 copy,
4. :func:`pad_to`: scans smaller than the patch are padded with the background value (never refused).

:func:`prepare_channels` runs steps 1-3 on the channels of one case; :func:`back_to_grid` carries a label volume
from the model grid back onto the scan's own grid by world position. No torch, Qt or napari here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume, mm_spacing

#: orientation of the arrays the network sees (SimpleITK / DICOM code: +x to Left, +y to Posterior, +z to Superior)
ORIENTATION = "LPS"
#: ``ct_zscore`` and ``zscore_nonzero`` are what a plan chooses; the others are kept for older checkpoints
NORMALIZATION_MODES = ("ct_zscore", "zscore_nonzero", "zscore", "ct", "minmax", "none")
_SAMPLE = 2_000_000  # statistics on <= ~2M voxels: fast and stable


def _subsample(values: np.ndarray, limit: int = _SAMPLE) -> np.ndarray:
    flat = values.reshape(-1)
    return flat[:: max(1, flat.size // limit)]


@dataclass(frozen=True)
class Normalization:
    """Intensity normalisation, stored in every checkpoint so inference repeats it exactly.

    Parameters
    ----------
    mode : str
        ``ct_zscore``: clip to ``clip`` (HU), then ``(x - mean) / std`` with the *dataset's* foreground mean and
        standard deviation (nnU-Net's CT scheme). ``zscore_nonzero``: per scan, clip the nonzero voxels to their
        ``percentiles`` and z-score them with their own mean and standard deviation; voxels outside the mask
        (skull-stripped background) become 0. Older modes: ``zscore`` (percentile clip + z-score of the whole
        volume), ``ct`` (``window`` mapped to [-1, 1]), ``minmax`` (percentiles to [-1, 1]), ``none``.
    window : (float, float)
        HU window of the ``ct`` mode.
    percentiles : (float, float)
        Lower and upper percentiles (0-100) of ``zscore``, ``zscore_nonzero`` and ``minmax``.
    clip, mean, std : optional
        Dataset statistics of ``ct_zscore`` (from the plan's fingerprint).
    """

    mode: str = "zscore"
    window: tuple[float, float] = (-1000.0, 1000.0)
    percentiles: tuple[float, float] = (0.5, 99.5)
    clip: tuple[float, float] | None = None
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in NORMALIZATION_MODES:
            raise ValueError(f"normalization mode must be one of {NORMALIZATION_MODES}, got {self.mode!r}")
        window = tuple(float(v) for v in self.window)
        pct = tuple(float(v) for v in self.percentiles)
        if len(window) != 2 or not window[0] < window[1]:
            raise ValueError(f"window must be (low, high) with low < high, got {self.window!r}")
        if len(pct) != 2 or not 0.0 <= pct[0] < pct[1] <= 100.0:
            raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {self.percentiles!r}")
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "percentiles", pct)
        if self.clip is not None:
            clip = tuple(float(v) for v in self.clip)
            if len(clip) != 2 or not clip[0] < clip[1]:
                raise ValueError(f"clip must be (low, high) with low < high, got {self.clip!r}")
            object.__setattr__(self, "clip", clip)
        if self.mode == "ct_zscore" and self.clip is None:
            raise ValueError("ct_zscore needs the dataset's clip range (low, high) in HU")
        if not (np.isfinite(self.std) and self.std > 0 and np.isfinite(self.mean)):
            raise ValueError(f"std must be positive and mean finite, got mean {self.mean}, std {self.std}")
        object.__setattr__(self, "mean", float(self.mean))
        object.__setattr__(self, "std", float(self.std))

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """The normalised array: one float32 copy, then every operation in place (no float64 volume)."""
        x = np.array(array, dtype=np.float32, copy=True)
        if self.mode == "none":
            return x
        if self.mode == "ct":
            lo, hi = self.window
            np.clip(x, lo, hi, out=x)
            x -= np.float32(lo)
            x *= np.float32(2.0 / (hi - lo))
            x -= np.float32(1.0)
            return x
        if self.mode == "ct_zscore":
            assert self.clip is not None
            np.clip(x, self.clip[0], self.clip[1], out=x)
            x -= np.float32(self.mean)
            x /= np.float32(self.std)
            return x
        if self.mode == "zscore_nonzero":
            return self._zscore_nonzero(x)
        lo, hi = np.percentile(_subsample(x), self.percentiles)
        np.clip(x, lo, hi, out=x)
        if self.mode == "minmax":
            x -= np.float32(lo)
            x *= np.float32(2.0 / max(hi - lo, 1e-6))
            x -= np.float32(1.0)
            return x
        sub = _subsample(x).astype(np.float64)
        x -= np.float32(sub.mean())
        x /= np.float32(max(sub.std(), 1e-6))
        return x

    def _zscore_nonzero(self, x: np.ndarray) -> np.ndarray:
        mask = x != 0
        if mask.mean() > 0.98:  # nothing stripped: the whole volume is the foreground
            mask = None
        values = _subsample(x[mask] if mask is not None else x)
        if values.size == 0:
            return x
        lo, hi = np.percentile(values, self.percentiles)
        values = np.clip(values, lo, hi).astype(np.float64)
        mean, std = values.mean(), max(values.std(), 1e-6)
        np.clip(x, lo, hi, out=x)
        x -= np.float32(mean)
        x /= np.float32(std)
        if mask is not None:
            x[~mask] = 0.0
        return x

    def background(self, normalised: np.ndarray) -> float:
        """What "outside the scan" looks like after normalisation: the value to pad with."""
        if self.mode == "zscore_nonzero":
            return 0.0
        if self.mode == "ct_zscore":
            assert self.clip is not None
            return (self.clip[0] - self.mean) / self.std
        return float(np.min(normalised)) if normalised.size else 0.0

    def describe(self) -> str:
        if self.mode == "ct_zscore":
            assert self.clip is not None
            return (f"CT: clip {self.clip[0]:.0f}..{self.clip[1]:.0f} HU, z-score (mean {self.mean:.1f}, "
                    f"sd {self.std:.1f})")
        if self.mode == "zscore_nonzero":
            return "MR: per-scan z-score inside the nonzero mask"
        if self.mode == "ct":
            return f"CT window {self.window[0]:.0f}..{self.window[1]:.0f} HU to [-1, 1]"
        return {"zscore": "percentile-clipped z-score", "minmax": "percentiles to [-1, 1]", "none": "none"}[self.mode]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "window": list(self.window), "percentiles": list(self.percentiles)}
        if self.mode == "ct_zscore":
            out.update(clip=list(self.clip or ()), mean=self.mean, std=self.std)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalization:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and v is not None}
        return cls(**known)


# ---------------------------------------------------------------- geometry
def canonical(volume: Volume, orientation: str = ORIENTATION) -> Volume:
    """``volume`` with its axes permuted / flipped to ``orientation`` (no interpolation; same world voxels)."""
    import SimpleITK as sitk

    target = np.asarray(sitk.DICOMOrientImageFilter_GetDirectionCosinesFromOrientation(orientation)).reshape(3, 3)
    if np.allclose(volume.direction[::-1, ::-1], target, atol=1e-6):
        return volume
    out = Volume.from_sitk(sitk.DICOMOrient(volume.to_sitk(), orientation), path=volume.path, name=volume.name)
    return Volume(out.array, out.spacing, out.origin, out.direction, volume.path, volume.name, dict(volume.metadata))


def canonical_geometry(shape: Sequence[int], spacing: Sequence[float], direction: Any,
                       orientation: str = ORIENTATION) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """The (z, y, x) shape and voxel size a grid of ``shape`` and ``spacing`` (z, y, x) along ``direction`` (3x3,
    column ``j`` the world direction of array axis ``j``) has after :func:`canonical`: what a scan's header gives
    without decoding a voxel (:func:`napari_ssl.io.read_header`)."""
    import SimpleITK as sitk

    target = np.asarray(sitk.DICOMOrientImageFilter_GetDirectionCosinesFromOrientation(orientation)).reshape(3, 3)
    target_zyx = target[::-1, ::-1]
    # array axis j points along direction[:, j]; in the canonical grid it becomes the axis it is most parallel to
    # (column j of target_zyx.T @ direction: axis j's components along the canonical axes)
    order = np.argmax(np.abs(target_zyx.T @ np.asarray(direction, dtype=float)), axis=0)
    out_shape, out_spacing = np.empty(3, dtype=int), np.empty(3)
    out_shape[order] = [int(s) for s in shape]
    out_spacing[order] = [float(s) for s in spacing]
    return ((int(out_shape[0]), int(out_shape[1]), int(out_shape[2])),
            (float(out_spacing[0]), float(out_spacing[1]), float(out_spacing[2])))


def canonical_spacing(volume: Volume, orientation: str = ORIENTATION) -> tuple[float, float, float]:
    """The voxel size (z, y, x) ``volume`` has after :func:`canonical`, without moving any voxel."""
    return canonical_geometry(volume.spatial_shape, volume.spacing, volume.direction, orientation)[1]


def resample(volume: Volume, spacing: Sequence[float] | float, *, interpolation: str = "linear") -> Volume:
    """``volume`` on a grid of ``spacing`` mm (z, y, x) covering the same extent (SimpleITK).

    ``interpolation`` is ``"linear"`` for images, ``"nearest"`` for label volumes. A 4D (t, z, y, x) volume is
    resampled frame by frame. Images come back as float32, labels in their own integer type.
    """
    import SimpleITK as sitk

    target = np.asarray(mm_spacing(spacing, "target spacing"), dtype=float)
    if np.allclose(target, volume.spacing):
        return volume
    if interpolation not in ("linear", "nearest"):
        raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    size = np.maximum(1, np.round(np.asarray(volume.spatial_shape) * np.asarray(volume.spacing) / target)).astype(int)
    interp = sitk.sitkLinear if interpolation == "linear" else sitk.sitkNearestNeighbor
    frames = volume.array[None] if volume.array.ndim == 3 else volume.array
    out = []
    for frame in frames:
        image = volume.to_sitk(frame if interpolation == "nearest" else frame.astype(np.float32, copy=False))
        ref = sitk.Image([int(s) for s in size[::-1]], image.GetPixelID())
        ref.SetSpacing([float(s) for s in target[::-1]])
        ref.SetOrigin(image.GetOrigin())
        ref.SetDirection(image.GetDirection())
        res = sitk.Resample(image, ref, sitk.Transform(), interp, 0.0, image.GetPixelID())
        del image
        out.append(sitk.GetArrayFromImage(res))
    array = out[0] if volume.array.ndim == 3 else np.stack(out)
    return volume.with_array(array, spacing=tuple(float(s) for s in target))


def to_model_grid(volume: Volume, spacing: Sequence[float] | None, *, labels: bool = False,
                  orientation: str = ORIENTATION) -> Volume:
    """Reorient to ``orientation`` and resample to ``spacing`` (mm, z y x; ``None`` keeps the spacing)."""
    if volume.array.ndim != 3:
        raise ValueError(f"{volume.name or 'scan'}: expected a 3D (z, y, x) volume, got shape {volume.array.shape}")
    out = canonical(volume, orientation)
    if spacing is not None:
        out = resample(out, tuple(float(s) for s in spacing), interpolation="nearest" if labels else "linear")
    return out


def back_to_grid(labels: Volume, reference: Volume) -> Volume:
    """Nearest-neighbour resampling of ``labels`` (any grid) onto ``reference``'s grid, by world position."""
    import SimpleITK as sitk

    if labels.same_geometry(reference):
        return reference.with_array(labels.array)
    ref = reference.to_sitk(np.zeros(reference.spatial_shape, np.uint8))
    out = sitk.Resample(labels.to_sitk(), ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return reference.with_array(sitk.GetArrayFromImage(out))


def check_scan(volume: Volume, what: str = "scan") -> None:
    """Refuse 2D images, single slices and 4D series with a message naming the shape."""
    shape = volume.array.shape
    if volume.array.ndim != 3:
        raise ValueError(f"{volume.name or what}: needs a 3D (z, y, x) scan, got shape {shape}")
    if min(volume.spatial_shape) < 2:
        raise ValueError(
            f"{volume.name or what}: needs a 3D scan, got a 2D image of shape {shape} (one slice); open the whole series"
        )


def prepare_channels(channels: Sequence[Volume], *, spacing: Sequence[float] | None, normalization: Normalization,
                     orientation: str = ORIENTATION) -> tuple[np.ndarray, Volume]:
    """Steps 1-3 for the channels of one case: (C, z, y, x) float32 on the model grid, and that grid.

    Training (:mod:`napari_ssl.training.finetune`) and inference (:mod:`napari_ssl.inference.segment`) both call this, so a scan
    is prepared identically in both.
    """
    first = channels[0]
    out: np.ndarray | None = None
    grid: Volume | None = None
    for i, chan in enumerate(channels):
        check_scan(chan)
        if chan.spatial_shape != first.spatial_shape or not chan.same_geometry(first, atol=1e-3):
            raise ValueError(
                f"channel {i} ({chan.name or '?'}) is not on the grid of channel 0 ({first.name or '?'}): "
                f"shape {chan.spatial_shape} vs {first.spatial_shape}"
            )
        moved = to_model_grid(chan, spacing, orientation=orientation)
        grid = grid or moved
        if out is None:
            out = np.empty((len(channels), *moved.spatial_shape), np.float32)
        out[i] = normalization(moved.array)
        del moved
    assert grid is not None and out is not None
    return out, grid


def pad_to(array: np.ndarray, shape: Sequence[int], value: float | Sequence[float] = 0.0) -> np.ndarray:
    """``array`` (C, z, y, x) or (z, y, x) padded at the end of each spatial axis to at least ``shape``.

    ``value`` is one number or one per channel (the background of each channel).
    """
    spatial = array.shape[-3:]
    pads = [max(0, int(p) - int(s)) for s, p in zip(spatial, shape, strict=True)]
    if not any(pads):
        return array
    width = [(0, p) for p in pads]
    if array.ndim == 3:
        return np.pad(array, width, constant_values=float(np.asarray(value).reshape(-1)[0]))
    values = np.broadcast_to(np.asarray(value, dtype=float).reshape(-1), (array.shape[0],))
    return np.stack([np.pad(ch, width, constant_values=float(v)) for ch, v in zip(array, values, strict=True)])


def backgrounds(array: np.ndarray, normalization: Normalization) -> list[float]:
    """The pad value of each channel of a normalised (C, z, y, x) array."""
    return [normalization.background(ch) for ch in array]


__all__ = [
    "NORMALIZATION_MODES",
    "ORIENTATION",
    "Normalization",
    "back_to_grid",
    "backgrounds",
    "canonical",
    "canonical_geometry",
    "canonical_spacing",
    "check_scan",
    "pad_to",
    "prepare_channels",
    "resample",
    "to_model_grid",
]
