"""Does a scan look like what a model was trained on? One sentence before segmenting, never a refusal.

A segmenter's ``meta.json`` keeps the fingerprint of its training data (:func:`napari_ssl.plan.fingerprint`):
modality (CT / MR), channel count, median voxel size and the body's intensity percentiles (0.5 / 99.5; written since
this module exists). :func:`check_scan` compares a scan with it:

- another channel count is an **error** (the model cannot run on it);
- a **warning** when the modality differs (a CT given to an MR model), when a voxel size differs by more than
  :data:`SPACING_RATIO` along an axis, or when the model's normalisation reads absolute intensities (CT in HU) and
  the scan's body intensities overlap the trained range by less than :data:`MIN_OVERLAP` of the wider one (a CT
  stored with an offset). Per-scan normalisations (MR z-score) do not compare intensity ranges: scale is theirs.

A checkpoint without a fingerprint (older ones) gives no warning. Pure numpy: no torch, Qt or napari.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume

__all__ = ["MIN_OVERLAP", "SPACING_RATIO", "ScanCheck", "ScanSummary", "TrainedOn", "check_scan", "short_number",
           "summarize_scan"]

#: a voxel size this many times finer or coarser than the training data's (along any axis) is warned about
SPACING_RATIO = 3.0
#: body intensity ranges overlapping by less than this fraction of the wider one are warned about (absolute modes)
MIN_OVERLAP = 0.5
#: normalisations that read absolute intensities (the others z-score every scan on its own)
ABSOLUTE_MODES = ("ct_zscore", "ct", "none")
_MAX_VOXELS = 2_000_000


@dataclass(frozen=True)
class ScanSummary:
    """A scan as the comparison sees it: modality guess, channel count, voxel size (z, y, x, canonical order) and
    its body's 0.5 / 99.5 intensity percentiles (first channel)."""

    modality: str
    n_channels: int
    spacing: tuple[float, float, float]
    low: float
    high: float


@dataclass(frozen=True)
class TrainedOn:
    """What a segmenter's training data looked like (from its ``meta.json``); ``None`` where it was not recorded."""

    n_channels: int = 1
    channels: tuple[str, ...] = ()
    modality: str | None = None
    spacing: tuple[float, float, float] | None = None
    low: float | None = None
    high: float | None = None
    absolute: bool = False

    @classmethod
    def from_checkpoint(cls, ck: Any) -> TrainedOn:
        """Read a typed :class:`~napari_ssl.meta.SegmenterCheckpoint`; a missing or partial fingerprint leaves
        fields ``None``."""
        fp = ck.fingerprint or {}
        fg = fp.get("foreground") or {}
        modality = str(fp.get("modality") or "").upper()
        spacing = fp.get("median_spacing")
        low, high = fg.get("p00_5"), fg.get("p99_5")
        return cls(
            n_channels=int(ck.in_channels or 1),
            channels=tuple(ck.channels),
            modality=modality if modality in ("CT", "MR") else None,
            spacing=tuple(float(s) for s in spacing) if spacing and len(spacing) == 3 else None,  # type: ignore[arg-type]
            low=None if low is None else float(low),
            high=None if high is None else float(high),
            absolute=ck.normalization.mode in ABSOLUTE_MODES,
        )


@dataclass(frozen=True)
class ScanCheck:
    """The outcome: ``error`` (the model cannot take the scan) or ``warning`` (it may segment it badly), one
    sentence each, or neither."""

    error: str | None = None
    warning: str | None = None


def summarize_scan(channels: Volume | Sequence[Volume]) -> ScanSummary:
    """:class:`ScanSummary` of a scan (one volume, one per channel, or a 4D (c, z, y, x) one); statistics on at most
    ~2M voxels of the first channel."""
    from napari_ssl.plan import body_mask, guess_modality
    from napari_ssl.preprocess import canonical_spacing

    chans = [channels] if isinstance(channels, Volume) else list(channels)
    if len(chans) == 1 and chans[0].array.ndim == 4:  # a (c, z, y, x) volume: its channels, as segment() reads it
        chans = [chans[0].with_array(frame) for frame in chans[0].array]
    if not chans:
        raise ValueError("no scan given")
    first = chans[0]
    array = np.asarray(first.array)
    if array.ndim != 3:
        raise ValueError(f"{first.name or 'scan'}: needs a 3D (z, y, x) scan, got shape {array.shape}")
    step = max(1, math.ceil((array.size / _MAX_VOXELS) ** (1 / 3)))
    sub = array[::step, ::step, ::step]
    modality = guess_modality(first.with_array(sub))
    mask = body_mask(sub, modality)
    inside = sub[mask] if mask.any() else sub.reshape(-1)
    low, high = (float(v) for v in np.percentile(inside.astype(np.float64), (0.5, 99.5)))
    return ScanSummary(modality, len(chans), canonical_spacing(first), low, high)


def short_number(value: float) -> str:
    """A readable number: 1500, 12.5, 0.87, 0 (never 0.00031 or 1.48595)."""
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return "0" if text in ("-0", "") else text


def _intensities(low: float, high: float, modality: str | None) -> str:
    return f"intensities {short_number(low)}..{short_number(high)}" + (" HU" if modality == "CT" else "")


def _voxels(spacing: Sequence[float]) -> str:
    return "voxels " + " x ".join(short_number(s) for s in spacing) + " mm"


def check_scan(trained: TrainedOn, scan: ScanSummary) -> ScanCheck:
    """Compare ``scan`` with the model's training data (see the module docstring)."""
    if scan.n_channels != trained.n_channels:
        names = f" ({', '.join(trained.channels)})" if trained.channels else ""
        return ScanCheck(error=f"this model takes {trained.n_channels} input channel(s){names}; "
                               f"{scan.n_channels} given")
    other_modality = trained.modality is not None and trained.modality != scan.modality
    known_range = trained.low is not None and trained.high is not None
    other_range = False
    if known_range and trained.absolute and not other_modality:
        assert trained.low is not None and trained.high is not None
        overlap = min(trained.high, scan.high) - max(trained.low, scan.low)
        wider = max(trained.high - trained.low, scan.high - scan.low, 1e-6)
        other_range = overlap < MIN_OVERLAP * wider
    other_spacing = trained.spacing is not None and any(
        max(a, b) > SPACING_RATIO * max(min(a, b), 1e-6) for a, b in zip(trained.spacing, scan.spacing, strict=True))
    if not (other_modality or other_range or other_spacing):
        return ScanCheck()
    ours: list[str] = []
    theirs: list[str] = []
    if known_range and (other_modality or other_range):
        assert trained.low is not None and trained.high is not None
        ours.append(_intensities(trained.low, trained.high, trained.modality))
        theirs.append(_intensities(scan.low, scan.high, scan.modality))
    if other_spacing:
        assert trained.spacing is not None
        ours.append(_voxels(trained.spacing))
        theirs.append(_voxels(scan.spacing))
    if other_modality and not known_range:
        theirs.insert(0, _intensities(scan.low, scan.high, scan.modality))
    kind = f"{trained.modality} scans" if trained.modality else "scans"
    said = f"this model was trained on {kind}" + (f" ({', '.join(ours)})" if ours else "")
    if other_modality:
        article = "a CT" if scan.modality == "CT" else "an MR scan"
        seen = f"this scan looks like {article} ({', '.join(theirs)})"
    else:
        seen = f"this scan has {' and '.join(theirs)}"
    return ScanCheck(warning=f"{said}; {seen}: expect wrong masks")
