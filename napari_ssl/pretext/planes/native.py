"""Imaging planes on native multi-view acquisitions: the setting of Zhang et al. (MedIA 2024).

An exam (a folder of DICOM series: cardiac 2-/4-chamber views, a short-axis stack, cines) holds 2D images with
their world geometry. Each series is one *view* and one output channel of the planes network. A training sample
takes one image of every view of one exam (a random cine frame, a random slice of a stack), resized to the
network's square input (padded to a square, then resampled: the geometry follows exactly), and its targets from
the geometry of the exam's other views, in the format of :class:`~napari_ssl.pretext.planes.task.ImagingPlanes`:
channel ``j`` of view ``i`` is the heatmap of view ``i``'s intersection line with view ``j`` (its middle slice for
a stack; zero when parallel), and a stack slice's relative position in its stack. Cine frames share their series'
geometry: the cardiac phases are a natural augmentation.

Held-out split, honest with one exam: in every view with at least 3 images, ``val_fraction`` of them (evenly
spaced, never the first or last: e.g. cine frames 4, 8, 12, 16, 20 of 25 and short-axis slices 2 and 5 of 8) are
kept out of training; held-out samples use only those images (views with none are blank and unscored).
Everything is numpy; torch only resizes the images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.pretext.planes.geometry import (
    PlanesParams,
    plane_heatmaps,
    planes_from_images,
    slice_positions,
)

__all__ = [
    "NativeExam", "NativeViewsDataset", "build_exams", "check_3d", "group_exams", "held_out_members",
    "is_native", "native_datasets", "native_score", "resize_geometry",
]

_EXTERNAL = "(in memory)"


# ---------------------------------------------------------------- what counts as native views
def _exam_key(volume: Any) -> str:
    """The exam a series belongs to: the folder holding its series folder (or file)."""
    path = getattr(volume, "path", None)
    return str(Path(path).resolve().parent) if path else _EXTERNAL


def _depth(volume: Any) -> int:
    return int(volume.spatial_shape[0])


def group_exams(volumes: Sequence[Any]) -> dict[str, list[Any]]:
    """Series grouped by exam (their parent folder), in reading order."""
    exams: dict[str, list[Any]] = {}
    for vol in volumes:
        exams.setdefault(_exam_key(vol), []).append(vol)
    return exams


def _native_exams(volumes: Sequence[Any]) -> set[str]:
    """Exams holding at least one single-plane series (a view or a cine): multi-view 2D acquisitions."""
    return {key for key, vols in group_exams(volumes).items() if any(_depth(v) == 1 for v in vols)}


def is_native(volumes: Sequence[Any]) -> bool:
    """True when the data is native 2D views only: every series sits in an exam of single-plane views
    (a short-axis stack beside them is a stack of 2D acquisitions, not a 3D scan)."""
    if not all(hasattr(v, "spatial_shape") for v in volumes):  # plain arrays: 3D scans
        return False
    native = _native_exams(volumes)
    return bool(volumes) and all(_exam_key(v) in native for v in volumes)


def check_3d(pretexts: Sequence[str], volumes: Sequence[Any], data: Sequence[Any]) -> None:
    """One clear ``ValueError`` when a pretext that needs 3D scans (no ``native_views`` hook in the registry) is
    given native 2D views only."""
    from napari_ssl.pretext import registry

    three_d = [p for p in pretexts if registry.get(p).native_views is None]
    if three_d and is_native(volumes):
        where = ", ".join(str(d) for d in data) or "the data"
        raise ValueError(
            f"{three_d[0]} needs 3D scans; {where} holds only 2D images (views, cines, a slice stack): "
            "pretrain a pretext that learns from native views on them instead ("
            + ", ".join(n for n in registry.names() if registry.get(n).native_views is not None) + ")"
        )


# ---------------------------------------------------------------- one exam
def resize_geometry(params: PlanesParams, k: int, size: int) -> tuple[PlanesParams, tuple[int, int]]:
    """Plane ``k`` padded to a square (centred) and resampled to ``size`` x ``size`` (align-corners grid).

    Returns the planes with plane ``k``'s new origin, spacing and size, and the padding ``(top, left)`` in
    original pixels. Padded pixel ``(r, c)`` is original ``(r - top, c - left)``; new pixel ``(a, b)`` is padded
    ``(a, b) * (L - 1) / (size - 1)`` for a square of side ``L``.
    """
    h, w = params.sizes[k]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    scale = (side - 1) / (size - 1)
    dr, dc = params.pixel_spacing[k]
    origin = tuple(float(v) for v in params.pixel_to_world(k, [-top, -left]))
    out = replace(
        params,
        origins=_put(params.origins, k, origin),
        pixel_spacing=_put(params.pixel_spacing, k, (dr * scale, dc * scale)),
        sizes=_put(params.sizes, k, (size, size)),
    )
    return out, (top, left)


def _put(values: tuple, k: int, new: Any) -> tuple:
    return tuple(new if i == k else v for i, v in enumerate(values))


def _resize_images(images: np.ndarray, pad: tuple[int, int], size: int) -> np.ndarray:
    """(M, H, W) -> (M, size, size): padded with the minimum to a centred square, bilinear (antialiased)."""
    import torch
    import torch.nn.functional as F

    m, h, w = images.shape
    side = max(h, w)
    square = np.full((m, side, side), float(images.min()), np.float32)
    square[:, pad[0]:pad[0] + h, pad[1]:pad[1] + w] = images
    t = torch.from_numpy(square)[:, None]
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=True, antialias=side > size)
    return out[:, 0].numpy()


def held_out_members(n: int, fraction: float) -> np.ndarray:
    """Boolean mask of the held-out images of a view of ``n`` images (none below 3 images)."""
    mask = np.zeros(n, bool)
    if n >= 3 and fraction > 0:
        k = min(n - 2, max(1, round(n * fraction)))
        mask[np.round(np.linspace(0, n - 1, k + 2)[1:-1]).astype(int)] = True
    return mask


@dataclass
class NativeExam:
    """One exam ready for sampling: its views' resized images and the targets of every plane.

    ``images[key]`` (M, S, S) float32 and ``plane_of[key]`` (M,) the plane of each image; ``held_out[key]`` (M,)
    bool; ``heat`` (P, P, S, S) and ``has_line`` (P, P) over the exam's planes; ``reference[key]`` the plane that
    stands for a view in the targets (a stack's middle slice); ``position`` / ``in_stack`` (P,).
    """

    name: str
    params: PlanesParams
    images: dict[str, np.ndarray]
    plane_of: dict[str, np.ndarray]
    held_out: dict[str, np.ndarray]
    reference: dict[str, int]
    heat: np.ndarray
    has_line: np.ndarray
    position: np.ndarray
    in_stack: np.ndarray
    series: dict[str, str]


def _view_key(volume: Any, taken: set[str]) -> str:
    key = volume.name or (Path(volume.path).name if volume.path else "view")
    base, n = key, 2
    while key in taken:
        key, n = f"{base}#{n}", n + 1
    return key


def _build_exam(name: str, volumes: Sequence[Any], size: int, sigma: float, norm: Any,
                fraction: float) -> NativeExam:
    keys: list[str] = []
    for vol in volumes:
        keys.append(_view_key(vol, set(keys)))
    params = planes_from_images(list(volumes), names=keys)
    images, plane_of, held, reference, series = {}, {}, {}, {}, {}
    first = 0
    for key, vol in zip(keys, volumes, strict=True):
        depth = _depth(vol)
        arr = np.asarray(vol.array, dtype=np.float32)
        arr = norm(arr) if norm is not None else arr
        if arr.ndim == 4:  # (t, z, h, w): cine frames share the series' (first frame's) geometry
            frames = arr.reshape(-1, *arr.shape[-2:])  # every slice of every frame
            planes = np.tile(np.arange(first, first + depth), arr.shape[0])
        else:
            frames, planes = arr, np.arange(first, first + depth)
        pad = (0, 0)
        for p in range(first, first + depth):
            params, pad = resize_geometry(params, p, size)
        images[key] = _resize_images(frames, pad, size)
        plane_of[key] = planes
        held[key] = held_out_members(len(frames), fraction)
        reference[key] = first + depth // 2
        series[key] = str(Path(vol.path).resolve()) if vol.path else key
        first += depth
    heat, has_line = plane_heatmaps(params, sigma)
    position, in_stack = slice_positions(params)
    return NativeExam(name, params, images, plane_of, held, reference, np.asarray(heat), has_line,
                      position, in_stack, series)


def build_exams(volumes: Sequence[Any], size: int, sigma: float, norm: Any = None,
                val_fraction: float = 0.2) -> list[NativeExam]:
    """The native exams of ``volumes`` (series read by :func:`napari_ssl.io.read_all`), each with >= 2 planes."""
    exams = []
    for name, vols in group_exams(volumes).items():
        planes = sum(_depth(v) for v in vols)
        if planes < 2:
            continue
        exams.append(_build_exam(name, vols, size, sigma, norm, val_fraction))
    if not exams:
        raise ValueError("native views need an exam of at least 2 planes with DICOM geometry (one folder of series)")
    return exams


# ---------------------------------------------------------------- samples
class NativeViewsDataset:
    """Map-style dataset of native-view samples, keys as :class:`~napari_ssl.pretext.planes.sample.PlanesAdapter`'s.

    Item ``i`` draws from ``default_rng([seed, i])``: an exam, then one image per view (``channels`` fixes the
    views' order; a view the exam lacks, or with no image in the split, is a blank image with zero targets).
    ``split``: ``"train"`` (images not held out), ``"held_out"`` or ``"all"``; ``unseen`` names series never
    trained on, whose every image counts as held out.
    """

    def __init__(self, exams: Sequence[NativeExam], channels: Sequence[str], seed: int, length: int,
                 split: str = "train", unseen: frozenset[str] = frozenset()) -> None:
        if split not in ("train", "held_out", "all"):
            raise ValueError(f"split must be train, held_out or all, got {split!r}")
        self.exams, self.channels = list(exams), list(channels)
        self.seed, self.length, self.split = int(seed), int(length), split
        self.allowed = [
            {key: np.flatnonzero(self._mask(exam, key, unseen)) for key in exam.images} for exam in self.exams
        ]
        if not any(len(ix) for allowed in self.allowed for ix in allowed.values()):
            raise ValueError(f"no {split.replace('_', '-')} images in the native views")

    def _mask(self, exam: NativeExam, key: str, unseen: frozenset[str]) -> np.ndarray:
        held = exam.held_out[key]
        if self.split == "all" or exam.series[key] in unseen:
            held = np.ones_like(held)
        return ~held if self.split == "train" else held

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, int(index)])
        e = int(rng.integers(len(self.exams)))
        exam, allowed = self.exams[e], self.allowed[e]
        size = exam.images[next(iter(exam.images))].shape[-1]
        v = len(self.channels)
        images = np.zeros((v, 1, size, size), np.float32)
        heat = np.zeros((v, v, size, size), np.float32)
        has_line = np.zeros((v, v), bool)
        position = np.zeros(v, np.float32)
        mask = np.zeros(v, np.float32)
        refs = [exam.reference.get(key, -1) for key in self.channels]
        for i, key in enumerate(self.channels):
            ix = allowed.get(key)
            if ix is None or not len(ix):
                continue
            m = int(ix[rng.integers(len(ix))])
            p = int(exam.plane_of[key][m])
            images[i, 0] = exam.images[key][m]
            for j, r in enumerate(refs):
                if r >= 0 and r != p and exam.has_line[p, r]:
                    heat[i, j] = exam.heat[p, r]
                    has_line[i, j] = True
            position[i], mask[i] = exam.position[p], float(exam.in_stack[p])
        return {"planes.images": images, "planes.heatmaps": heat, "planes.has_line": has_line,
                "planes.position": position, "planes.position_mask": mask}


def _channels(exams: Sequence[NativeExam]) -> list[str]:
    seen: list[str] = []
    for exam in exams:
        seen += [k for k in exam.images if k not in seen]
    return seen


def native_datasets(raw: Sequence[Any], task: Any, data: Sequence[Any], norm: Any,
                    seed: int, train_length: int, val_length: int, val_fraction: float) -> dict[str, Any]:
    """Training and held-out datasets of the planes ``task`` on native views (the registry's ``native_views`` hook
    of imaging planes; the engine calls it when :func:`is_native` holds for the data).

    Returns ``train``, ``val``, ``n_train``/``n_val`` (images) and ``meta`` (recorded in the checkpoint for
    ``score``).
    """
    size = int(task.size[0])
    exams = build_exams(raw, size, task.sigma, norm, val_fraction)
    channels = _channels(exams)
    train = NativeViewsDataset(exams, channels, seed, train_length, "train")
    val = NativeViewsDataset(exams, channels, seed + 1_000_003, max(1, val_length), "held_out")
    n_val = sum(int(h.sum()) for ex in exams for h in ex.held_out.values())
    n_all = sum(len(h) for ex in exams for h in ex.held_out.values())
    meta = {
        "channels": channels, "size": size, "sigma": task.sigma, "val_fraction": val_fraction,
        "series": sorted(s for ex in exams for s in ex.series.values()),
        "held_out": {ex.series[k]: np.flatnonzero(h).tolist() for ex in exams for k, h in ex.held_out.items()},
    }
    return {"train": train, "val": val, "n_train": n_all - n_val, "n_val": n_val, "meta": meta}


def native_score(net: Any, native: Mapping[str, Any], raw: Sequence[Any], norm: Any, *, samples: int,
                 batch_size: int, seed: int, device: Any) -> dict[str, float]:
    """Mean planes metrics of ``net`` on native views never trained on: the held-out images of trained series
    (same split rule as training) and every image of series the run did not see. Besides the planes metrics,
    ``planes/stack_angle_error_deg`` is the angle error on held-out stack slices alone (their lines differ from
    every trained slice's; a held-out cine frame shares its lines with the trained frames). ``native``: the
    checkpoint's ``native_views`` (channels, series, size, sigma, val_fraction)."""
    from napari_ssl.metrics import mean_metrics

    exams = build_exams(raw, int(native["size"]), float(native["sigma"]), norm, float(native["val_fraction"]))
    channels = list(native["channels"])
    if not any(key in channels for ex in exams for key in ex.images):
        raise ValueError(f"the checkpoint learned the native views {', '.join(channels)}; the data holds none of them")
    trained = set(native["series"])
    unseen = frozenset(s for ex in exams for s in ex.series.values() if s not in trained)
    dataset = NativeViewsDataset(exams, channels, seed + 2_000_003, samples, "held_out", unseen)

    def measure(out: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        metrics = dict(net.metrics(out, batch))
        stack = batch["planes.position_mask"].bool()[:, :, None]  # held-out slices of a stack: new lines
        if bool(stack.any()):
            angle = net.metrics(out, {**batch, "planes.has_line": batch["planes.has_line"] & stack}).get(
                "planes/angle_error_deg")
            if angle is not None:
                metrics["planes/stack_angle_error_deg"] = angle
        return metrics

    return mean_metrics(net, dataset, samples=samples, batch_size=batch_size, device=device, measure=measure)
