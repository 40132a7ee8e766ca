"""What a restoration network answers on one sample (context restoration, Models Genesis: any pretext with
:class:`~napari_ssl.pretext._restoration.network.RestorationHooks`): the restored volume beside the corrupted one
and the original, and the PSNRs (torch; run by the explorer in a child process).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume
from napari_ssl.study.answers import need

__all__ = ["answer_restoration", "describe_restoration", "paint_mask"]


def answer_restoration(network: Any, volume: Volume, task: Any, params: Any,
                   name: str = "context") -> dict[str, Any]:
    """Restore the corrupted sample ``task.apply(volume, params)`` with the network's restoration U-Net of the
    pretext ``name`` (any pretext with :class:`~napari_ssl.pretext._restoration.network.RestorationHooks`: its ``name.input`` /
    ``name.restored``; ``task.overlay(params)["boxes"]`` are the corrupted boxes).

    The scan is normalised as in training and corrupted with ``params`` on its own grid, then both the clean
    and the corrupted scan are resampled to the checkpoint's spacing, where the network restores the
    corrupted one (sliding windows of its patch size, over the body when it was trained on the body) and the PSNRs are measured (the same
    :func:`~napari_ssl.models.heads.psnr` as ``napari-ssl score``). The restoration comes back to the scan's
    grid and intensity units for display.

    Returns
    -------
    dict
        ``restored`` (the scan's shape, float32, scan units), ``corrupted`` (the network's input in scan
        units), ``psnr`` (restored vs original, dB),
        ``psnr_input`` (corrupted vs original), ``psnr_gain``, ``psnr_patches`` / ``psnr_input_patches`` (the
        same inside the swapped patches only, on the scan's grid), ``network_shape`` (grid the network ran on).
    """
    import torch
    from monai.inferers import sliding_window_inference

    from napari_ssl.models.heads import psnr

    need(network, name)
    normed, (a, _) = network.normalise(volume)
    corrupted = np.asarray(task.apply(normed, params), dtype=np.float32)
    shape = tuple(int(s) for s in volume.spatial_shape)
    target = network.info.spacing
    grid = shape if not target else tuple(
        max(2, round(s * sp / t)) for s, sp, t in zip(shape, volume.spacing, target, strict=True)
    )
    dev = network.device
    with torch.no_grad():
        both = torch.from_numpy(np.stack([normed, corrupted]))[:, None].to(dev)  # (2, 1, z, y, x)
        both = _resize_exact(both, grid)
        clean, dirty = both[:1], both[1:]
        roi = tuple(int(p) for p in network.info.patch_size or (32, 32, 32))  # a smaller scan is padded

        def restore(x: torch.Tensor) -> torch.Tensor:
            return network.forward(name, {f"{name}.input": x})[f"{name}.restored"]

        restored = dirty.clone()
        box = (..., *_body_box(network, volume, grid, roi))  # where the network was trained to work
        restored[box] = sliding_window_inference(dirty[box], roi, 4, restore, overlap=0.25, mode="gaussian")
        after, before = float(psnr(restored, clean)[0]), float(psnr(dirty, clean)[0])
        correction = _resize_exact(restored - dirty, shape)[0, 0].float().cpu().numpy()
    swapped = paint_mask(shape, task.overlay(params)["boxes"])
    peak = float(np.ptp(normed)) or 1.0
    # the network's correction in scan units, added to the corrupted scan at full resolution: exact wherever the
    # normalisation is affine, and a voxel the network leaves alone keeps its value (a background of zeros too)
    scan = np.asarray(task.apply(np.asarray(volume.array, dtype=np.float32), params), dtype=np.float32)
    return {
        "restored": scan + np.float32(a) * correction,
        "corrupted": scan,
        "psnr": after,
        "psnr_input": before,
        "psnr_gain": after - before,
        "psnr_patches": _masked_psnr(corrupted + correction, normed, swapped, peak),
        "psnr_input_patches": _masked_psnr(corrupted, normed, swapped, peak),
        "network_shape": grid,
    }


def paint_mask(shape: tuple[int, ...], boxes: Any) -> np.ndarray:
    """A boolean volume, True inside every box ``[start, stop)`` of ``boxes`` (``(..., 2, 3)`` voxel corners)."""
    mask = np.zeros(shape, dtype=bool)
    for lo, hi in np.asarray(boxes, dtype=int).reshape(-1, 2, 3):
        mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return mask


def _masked_psnr(x: np.ndarray, ref: np.ndarray, mask: np.ndarray, peak: float) -> float:
    """PSNR (dB) of ``x`` against ``ref`` over ``mask``, with the whole reference's range as the peak
    (NaN for an empty mask)."""
    if not mask.any():
        return float("nan")
    mse = max(float(np.mean((x[mask].astype(np.float64) - ref[mask]) ** 2)), 1e-12)
    return float(10 * np.log10(peak**2 / mse))


def _body_box(network: Any, volume: Volume, grid: tuple[int, ...],
              roi: tuple[int, ...]) -> tuple[slice, ...]:
    """Slices of the network grid around the body (a quarter window of margin) when the network was trained on
    patches placed on the body (the default), else the whole grid: windows of air are nothing it learned."""
    whole = tuple(slice(0, g) for g in grid)
    if not (network.info.config or {}).get("foreground", False):
        return whole
    from napari_ssl.io.foreground import foreground_bbox, foreground_mask

    found = foreground_bbox(foreground_mask(np.asarray(volume.array)))
    if found is None:
        return whole
    out = []
    for lo, hi, s, g, r in zip(*found, volume.spatial_shape, grid, roi, strict=True):
        f = (g - 1) / max(s - 1, 1)  # source index -> grid index (corner-aligned, as _resize_exact)
        out.append(slice(max(0, int(lo * f) - r // 4), min(g, int(np.ceil((hi - 1) * f)) + 1 + r // 4)))
    return tuple(out)


def _resize_exact(tensor: Any, size: tuple[int, ...]) -> Any:
    """Resample ``(N, C, z, y, x)`` between two grids over the same extent (voxel centres at the corners)."""
    import torch.nn.functional as F

    if tuple(tensor.shape[2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor, size=tuple(size), mode="trilinear", align_corners=True)


def describe_restoration(result: dict[str, Any], label: str = "Context restoration") -> str:
    """One sentence on :func:`answer_restoration`'s result."""
    return (
        f"Network ({label}): PSNR vs the original, corrupted input {result['psnr_input']:.1f} dB, restored "
        f"{result['psnr']:.1f} dB ({result['psnr_gain']:+.1f} dB); inside the outlined boxes "
        f"{result['psnr_input_patches']:.1f} -> {result['psnr_patches']:.1f} dB"
    )
