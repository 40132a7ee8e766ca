"""The Pretext explorer's preview of any registered pretext that brings no preview of its own (pure numpy, runs in
the worker): the corrupted scan and the boxes the task's overlay names (Models Genesis: its painting boxes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_ssl._napari.explorer.compute import Preview, PreviewRequest, _foreground, paint_boxes

__all__ = ["boxes_preview", "on_body"]


def boxes_preview(req: PreviewRequest, task: Any, rng: np.random.Generator) -> Preview:
    """The generic preview of a registered pretext: ``task.apply`` on the scan (or ``task.invert`` of it with
    "restore"), the boxes of ``task.overlay(params)["boxes"]`` (``(n, 2, 3)`` start / stop voxel corners, if any)
    outlined, ``task.describe(params)`` (if any) as the summary."""
    vol = req.volume
    if vol is None:
        raise ValueError("this pretext previews on one 3D scan; pick a scan, not 'All views'")
    mask, where = _foreground(req)
    params = task.sample(vol.spatial_shape, rng, vol.spacing, foreground=mask)
    overlay = task.overlay(params)
    image = task.apply(vol.array, params)
    if req.restore and hasattr(task, "invert"):
        image = task.invert(image, params)
    image = np.asarray(image).astype(np.asarray(vol.array).dtype, copy=False)
    body_3d, limits_3d = on_body(np.asarray(vol.array), image, mask)
    boxes = np.asarray(overlay.get("boxes", np.zeros((0, 2, 3))), dtype=int).reshape(-1, 2, 3)
    n = len(boxes)
    values = np.arange(n) + 1
    describe = getattr(task, "describe", None)
    summary = describe(params) if callable(describe) else type(params).__name__
    return Preview(
        request=req,
        task=task,
        params=params,
        overlay=overlay,
        image=image,
        boxes=boxes,
        box_values=values,
        box_text=[str(v) for v in values],
        box_width=np.full(n, 1.5),
        box_alpha=np.ones(n),
        labels=paint_boxes(vol.spatial_shape, boxes, values),
        focus=(boxes[0, 0] + boxes[0, 1] - 1) / 2.0 if n else None,
        foreground=where,
        summary=summary + (f". Placed on the body ({where})" if where and n else ""),
        body_3d=body_3d,
        limits_3d=limits_3d,
    )


def on_body(source: np.ndarray, image: np.ndarray, mask: np.ndarray | None) -> tuple[Any, Any]:
    """The 3D view of a corrupted volume: ``image`` on the source's body (``mask``, or the foreground mask when
    the corruption was not placed with one), the rest set to the source's minimum (black); the limits are the
    source's percentiles 1 and 99.5 on the body. ``(None, None)`` for a volume without a body."""
    if mask is None:
        from napari_ssl.io.foreground import foreground_mask, resolve_method

        mask = foreground_mask(source, resolve_method(source))
    if mask is None or not mask.any():
        return None, None
    lo, hi = (float(v) for v in np.percentile(source[mask], (1.0, 99.5)))
    if hi <= lo:
        hi = lo + 1.0
    out = np.array(image, copy=True)
    out[~mask] = np.asarray(min(lo, float(source.min()))).astype(out.dtype)
    return out, (lo, hi)
