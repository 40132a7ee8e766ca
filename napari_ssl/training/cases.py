"""Labelled cases for fine-tuning: read file pairs and in-memory layer pairs, check each label volume against its
image's grid, and prepare the case on the model grid with :mod:`napari_ssl.preprocess` (as inference does)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.classes import IGNORE, SegClass, painted_slices, remap_labels
from napari_ssl.io.volume import Volume
from napari_ssl.preprocess import Normalization


def case_name(volume: Volume, fallback: str) -> str:
    from napari_ssl.io import scan_suffix

    if volume.name:
        return str(volume.name)
    if volume.path:
        p = Path(volume.path)
        return p.name[: -len(scan_suffix(p))] if scan_suffix(p) else p.name
    return fallback


#: modality words a scan's file or layer name may hold, longest first (``t1ce`` before ``t1``)
MODALITIES = ("t1ce", "t1gd", "t1c", "t1w", "t2w", "flair", "t1", "t2", "pd", "dwi", "adc", "swi", "ct", "pet")


def modality_of(name: str) -> str | None:
    """The modality word in a file or layer name (``Brats18_2013_11_1_flair`` -> ``flair``), None without one."""
    low = name.lower()
    for word in MODALITIES:
        if re.search(rf"(?<![a-z0-9]){word}(?![a-z0-9])", low):
            return word
    return None


def channel_names(cases: Sequence[Sequence[Volume]]) -> list[str]:
    """What each input channel of a model is called: the modality its scans name (``flair``), else the name all
    cases give it (``flair.nii.gz`` in every case folder), else ``image`` (one channel) or ``channel K``. Never one
    case's own name (a flat folder of ``Brats18_...nii.gz`` files names cases, not the channel)."""
    n = len(cases[0])
    out = []
    for k in range(n):
        names = [case_name(case[k], "") for case in cases]
        words = {modality_of(name) for name in names}
        if len(words) == 1 and None not in words:
            out.append(words.pop())
        elif len(cases) > 1 and len(set(names)) == 1 and names[0]:
            out.append(names[0])
        else:
            out.append("image" if n == 1 else f"channel {k + 1}")
    return out


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
                 norm: Normalization, annotated: str = "all", ignore_label: int | None = None) -> Any:
    """One labelled case on the model grid (:func:`napari_ssl.preprocess.prepare_channels`, as inference does).

    The labels become class indices on their own grid first, then are resampled (nearest neighbour, so the
    :data:`~napari_ssl.classes.IGNORE` value travels as it is). ``ignore_label``: voxels of that source value are
    unlabelled; ``annotated="slices"``: every slice along axis 0 without a painted voxel is unlabelled too.
    """
    from napari_ssl.preprocess import back_to_grid, backgrounds, prepare_channels
    from napari_ssl.training.augment import Case

    array, grid = prepare_channels(list(channels), spacing=spacing, normalization=norm)
    ignore_ids = () if ignore_label is None else (int(ignore_label),)
    source = remap_labels(label.array, classes, ignore_ids)
    if annotated == "slices":
        source[~painted_slices(label.array, ignore_ids)] = IGNORE
    mapped = back_to_grid(label.with_array(source), grid).array
    return Case(case_label(channels[0]), array, mapped, backgrounds(array, norm))
