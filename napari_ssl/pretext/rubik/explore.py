"""How the Pretext explorer shows Rubik's cube, in plain data (numpy; neither napari nor Qt): the preview (the
shuffled or restored scan, every cube outlined and labelled with where it came from; run in the explorer's worker)
and the network's answer (each cube outlined by whether its place and turn were predicted right; the canvas lines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.pretext._explore import (
    SEP,
    TRANSPARENT,
    Preview,
    PreviewRequest,
    box_path,
    contour_width,
    dim_outside,
    direct_colormap,
    foreground,
    line_width,
    paint_boxes,
    placement,
)

__all__ = ["CUBE_COLOURS", "GREEN", "ORANGE", "RED", "cube_values", "rubik_preview", "rubik_specs", "rubik_text"]

GREEN = np.array([0.2, 0.9, 0.3, 1.0])
ORANGE = np.array([1.0, 0.65, 0.0, 1.0])
RED = np.array([1.0, 0.2, 0.2, 1.0])
CUBE_COLOURS = {1: GREEN, 2: ORANGE, 3: RED}


def rubik_preview(req: PreviewRequest, task: Any, rng: np.random.Generator) -> Preview:
    """Rubik's cube: the shuffled (or restored) scan, every cube outlined and labelled with where it came from."""
    vol = req.volume
    assert vol is not None
    mask, where = foreground(req)
    params = task.sample(vol.spatial_shape, rng, vol.spacing, foreground=mask)
    overlay = task.overlay(params)
    shuffled = task.apply(vol.array, params)
    image = task.invert(shuffled, params) if req.restore else shuffled
    boxes = np.asarray(overlay["boxes"], dtype=int)
    n = len(boxes)
    rotations = np.asarray(overlay["rotations"], dtype=bool).reshape(n, -1)
    source = np.asarray(overlay["source"], dtype=int)
    text = []
    for i in range(n):
        rot = "+".join(ax for ax, on in zip(("x", "y"), rotations[i], strict=False) if on)
        text.append(f"{source[i]}→{i}" + (f" ↻{rot}" if rot else ""))
    if req.restore:  # every cube back home: outline the source cells with their own number
        boxes = np.asarray(overlay["source_boxes"], dtype=int)
        text = [f"{source[i]}" for i in range(n)]
    values = (source if req.restore else np.arange(n)) + 1
    labels = paint_boxes(vol.spatial_shape, boxes, values)
    return Preview(
        request=req,
        task=task,
        params=params,
        overlay=overlay,
        boxes=boxes,
        box_values=values,
        box_text=text,
        box_width=np.full(n, 1.0),
        box_alpha=np.ones(n),
        labels=labels,
        image=dim_outside(image, boxes, req.contrast),
        focus=(boxes[0, 0] + boxes[0, 1] - 1) / 2.0,  # a slice through the cubes, not through a gap
        foreground=where,
        summary=(
            f"permutation {overlay['permutation_index']} of {task.n_permutations}; "
            f"{int(rotations.any(axis=1).sum())} of {n} cubes rotated"
            + (" (restored view)" if req.restore else "")
            + ". Label 'a→b ↻x': the cube of cell a now sits in cell b, turned 180° about x. "
            "Voxels outside the cubes are dimmed: the network never sees them"
            + (f". Grid on the body ({where})" if where else "")
        ),
    )


def cube_values(result: Any) -> np.ndarray:
    """Label value of each cube: 1 (green) when both its place and its turn were predicted right, 2 (orange)
    when one of them was, 3 (red) when neither."""
    right = np.asarray(result.result["position_right"], int) + np.asarray(result.result["rotation_right"], int)
    return 3 - right


def rubik_specs(viewer: Any, result: Any, source_layer: Any) -> list[tuple]:
    """Every cube of the preview outlined green (place and turn right), orange (one of them) or red (neither):
    wireframes in 3D, contours in 2D."""
    preview = result.preview
    source = preview.request.source
    place = placement(source_layer)
    shape = tuple(preview.request.volume.spatial_shape)
    boxes = np.asarray(preview.boxes, dtype=int)
    values = cube_values(result)
    colours = np.array([CUBE_COLOURS[int(v)] for v in values]).reshape(-1, 4)
    top = np.asarray(shape, dtype=float) - 1
    paths = [np.clip(box_path(lo, hi), 0.0, top) for lo, hi in boxes]
    ndisplay = viewer.dims.ndisplay
    cmap = direct_colormap({None: TRANSPARENT, 0: TRANSPARENT, **CUBE_COLOURS})
    return [
        (f"{source}{SEP}network cubes", "shapes", paths,
         {**place, "shape_type": "path", "edge_color": colours, "edge_width": 2.5 * line_width(shape),
          "face_color": "transparent", "opacity": 1.0, "visible": ndisplay == 3}, "cubes"),
        (f"{source}{SEP}network cells", "labels", paint_boxes(shape, boxes, values).astype(np.uint8),
         {**place, "colormap": cmap, "opacity": 1.0, "visible": ndisplay == 2,
          "contour": 2 * contour_width(shape)}, "cells"),
    ]


def rubik_text(result: Any, label: str) -> str:
    """Canvas lines of a Rubik's cube answer: the permutations and the cells it got wrong."""
    r = result.result
    wrong_place = [str(i) for i in np.flatnonzero(~r["position_right"])]
    wrong_turn = [str(i) for i in np.flatnonzero(~r["rotation_right"])]
    return (
        f"Network {Path(result.path).name}: {label}\n"
        f"permutation predicted {r['perm_pred']} (p {r['perm_prob']:.2f}), true {r['perm_true']} "
        f"(p {r['perm_prob_true']:.2f})\n"
        "green: place and turn right, orange: one of them, red: neither\n"
        f"wrong place: cells {', '.join(wrong_place) or 'none'}; wrong turn: {', '.join(wrong_turn) or 'none'}"
    )
