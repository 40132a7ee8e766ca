"""Labelled cases for fine-tuning: read file pairs and in-memory layer pairs, check each label volume against its
image's grid, and prepare the case on the model grid with :mod:`napari_ssl.preprocess` (as inference does)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.classes import SegClass, remap_labels
from napari_ssl.preprocess import Normalization
from napari_ssl.volume import Volume


def case_name(volume: Volume, fallback: str) -> str:
    from napari_ssl.io import scan_suffix

    if volume.name:
        return str(volume.name)
    if volume.path:
        p = Path(volume.path)
        return p.name[: -len(scan_suffix(p))] if scan_suffix(p) else p.name
    return fallback


def case_label(volume: Volume) -> str:
    """A case's name in logs and checkpoints: ``folder/file`` for a file (``Brats18_2013_11_1/flair``: BraTS-like
    layouts name every case's file alike), the layer's name for an in-memory volume."""
    name = case_name(volume, "scan")
    if volume.path and Path(volume.path).parent.name:
        return f"{Path(volume.path).parent.name}/{name}"
    return name


def read_pairs(images: Sequence[str], labels: Sequence[str], pairs: Sequence[Any]) -> list[tuple[list[Volume], Volume, bool]]:
    """``(channels, labels, from_layers)`` for every file pair and in-memory pair."""
    from napari_ssl import io

    out: list[tuple[list[Volume], Volume, bool]] = []
    for image, label in zip(images, labels, strict=False):
        out.append(([io.read(p.strip()) for p in str(image).split(",") if p.strip()], io.read(label), False))
    for i, pair in enumerate(pairs):
        try:
            image, label = pair
        except (TypeError, ValueError):
            raise ValueError(f"pair {i} must be (image, labels), got {type(pair).__name__}") from None
        chans = [image] if isinstance(image, Volume) else list(image)
        chans = [c if isinstance(c, Volume) else Volume(np.asarray(c)) for c in chans]
        lab = label if isinstance(label, Volume) else Volume(np.asarray(label))
        out.append((chans, lab, True))
    return out


def check_pair(channels: list[Volume], label: Volume, lenient: bool) -> Volume:
    """The label volume checked against the image grid (integer ids, same shape and geometry, not empty)."""
    from napari_ssl.preprocess import check_scan

    name = case_name(channels[0], "scan")
    for chan in channels:
        check_scan(chan)
    if label.array.ndim != 3:
        raise ValueError(f"labels of {name}: expected a 3D label volume, got shape {label.array.shape}")
    if label.array.dtype.kind == "f":
        if not np.all(np.mod(label.array[:: max(1, label.array.shape[0] // 8)], 1) == 0):
            raise ValueError(f"labels of {name}: label volumes must hold integer ids, got fractional values")
        label = label.with_array(label.array.astype(np.int32))
    if label.spatial_shape != channels[0].spatial_shape:
        raise ValueError(
            f"labels {label.name or label.path or '?'} of shape {label.spatial_shape} do not match image {name} "
            f"of shape {channels[0].spatial_shape}"
        )
    if not label.same_geometry(channels[0], atol=1e-2):
        if not lenient:
            raise ValueError(
                f"labels {label.path or label.name} are not on the grid of image {channels[0].path or name} "
                "(spacing, origin or direction differ)"
            )
        label = channels[0].with_array(label.array)  # a layer painted over the image: same voxels
    if not np.any(label.array):
        raise ValueError(f"labels {label.name or label.path or 'of ' + name} are empty (all 0): nothing to learn from")
    return label


def prepare_case(channels: Sequence[Volume], label: Volume, classes: Sequence[SegClass], spacing: Sequence[float],
                 norm: Normalization) -> Any:
    """One labelled case on the model grid (:func:`napari_ssl.preprocess.prepare_channels`, as inference does)."""
    from napari_ssl.augment import Case
    from napari_ssl.preprocess import back_to_grid, backgrounds, prepare_channels

    array, grid = prepare_channels(list(channels), spacing=spacing, normalization=norm)
    mapped = remap_labels(back_to_grid(label, grid).array, classes)
    return Case(case_label(channels[0]), array, mapped, backgrounds(array, norm))
