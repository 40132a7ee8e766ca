"""The Pretext explorer's preview of any registered pretext that brings no preview of its own (pure numpy, runs in
the worker): the corrupted scan and the boxes the task's overlay names (Models Genesis: its painting boxes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_ssl._napari.explorer_compute import Preview, PreviewRequest, _foreground, paint_boxes

__all__ = ["boxes_preview"]


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
        image=np.asarray(image).astype(np.asarray(vol.array).dtype, copy=False),
        boxes=boxes,
        box_values=values,
        box_text=[str(v) for v in values],
        box_width=np.full(n, 1.5),
        box_alpha=np.ones(n),
        labels=paint_boxes(vol.spatial_shape, boxes, values),
        focus=(boxes[0, 0] + boxes[0, 1] - 1) / 2.0 if n else None,
        foreground=where,
        summary=summary + (f". Placed on the body ({where})" if where and n else ""),
    )
