"""2D <-> 3D for the explorer's previews, and where the 2D view looks afterwards.

Boxes are wireframes in 3D and contours with per-slice text in 2D (:func:`show_boxes`). Planes are layers at
their world positions in 3D and one grid of tiles beside the scan in 2D (redrawn by the dock); two things then
need care in 2D:

- the grid is drawn beside the scan, outside the view framed on the scan: :func:`frame` fits the view to it;
- the 3D plane layers stretch the slice range (oblique planes reach beyond the scan), and when they go on return
  to 2D the range shrinks under napari's slice slider, which keeps its old step index and clamps it to the new
  last step: the slice jumped to the last one, often outside the head (a black canvas). :func:`restore_slice`
  puts back the 2D slice the user left (issue 21).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_ssl._napari.explorer.overlays import META, contour_width, explorer_layers, set_text, text_points
from napari_ssl._napari.explorer.sources import sliced_axis
from napari_ssl.pretext._explore import Preview

__all__ = ["frame", "restore_slice", "show_boxes"]


def show_boxes(viewer: Any, preview: Preview) -> None:
    """Boxes as wireframes in 3D, as contours with per-slice text in 2D (nothing recomputed)."""
    ndisplay = viewer.dims.ndisplay
    for layer in explorer_layers(viewer):
        role = layer.metadata[META].get("role")
        if role == "boxes":
            layer.visible = ndisplay == 3
        elif role == "cells":
            layer.visible = ndisplay == 2
            if ndisplay == 2:
                layer.contour = contour_width(layer.data.shape)
        elif role == "text" and layer.metadata[META].get("source") == preview.request.source:
            set_text(layer, *text_points(preview, ndisplay, sliced_axis(viewer)))


def restore_slice(viewer: Any, point: Sequence[float] | None) -> list[int]:
    """Put every sliced (not displayed) axis back at ``point`` (if any) where that lies inside the current range;
    returns the axes moved."""
    dims = viewer.dims
    moved: list[int] = []
    if point is None:
        return moved
    for axis in range(dims.ndim):
        if axis in dims.displayed or axis >= len(point):
            continue
        lo, hi, _ = dims.range[axis]
        value = float(point[axis])
        if lo <= value <= hi and not np.isclose(dims.point[axis], value):
            dims.set_point(axis, value)
            moved.append(axis)
    return moved


def frame(viewer: Any) -> None:
    """Fit the 2D view to every layer: the scan and the grid of planes beside it both on the canvas."""
    viewer.fit_to_view()
