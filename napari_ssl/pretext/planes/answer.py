"""What an imaging-planes network answers on one sample: its line heatmaps and slice positions for the planes the
explorer shows, with the angle and position errors (torch; run by the explorer in a child process)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume
from napari_ssl.study.answers import need, resize

__all__ = ["answer_planes", "describe_planes"]


def answer_planes(network: Any, volume: Volume, task: Any, params: Any,
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

    from napari_ssl.pretext.planes.network import heatmap_angles

    need(network, name)
    if params.volume_shape is None:
        raise ValueError("the network's answer needs planes resampled from a 3D scan, not acquired views")
    n_views = network.net.spec.heads[name]["n_views"]
    n = params.n_planes
    if n != n_views:
        trained = network.options(name)
        raise ValueError(
            f"this network predicts lines for {n_views} planes (n_stack {trained.get('n_stack', '?')}, "
            f"n_oblique {trained.get('n_oblique', '?')}); set the same to see its answer (now {n} planes)"
        )
    normed, _ = network.normalise(volume)
    images = np.asarray(task.apply(normed, params), dtype=np.float32)  # (N, H, W)
    h, w = images.shape[-2:]
    size = network.options(name).get("size", (h, w))
    size = (int(size), int(size)) if np.ndim(size) == 0 else tuple(int(s) for s in size)
    with torch.no_grad():
        x = resize(torch.from_numpy(images)[:, None].to(network.device), size)  # (N, 1, h', w')
        out = network.forward(name, {f"{name}.images": x[None]})
        heat = resize(out[f"{name}.heatmaps"][0].float(), (h, w))  # (N, V, H, W)
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


def describe_planes(result: dict[str, Any], label: str = "Imaging planes") -> str:
    """One sentence on :func:`answer_planes`'s result."""
    angle, mae = result["angle_error_deg"], result["position_mae"]
    pos = f", slice position error {mae:.2f}" if math.isfinite(mae) else ""
    return (
        f"Network: line angle error {angle:.1f}° over {int(result['has_line'].sum())} lines{pos}. "
        "Tiles: its predicted heatmaps, true lines drawn over them"
    )
