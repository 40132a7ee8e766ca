"""How the Pretext explorer shows context restoration, in plain data (numpy; neither napari nor Qt): the scan after
the first ``step`` swaps with the swapped pairs outlined in pair colours (run in the explorer's worker), and the
params the step slider shows, on which the network answers (its answer is the restoration view,
:mod:`napari_ssl.pretext._restoration`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from napari_ssl.pretext._explore import DIMMED_ALPHA, Preview, PreviewRequest, foreground, paint_boxes

__all__ = ["context_preview", "context_step_params"]


def context_preview(req: PreviewRequest, task: Any, rng: np.random.Generator) -> Preview:
    """Context restoration: the scan after the first ``step`` swaps, the swapped pairs outlined in pair colours."""
    vol = req.volume
    assert vol is not None
    mask, where = foreground(req)
    params = task.sample(vol.spatial_shape, rng, vol.spacing, foreground=mask)
    overlay = task.overlay(params)
    n_pairs = len(params.pairs)
    step = n_pairs if req.step is None else int(np.clip(req.step, 0, n_pairs))
    shown = params if step == n_pairs else replace(params, pairs=params.pairs[:step])
    image = task.apply(vol.array, shown)
    pair_boxes = np.asarray(overlay["boxes"], dtype=int).reshape(-1, 2, 2, 3)[:step]
    boxes = pair_boxes.reshape(-1, 2, 3)
    values = np.repeat(np.arange(step) + 1, 2)
    text = [f"{t + 1}{ab}" for t in range(step) for ab in ("a", "b")]
    current = values == step
    focus, where_now = None, ""
    if step:
        lo, hi = pair_boxes[step - 1, 0]
        focus = (lo + hi - 1) / 2.0
        za, zb = (int(b[0, 0] + b[1, 0] - 1) // 2 for b in pair_boxes[step - 1])
        where_now = f" ({step}a around slice {za}, {step}b around slice {zb})"
    on_body = ""
    if mask is not None and step:
        inside = [mask[tuple(slice(a, b) for a, b in zip(*box, strict=True))].mean() >= 0.5 for box in boxes]
        on_body = f"; {int(np.sum(inside))} of {len(boxes)} patches on the body ({where})"
    return Preview(
        request=req,
        task=task,
        params=params,
        overlay=overlay,
        image=image,
        boxes=boxes,
        box_values=values,
        box_text=text,
        box_width=np.where(current, 2.5, 1.0),
        box_alpha=np.where(current, 1.0, DIMMED_ALPHA),
        labels=paint_boxes(vol.spatial_shape, boxes, values),
        focus=focus,
        foreground=where,
        summary=(
            f"swap {step} of {n_pairs}{where_now}, bright; earlier swaps faint. "
            f"Patches of {tuple(params.patch)} voxels"
            f"{on_body}. Boxes 'ta' and 'tb' (same colour) traded places at swap t"
        ),
    )


def context_step_params(params: Any, step: int | None) -> Any:
    """The context params after the first ``step`` swaps (``None``: all), as the explorer shows them."""
    n = len(params.pairs)
    step = n if step is None else int(np.clip(step, 0, n))
    return params if step == n else replace(params, pairs=params.pairs[:step])
