"""Imaging planes in the explorer: planes resampled from a volume, or the acquired views of a multi-view exam.

The preview (:func:`napari_ssl.pretext.planes.explore.planes_preview`, worker thread) samples the planes, resamples
them and computes the targets; :func:`plane_layer_specs` (GUI thread) lays out any preview of planes
(``ExplorerSpec.planes``) as layers in **world mm**: each plane an Image
layer ``(1, H, W)`` whose affine puts pixel ``(r, c)`` at its true position, the plane outlines and the
intersection lines as Shapes, and the plane names / slice positions as Points text. In native multi-view mode
the views already are layers, so only the outlines, lines and text are added.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_ssl._napari.explorer.overlays import text_kwargs
from napari_ssl.pretext._explore import PlaneView, Preview, colour

__all__ = [
    "FAINT",
    "FAINT_PLANE",
    "LINE_WIDTH",
    "SELECTED_WIDTH",
    "plane_affine",
    "plane_layer_specs",
]

#: 3D view: outline and line widths as fractions of the scene size (thin: eleven planes must not be a tangle)
LINE_WIDTH = 0.0015
SELECTED_WIDTH = 0.004
#: alpha of the outlines and lines of the planes not selected, opacity of their images
FAINT = 0.18
FAINT_PLANE = 0.25


def plane_affine(params: Any, k: int, thickness: float = 1.0) -> np.ndarray:
    """4x4 matrix from a ``(1, H, W)`` plane layer's data index ``(0, r, c)`` to world mm.

    ``thickness`` (mm) is the size of the layer's single slice along the plane normal: napari takes the
    viewer's slider step from it, so it follows the source's voxel size along that normal.
    """
    a = params.arrays()
    out = np.eye(4)
    out[:3, 0] = a["normal"][k] * thickness
    out[:3, 1] = a["row"][k] * a["spacing"][k, 0]
    out[:3, 2] = a["col"][k] * a["spacing"][k, 1]
    out[:3, 3] = a["origin"][k]
    return out


def plane_layer_specs(
    preview: Preview,
    base: str,
    source_layer: Any,
    ndisplay: int,
    focus: int | None = None,
    beside: np.ndarray | None = None,
) -> list[tuple]:
    """``(name, layer_type, data, kwargs, role)`` of every layer a planes preview draws.

    In 3D: each plane an Image layer at its world position (mm), the outlines (the ``focus`` plane's wider),
    the intersection lines, and the ``focus`` plane's name and slice position. In 2D an oblique plane has no
    sensible slice, so instead one RGB layer ``<base> grid`` shows every plane as a tile with its heatmaps and
    lines (:func:`~napari_ssl._napari.explorer.gallery.mosaic`), placed to the right of ``beside`` (the world
    ``(lo, hi)`` of the displayed axes) and as tall as it: the 3D layers are left out, so that they neither
    clutter the slice nor stretch the slice slider.
    """
    if ndisplay == 2:
        return [_grid_spec(preview, base, focus, beside)]
    params = preview.params
    n = len(preview.planes)
    chosen = np.arange(n) == focus
    specs: list[tuple] = []
    if not preview.world:
        limits = tuple(source_layer.contrast_limits) if source_layer is not None else None
        for k, plane in enumerate(preview.planes):
            kwargs: dict[str, Any] = {
                "affine": plane_affine(params, k, _thickness(preview, k)),
                "colormap": "gray",
                "blending": "translucent",
                "rendering": "mip",
                "opacity": 1.0 if chosen[k] else FAINT_PLANE,  # the others a faint context
            }
            if limits is not None:
                kwargs["contrast_limits"] = limits
            specs.append((f"{base} {plane.name}", "image", plane.image[None], kwargs, "plane"))
    outlines = [np.vstack([p.corners, p.corners[:1]]) for p in preview.planes]
    scale_mm = _scene_size(preview)
    edge = np.array([colour(k) for k in range(n)]).reshape(-1, 4)
    edge[:, 3] = np.where(chosen, 1.0, FAINT)
    specs.append(
        (
            f"{base} outlines",
            "shapes",
            outlines,
            {
                "shape_type": "path",
                "edge_color": edge,
                "edge_width": np.where(chosen, SELECTED_WIDTH, LINE_WIDTH) * scale_mm,
                "face_color": "transparent",
            },
            "outlines",
        )
    )
    # where the selected plane is cut: bright yellow; the other planes' intersection lines faint
    mine = np.array([focus in pair for pair in preview.segment_pairs], dtype=bool)
    line_colours = np.tile([1.0, 1.0, 0.0, 1.0], (len(mine), 1))
    line_colours[:, 3] = np.where(mine, 1.0, FAINT)
    specs.append(
        (
            f"{base} lines",
            "shapes",
            list(preview.segments),
            {
                "shape_type": "line",
                "edge_color": line_colours if len(mine) else "yellow",
                "edge_width": np.where(mine, SELECTED_WIDTH, LINE_WIDTH) * scale_mm,
                "face_color": "transparent",
            },
            "lines",
        )
    )
    # one label, the selected plane's: eleven names at once overlap into an unreadable heap
    shown = [k for k in range(len(preview.planes)) if k == focus]
    # towards the plane's first corner, off the dense middle of the scene, but inside the plane (in view)
    centres = np.array([_near_corner(preview.planes[k].corners) for k in shown]).reshape(-1, 3)
    labels = [_label(preview.planes[k]) for k in shown]
    rgba = np.array([0.45 + 0.55 * colour(k) for k in shown]).reshape(-1, 4)
    sizes = [0.3 * float(np.ptp(preview.planes[k].corners, axis=0).max()) for k in shown]
    specs.append((f"{base} text", "points", centres, text_kwargs(labels, rgba, sizes), "plane text"))
    return specs


def _label(plane: PlaneView) -> str:
    return plane.name + (f"  pos {plane.slice_position:.2f}" if plane.slice_position is not None else "")


def _grid_spec(preview: Preview, base: str, focus: int | None, beside: np.ndarray | None) -> tuple:
    from napari_ssl._napari.explorer.gallery import mosaic

    rgb = mosaic(preview.planes, focus)
    lo, hi = (np.zeros(2), np.asarray(rgb.shape[:2], float)) if beside is None else np.asarray(beside)
    # about half the scan's height a row of tiles, so that the names stay legible when both fit the canvas
    height = (float(hi[0] - lo[0]) or float(rgb.shape[0])) * max(1.0, 0.5 * _rows(preview))
    scale = height / rgb.shape[0]
    kwargs = {
        "rgb": True,
        "scale": (scale, scale),
        "translate": (float(lo[0]), float(hi[1]) + 0.05 * height),
        "blending": "translucent",
    }
    return (f"{base} grid", "image", rgb, kwargs, "grid")


def _thickness(preview: Preview, k: int) -> float:
    """The source's voxel size along plane ``k``'s normal (mm), so slider steps stay the source's."""
    vol = preview.request.volume
    if vol is None:
        return 1.0
    normal = preview.params.arrays()["normal"][k]
    along = np.abs(np.asarray(vol.direction).T @ normal)  # the normal in the source's voxel axes
    return float(along @ np.asarray(vol.spacing) / max(along.sum(), 1e-9))


def _scene_size(preview: Preview) -> float:
    pts = np.concatenate([p.corners for p in preview.planes]) if preview.planes else np.zeros((1, 3))
    return float(np.ptp(pts, axis=0).max()) if len(pts) else 1.0


def _rows(preview: Preview) -> int:
    from napari_ssl._napari.explorer.gallery import grid_shape

    return grid_shape(len(preview.planes))[0]


def _near_corner(corners: np.ndarray, fraction: float = 0.7) -> np.ndarray:
    """The point ``fraction`` of the way from a plane's centre to its first corner."""
    centre = corners.mean(axis=0)
    return centre + fraction * (corners[0] - centre)
