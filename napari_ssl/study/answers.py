"""What a pretraining network answers on one pretext sample: the explorer's "see what the network learned".

Given a pretraining checkpoint (:func:`load_network`) and one sample of a pretext (the pretext object and the
params it drew on a scan, as the Pretext explorer shows them), each function runs the network on exactly that
corrupted sample, prepared as in training (the checkpoint's intensity normalisation; its voxel spacing for
context restoration; Rubik cubes and plane images resized to the size the network was trained on), and returns
plain arrays and numbers next to the truth:

- :func:`answer_context` (context restoration, and any restoration pretext: Models Genesis): the restored volume (on the scan's grid, in the scan's intensity units) and the PSNR
  of the restoration and of the corrupted input against the original (dB, on the network's grid);
- :func:`answer_rubik`: the predicted and true permutation index, and per cube whether its position (the
  predicted permutation puts the right cube there) and its rotation flags were predicted right;
- :func:`answer_planes`: the predicted line heatmaps and slice positions of every plane next to the targets,
  the angle error of each line (degrees) and the position error of each stack slice.

:func:`answer` and :func:`describe` find a pretext's functions in its registry record
(:class:`~napari_ssl.pretext.registry.AnswerSpec`, ``ExplorerSpec.answer``), so that a pretext brings its own;
:func:`~napari_ssl.training.pretrained.load_network` loads the network. No Qt here; the explorer runs these in a worker
thread.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume
from napari_ssl.training.pretrained import PretrainedNetwork, load_network

__all__ = [
    "PretrainedNetwork",
    "answer",
    "answer_context",
    "answer_planes",
    "answer_rubik",
    "answer_spec",
    "context_step_params",
    "describe",
    "describe_planes",
    "describe_restoration",
    "describe_rubik",
    "load_network",
]


def _label(name: str) -> str:
    from napari_ssl.pretext import registry

    return registry.get(name).label if name in registry.names() else name


def _need(network: PretrainedNetwork, pretext: str) -> None:
    if pretext not in network.pretexts:
        label = _label(pretext)
        raise ValueError(
            f"this network was not trained on {label} (it learned {', '.join(network.pretexts)}); "
            "choose a checkpoint pretrained with it"
        )


def _resize(tensor: Any, size: tuple[int, ...]) -> Any:
    """``(N, C, *spatial)`` resized to ``size`` (linear; antialiased when shrinking 2D images)."""
    import torch.nn.functional as F

    if tuple(tensor.shape[2:]) == tuple(size):
        return tensor
    mode = "trilinear" if len(size) == 3 else "bilinear"
    shrink = len(size) == 2 and any(s < t for s, t in zip(size, tensor.shape[2:], strict=True))
    return F.interpolate(tensor, size=tuple(int(s) for s in size), mode=mode, align_corners=False,
                         antialias=shrink)


# ---------------------------------------------------------------------------------------------- context
def context_step_params(params: Any, step: int | None) -> Any:
    """The context params after the first ``step`` swaps (``None``: all), as the explorer shows them."""
    n = len(params.pairs)
    step = n if step is None else int(np.clip(step, 0, n))
    return params if step == n else replace(params, pairs=params.pairs[:step])


def answer_context(network: PretrainedNetwork, volume: Volume, task: Any, params: Any,
                   name: str = "context") -> dict[str, Any]:
    """Restore the corrupted sample ``task.apply(volume, params)`` with the network's restoration U-Net of the
    pretext ``name`` (any pretext with :class:`~napari_ssl.models.tasks.RestorationHooks`: its ``name.input`` /
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

    _need(network, name)
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


def _body_box(network: PretrainedNetwork, volume: Volume, grid: tuple[int, ...],
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


# ---------------------------------------------------------------------------------------------- rubik
def answer_rubik(network: PretrainedNetwork, volume: Volume, task: Any, params: Any,
                 name: str = "rubik") -> dict[str, Any]:
    """The network's permutation and rotations for the cubes of ``params`` cut from the normalised scan.

    The cubes are resized to the cube shape the network was trained on. Cube ``i`` (the one in cell ``i``)
    is *in the right place* when the predicted permutation puts the true source cube there
    (``predicted_permutation[i] == params.permutation[i]``), and *turned right* when both its rotation flags
    are predicted right.

    Returns
    -------
    dict
        ``perm_pred`` / ``perm_true`` (class indices), ``perm_prob`` (softmax of the prediction),
        ``perm_prob_true``, ``permutation_pred`` / ``permutation_true`` (n_cubes,), ``rotations_pred`` /
        ``rotations_true`` (n_cubes, 2) bool, ``position_right``, ``rotation_right`` and ``right`` (n_cubes,) bool.
    """
    import torch

    _need(network, name)
    spec = network.net.spec
    if task.grid**3 != spec.n_cubes or task.n_permutations != spec.n_permutations:
        trained = round(spec.n_cubes ** (1 / 3))
        raise ValueError(
            f"this network was trained with grid {trained} and {spec.n_permutations} permutations; "
            f"set the same to see its answer (now grid {task.grid}, {task.n_permutations} permutations)"
        )
    normed, _ = network.normalise(volume)
    cubes = np.ascontiguousarray(task.cubes(normed[None], params), dtype=np.float32)  # (n, 1, cz, cy, cx)
    with torch.no_grad():
        x = _resize(torch.from_numpy(cubes).to(network.device), spec.cube_shape)
        out = network.forward(name, {f"{name}.cubes": x[None]})
        probs = torch.softmax(out[f"{name}.perm"][0].float(), dim=0).cpu().numpy()
        rot_pred = (out[f"{name}.rot"][0] > 0).cpu().numpy()
    pred = int(np.argmax(probs))
    perm_pred = np.asarray(task.permutations[pred])
    perm_true = np.asarray(params.permutation)
    rot_true = np.asarray(params.rotations, dtype=bool).reshape(-1, 2)
    position_right = perm_pred == perm_true
    rotation_right = (rot_pred == rot_true).all(axis=1)
    return {
        "perm_pred": pred,
        "perm_true": int(params.permutation_index),
        "perm_prob": float(probs[pred]),
        "perm_prob_true": float(probs[int(params.permutation_index)]),
        "permutation_pred": perm_pred,
        "permutation_true": perm_true,
        "rotations_pred": rot_pred,
        "rotations_true": rot_true,
        "position_right": position_right,
        "rotation_right": rotation_right,
        "right": position_right & rotation_right,
    }


# ---------------------------------------------------------------------------------------------- planes
def answer_planes(network: PretrainedNetwork, volume: Volume, task: Any, params: Any,
                  name: str = "planes") -> dict[str, Any]:
    """The network's line heatmaps and slice positions for the planes of ``params`` resampled from the
    normalised scan (resized to the plane size it was trained on, heatmaps resized back).

    Returns
    -------
    dict
        ``heatmaps`` (N, N, H, W) predicted, ``heatmaps_true`` and ``has_line`` (N, N) from the targets,
        ``positions`` / ``positions_true`` / ``in_stack`` (N,), ``angle_error`` (N, N) degrees (NaN where
        plane ``j`` does not cut plane ``i`` inside its image), ``angle_error_deg`` (mean) and
        ``position_mae`` (mean over stack slices; NaN without a stack).
    """
    import torch

    from napari_ssl.models.heads import heatmap_angles

    _need(network, name)
    if params.volume_shape is None:
        raise ValueError("the network's answer needs planes resampled from a 3D scan, not acquired views")
    spec = network.net.spec
    n = params.n_planes
    if n != spec.n_views:
        trained = network.options(name)
        raise ValueError(
            f"this network predicts lines for {spec.n_views} planes (n_stack {trained.get('n_stack', '?')}, "
            f"n_oblique {trained.get('n_oblique', '?')}); set the same to see its answer (now {n} planes)"
        )
    normed, _ = network.normalise(volume)
    images = np.asarray(task.apply(normed, params), dtype=np.float32)  # (N, H, W)
    h, w = images.shape[-2:]
    size = network.options(name).get("size", (h, w))
    size = (int(size), int(size)) if np.ndim(size) == 0 else tuple(int(s) for s in size)
    with torch.no_grad():
        x = _resize(torch.from_numpy(images)[:, None].to(network.device), size)  # (N, 1, h', w')
        out = network.forward(name, {f"{name}.images": x[None]})
        heat = _resize(out[f"{name}.heatmaps"][0].float(), (h, w))  # (N, V, H, W)
        positions = out[f"{name}.position"][0].float().cpu().numpy()
        targets = task.targets(params)
        true = torch.as_tensor(np.asarray(targets["heatmaps"], dtype=np.float32))
        pred_angle, _ = heatmap_angles(heat.cpu())
        true_angle, _ = heatmap_angles(true)
    has_line = np.asarray(targets["has_line"], dtype=bool) & (true.amax((-2, -1)) > 0.5).numpy()
    diff = np.remainder((pred_angle - true_angle).numpy(), math.pi)
    error = np.degrees(np.minimum(diff, math.pi - diff))
    error[~has_line] = np.nan
    in_stack = np.asarray(targets["in_stack"], dtype=bool)
    pos_true = np.asarray(targets["slice_position"], dtype=np.float32)
    return {
        "heatmaps": heat.cpu().numpy(),
        "heatmaps_true": true.numpy(),
        "has_line": has_line,
        "positions": positions,
        "positions_true": pos_true,
        "in_stack": in_stack,
        "angle_error": error,
        "angle_error_deg": float(np.nanmean(error)) if has_line.any() else float("nan"),
        "position_mae": float(np.abs(positions - pos_true)[in_stack].mean()) if in_stack.any() else float("nan"),
    }


# ---------------------------------------------------------------------------------------------- words
def describe_restoration(result: dict[str, Any], label: str = "Context restoration") -> str:
    """One sentence on :func:`answer_context`'s result."""
    return (
        f"Network ({label}): PSNR vs the original, corrupted input {result['psnr_input']:.1f} dB, restored "
        f"{result['psnr']:.1f} dB ({result['psnr_gain']:+.1f} dB); inside the outlined boxes "
        f"{result['psnr_input_patches']:.1f} -> {result['psnr_patches']:.1f} dB"
    )


def describe_rubik(result: dict[str, Any], label: str = "Rubik's cube") -> str:
    """One sentence on :func:`answer_rubik`'s result."""
    n = len(result["right"])
    return (
        f"Network: permutation {result['perm_pred']} predicted (p={result['perm_prob']:.2f}), true "
        f"{result['perm_true']} (p={result['perm_prob_true']:.2f}); {int(result['position_right'].sum())} of "
        f"{n} cubes in the right place, {int(result['rotation_right'].sum())} of {n} turned right "
        "(outlines: green both right, orange one, red neither)"
    )


def describe_planes(result: dict[str, Any], label: str = "Imaging planes") -> str:
    """One sentence on :func:`answer_planes`'s result."""
    angle, mae = result["angle_error_deg"], result["position_mae"]
    pos = f", slice position error {mae:.2f}" if math.isfinite(mae) else ""
    return (
        f"Network: line angle error {angle:.1f}° over {int(result['has_line'].sum())} lines{pos}. "
        "Tiles: its predicted heatmaps, true lines drawn over them"
    )


# ---------------------------------------------------------------------------------------------- any pretext
def answer_spec(pretext: str) -> Any:
    """The :class:`~napari_ssl.pretext.registry.AnswerSpec` of ``pretext``; ``ValueError`` with one sentence for
    an unknown pretext or one without a network answer view."""
    from napari_ssl.pretext import registry

    spec = registry.get(pretext)
    if spec.explorer.answer is None:
        raise ValueError(f"{spec.label} has no network answer view: the explorer shows only its samples")
    return spec.explorer.answer


def answer(network: PretrainedNetwork, pretext: str, volume: Volume, task: Any, params: Any) -> dict[str, Any]:
    """The network's answer for one sample of ``pretext``: its registry record's ``compute``."""
    from napari_ssl.pretext import registry

    name = registry.get(pretext).name
    return registry.resolve(answer_spec(name).compute)(network, volume, task, params, name)  # type: ignore[no-any-return]


def describe(pretext: str, result: dict[str, Any]) -> str:
    """One sentence on an answer, for the explorer's status line (the registry record's ``describe``)."""
    from napari_ssl.pretext import registry

    return str(registry.resolve(answer_spec(pretext).describe)(result, registry.get(pretext).label))
