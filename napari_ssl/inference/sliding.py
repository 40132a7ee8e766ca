"""Sliding-window prediction of a segmentation network on a prepared scan, with bounded memory.

MONAI's ``sliding_window_inference`` with Gaussian blending; the windows run on ``sw_device`` and the stitched logits
stay on ``device``. A scan whose stitched logits would exceed ``max_memory_mb`` is cut into slabs along its first axis
(each with a half-window halo on both sides). Used by inference (:mod:`napari_ssl.inference.segment`) and by fine-tuning's
validation. No Qt or napari here.

A model of several channels trained with modality dropout can also run as a *modality ensemble*
(:func:`any_modality`): each window runs once as it is and once with each channel blanked (its background, as
training blanks it), and a voxel of the body is foreground when any of these answers finds it. A structure that one
modality hides (a tumour core grey on FLAIR, bright on T2 and T1ce) is then found from the modalities that show it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: default bound on the stitched logits of one pass of sliding-window inference (MiB)
MAX_MEMORY_MB = 1024


class SegmentationCancelled(Exception):
    """Raised by :func:`predict_labels` (so by :func:`napari_ssl.inference.segment.segment`) when ``should_stop()`` turned true;
    nothing is returned."""


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of windows MONAI's sliding window places on ``shape`` (for progress)."""
    total = 1
    for size, r in zip(shape, roi, strict=False):
        size = max(size, r)
        interval = max(1, int(r * (1 - overlap))) if r < size else r
        total *= max(1, math.ceil((size - r) / interval) + 1)
    return total


def _slabs(depth: int, core: int, halo: int) -> list[tuple[int, int, int, int]]:
    """``(start, stop, keep_start, keep_stop)`` slabs along axis 0: compute ``start:stop``, keep the core."""
    out = []
    for k0 in range(0, depth, core):
        k1 = min(depth, k0 + core)
        out.append((max(0, k0 - halo), min(depth, k1 + halo), k0, k1))
    return out


def any_modality(logits: Any, inside: Any = None) -> Any:
    """The logits of a modality ensemble from ``logits`` (V, B, K, ...): the answers of V variants of the same windows,
    the first as they are and the others with one channel blanked each; K classes, background first.

    *Whether* a voxel is foreground: when any variant's argmax says so (the largest margin of a class over background
    among the variants is positive); *which* class: the one the variant that sees every channel prefers. With one
    class this is the union of the variants' masks; with identical variants, the logits of one (up to a shift). A
    variant without T1ce cannot tell enhancing tumour from core, so it has a say in where the tumour is and none in
    which part of it.

    ``inside`` (B, 1, ...) bool, optional: the voxels where some channel shows the body. Elsewhere (every channel at its
    background) no modality hides anything, and the as-is answer stands: a window cut by blanking one channel inside
    the body would otherwise call empty space outside it tumour.
    """
    import torch

    logits = logits.float()
    margins = logits[:, :, 1:].amax(dim=2, keepdim=True) - logits[:, :, :1]  # (V, B, 1, ...)
    margin = margins.amax(dim=0) if inside is None else torch.where(inside, margins.amax(dim=0), margins[0])
    full = logits[0, :, 1:]  # (B, K-1, ...): the variant with every channel
    classes = margin + full - full.amax(dim=1, keepdim=True)  # its preferred class scores the margin itself
    return torch.cat([torch.zeros_like(margin), classes], dim=1)


def predict_labels(
    net: Any,
    image: np.ndarray,
    *,
    roi: Sequence[int],
    n_classes: int,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    sw_device: Any = None,
    device: Any = None,
    amp: bool = True,
    max_memory_mb: float = MAX_MEMORY_MB,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    pad_value: Sequence[float] | None = None,
    blank_values: Sequence[float] | None = None,
) -> np.ndarray:
    """Argmax labels (uint8, ``image.shape[1:]``) of ``net`` on ``image`` (C, z, y, x), normalised float32.

    ``n_classes`` counts the output channels (background included). Stitched logits are kept on ``device``
    (default: ``sw_device``); when they would exceed ``max_memory_mb`` the scan is processed in slabs. A scan
    smaller than ``roi`` is padded with ``pad_value`` (one per channel; default each channel's minimum), as
    training pads it. On a CPU with bfloat16 the net's weights are put in ``channels_last_3d`` memory format, in
    place (training already holds them so; a loaded model keeps it for the next scan).

    ``blank_values`` (one per channel, what modality dropout blanked a channel with in training) runs the modality
    ensemble (:func:`any_modality`): each window as it is and with each channel blanked in turn, in one batch.
    """
    import torch
    from monai.inferers import sliding_window_inference

    from napari_ssl.device import autocast_dtype, cpu_channels_last

    sw_device = torch.device(sw_device or "cpu")
    device = torch.device(device) if device is not None else sw_device
    roi = tuple(int(r) for r in roi)
    small = [max(0, r - s) for r, s in zip(roi, image.shape[1:], strict=False)]
    if any(small):  # pad as training does (the background of each channel), not with MONAI's constant 0
        from napari_ssl.preprocess import pad_to

        shape = image.shape[1:]
        low = image.reshape(image.shape[0], -1).min(axis=1) if pad_value is None else pad_value
        padded = pad_to(image, roi, list(low))
        out = predict_labels(net, padded, roi=roi, n_classes=n_classes, overlap=overlap, sw_batch_size=sw_batch_size,
                             sw_device=sw_device, device=device, amp=amp, max_memory_mb=max_memory_mb,
                             progress=progress, should_stop=should_stop, blank_values=blank_values)
        return np.ascontiguousarray(out[: shape[0], : shape[1], : shape[2]])
    depth, rest = image.shape[1], image.shape[2:]
    plane_bytes = (n_classes + 1) * 4 * max(rest[0], roi[1]) * max(rest[1], roi[2])
    halo = roi[0] // 2
    core = max(roi[0], int(max_memory_mb * 2**20 // plane_bytes) - 2 * halo)
    slabs = [(0, depth, 0, depth)] if core >= depth else _slabs(depth, core, halo)
    total_calls = max(1, sum(math.ceil(count_windows((b - a, *rest), roi, overlap) / sw_batch_size) for a, b, _, _ in slabs))
    done = [0]
    amp_dtype = autocast_dtype(sw_device, amp)
    use_amp = amp_dtype is not None
    channels_last = cpu_channels_last(sw_device, amp_dtype)
    if channels_last:
        net.to(memory_format=torch.channels_last_3d)

    # the modality ensemble's blank value of each channel, shaped to compare with a batch of windows
    blank = None if blank_values is None else torch.tensor(list(blank_values), device=sw_device).view(1, -1, 1, 1, 1)

    def predictor(x: torch.Tensor) -> torch.Tensor:
        if should_stop is not None and should_stop():
            raise SegmentationCancelled("segmentation cancelled")
        if blank_values is not None:  # the modality ensemble: one batch of the window and its blanked variants
            inside = (x != blank.to(x.device, x.dtype)).any(dim=1, keepdim=True)
            variants = [x]
            for channel, value in enumerate(blank_values):
                blanked = x.clone()
                blanked[:, channel] = value
                variants.append(blanked)
            x = torch.cat(variants)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(sw_device.type, dtype=amp_dtype, enabled=use_amp):
            y = net(x)
        if blank_values is not None:
            y = any_modality(y.reshape(len(blank_values) + 1, -1, *y.shape[1:]), inside.to(y.device))
        done[0] += 1
        if progress is not None:
            progress(min(1.0, done[0] / total_calls))
        return y.float() if use_amp else y

    out = np.zeros(image.shape[1:], dtype=np.uint8)
    with torch.inference_mode():
        for start, stop, keep0, keep1 in slabs:
            x = torch.from_numpy(np.ascontiguousarray(image[:, start:stop]))[None]
            logits = sliding_window_inference(
                inputs=x,
                roi_size=roi,
                sw_batch_size=sw_batch_size,
                predictor=predictor,
                overlap=overlap,
                mode="gaussian",
                sw_device=sw_device,
                device=device,
            )
            step = max(1, (16 * 2**20) // max(1, int(np.prod(rest))))  # argmax (int64) a few slices at a time
            for k in range(keep0, keep1, step):
                stop_k = min(keep1, k + step)
                out[k:stop_k] = torch.argmax(logits[0, :, k - start : stop_k - start], dim=0).to("cpu", torch.uint8).numpy()
            del logits, x
    return out


def largest_components(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Keep only the largest connected component (26-connectivity) of each class in ``classes``."""
    from scipy import ndimage

    out = labels.copy()
    structure = np.ones((3, 3, 3), dtype=bool)
    for value in classes:
        mask = labels == value
        if not mask.any():
            continue
        comp, n = ndimage.label(mask, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        out[mask & (comp != int(np.argmax(sizes)))] = 0
    return out


__all__ = ["MAX_MEMORY_MB", "SegmentationCancelled", "any_modality", "count_windows", "largest_components",
           "predict_labels"]
