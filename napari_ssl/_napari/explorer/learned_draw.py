"""Layers of the network's answer (GUI thread): ``(name, layer_type, data, kwargs, role)`` per pretext, and the
canvas text. Each pretext's registry record names its functions here (``AnswerSpec.draw`` / ``.canvas``);
:func:`answer_layers` and :func:`canvas_text` call them. See :mod:`~napari_ssl._napari.explorer.learned`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl._napari.explorer.compute import PlaneView, box_path, paint_boxes
from napari_ssl._napari.explorer.learned_compute import LearnedAnswer
from napari_ssl._napari.explorer.overlays import SEP, contour_width, line_width, placement

__all__ = [
    "CUBE_COLOURS",
    "GAP",
    "GREEN",
    "ORANGE",
    "RED",
    "answer_layers",
    "canvas_text",
    "panel_offset",
    "planes_specs",
    "planes_text",
    "restoration_specs",
    "restoration_text",
    "rubik_specs",
    "rubik_text",
]

GREEN = np.array([0.2, 0.9, 0.3, 1.0])
ORANGE = np.array([1.0, 0.65, 0.0, 1.0])
RED = np.array([1.0, 0.2, 0.2, 1.0])
CUBE_COLOURS = {1: GREEN, 2: ORANGE, 3: RED}
TRANSPARENT = np.zeros(4)
#: space between side-by-side panels, as a fraction of the scan's width
GAP = 0.06


def _shift_axis(viewer: Any) -> int:
    """The scan axis (0..2) drawn left to right in the canvas: the last displayed one."""
    return int(viewer.dims.displayed[-1]) - (int(viewer.dims.ndim) - 3)


def panel_offset(viewer: Any, source_layer: Any) -> np.ndarray:
    """World shift (3,) from one side-by-side panel to the next: the scan's width plus a gap, left to right."""
    axis = _shift_axis(viewer)
    ext = np.asarray(source_layer.extent.world, dtype=float)[:, -3:]
    width = float(ext[1, axis] - ext[0, axis]) + float(np.abs(source_layer.scale[-3:][axis]))
    out = np.zeros(3)
    out[axis] = width * (1 + GAP)
    return out


def _shifted(place: dict[str, Any], offset: np.ndarray) -> dict[str, Any]:
    affine = np.array(place["affine"], dtype=float)
    affine[:3, 3] += offset  # a world translation applied after the layer's own transform
    return {**place, "affine": affine}


def restoration_specs(viewer: Any, result: LearnedAnswer, source_layer: Any) -> list[tuple]:
    """The restored volume one panel to the right of the scan (where the corrupted preview lies), the
    original one panel further."""
    source = result.preview.request.source
    place = placement(source_layer)
    step = panel_offset(viewer, source_layer)
    image_kw: dict[str, Any] = {"colormap": "gray", "blending": "translucent"}
    limits = getattr(source_layer, "contrast_limits", None)
    if limits is not None:
        image_kw["contrast_limits"] = tuple(limits)
    original = np.asarray(result.preview.request.volume.array)
    return [
        (f"{source}{SEP}network restored", "image", result.result["restored"],
         {**_shifted(place, step), **image_kw}, "restored"),
        (f"{source}{SEP}network original", "image", original, {**_shifted(place, 2 * step), **image_kw}, "original"),
    ]


def cube_values(result: LearnedAnswer) -> np.ndarray:
    """Label value of each cube: 1 (green) when both its place and its turn were predicted right, 2 (orange)
    when one of them was, 3 (red) when neither."""
    right = np.asarray(result.result["position_right"], int) + np.asarray(result.result["rotation_right"], int)
    return 3 - right


def rubik_specs(viewer: Any, result: LearnedAnswer, source_layer: Any) -> list[tuple]:
    """Every cube of the preview outlined green (place and turn right), orange (one of them) or red (neither):
    wireframes in 3D, contours in 2D."""
    from napari.utils.colormaps import DirectLabelColormap

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
    cmap = DirectLabelColormap(color_dict={None: TRANSPARENT, 0: TRANSPARENT, **CUBE_COLOURS})
    return [
        (f"{source}{SEP}network cubes", "shapes", paths,
         {**place, "shape_type": "path", "edge_color": colours, "edge_width": 2.5 * line_width(shape),
          "face_color": "transparent", "opacity": 1.0, "visible": ndisplay == 3}, "cubes"),
        (f"{source}{SEP}network cells", "labels", paint_boxes(shape, boxes, values).astype(np.uint8),
         {**place, "colormap": cmap, "opacity": 1.0, "visible": ndisplay == 2,
          "contour": 2 * contour_width(shape)}, "cells"),
    ]


def answer_planes(result: LearnedAnswer) -> list[PlaneView]:
    """The preview's planes with the network's heatmaps instead of the targets (each scaled to its own peak, so
    that a timid prediction still shows where it puts the line), the true lines kept, and the predicted slice
    position in the name."""
    r = result.result
    out = []
    for k, plane in enumerate(result.preview.planes):
        heat = None
        if plane.heat_index:
            heat = np.clip(r["heatmaps"][k][plane.heat_index], 0, None)
            heat = heat / np.maximum(heat.max(axis=(-2, -1), keepdims=True), 1e-6)
        name = plane.name + (f" · net {r['positions'][k]:.2f}" if r["in_stack"][k] else "")
        out.append(PlaneView(name=name, image=plane.image, corners=plane.corners, lines=list(plane.lines),
                             heatmaps=heat, heat_index=list(plane.heat_index)))
    return out


def planes_specs(viewer: Any, result: LearnedAnswer, source_layer: Any) -> list[tuple]:
    """In 2D, a grid of the planes with the network's heatmaps under the explorer's grid of targets."""
    from napari_ssl._napari.explorer.gallery import mosaic

    if viewer.dims.ndisplay != 2:
        return []
    source = result.preview.request.source
    rgb = mosaic(answer_planes(result), None)
    name = f"{source}{SEP}planes grid"
    if name in viewer.layers:
        grid = viewer.layers[name]
        scale = np.array(grid.scale[-2:], dtype=float)  # copies: never write into the layer's own arrays
        translate = np.array(grid.translate[-2:], dtype=float)
        translate[0] += grid.data.shape[0] * scale[0] * 1.03  # just under the explorer's grid
    else:
        scale, translate = np.ones(2), np.zeros(2)
    kwargs = {"rgb": True, "scale": tuple(scale), "translate": tuple(translate), "blending": "translucent"}
    return [(f"{source}{SEP}network grid", "image", rgb, kwargs, "grid")]


def restoration_text(result: LearnedAnswer, label: str) -> str:
    """Canvas lines of a restoration answer: the three panels and their PSNRs."""
    r = result.result
    return (
        f"Network {Path(result.path).name}: {label}. PSNR vs the original:\n"
        f"left, corrupted input: {r['psnr_input']:.1f} dB ({r['psnr_input_patches']:.1f} in the boxes)\n"
        f"middle, restored: {r['psnr']:.1f} dB ({r['psnr_patches']:.1f} in the boxes)\n"
        f"right: the original. Gain {r['psnr_gain']:+.1f} dB"
    )


def rubik_text(result: LearnedAnswer, label: str) -> str:
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


def planes_text(result: LearnedAnswer, label: str) -> str:
    """Canvas lines of an imaging-planes answer: the errors and what each grid shows."""
    r = result.result
    mae = r["position_mae"]
    return (
        f"Network {Path(result.path).name}: {label}\n"
        f"line angle error {r['angle_error_deg']:.1f}° ({int(r['has_line'].sum())} lines)"
        + (f"\nslice position error {mae:.2f}" if np.isfinite(mae) else "")
        + "\nupper grid: targets\nlower grid: the network (heatmaps\nscaled to their peak; true lines)"
    )


def _answer_spec(result: LearnedAnswer) -> tuple[Any, str]:
    from napari_ssl.pretext import registry
    from napari_ssl.study.answers import answer_spec

    return answer_spec(result.pretext), registry.get(result.pretext).label


def answer_layers(viewer: Any, result: LearnedAnswer, source_layer: Any) -> list[tuple]:
    """The layers of ``result`` (its pretext's ``AnswerSpec.draw``)."""
    from napari_ssl.pretext.registry import resolve

    spec, _ = _answer_spec(result)
    return list(resolve(spec.draw)(viewer, result, source_layer))


def canvas_text(result: LearnedAnswer) -> str:
    """The lines shown on the canvas (its pretext's ``AnswerSpec.canvas``): which checkpoint, what each panel /
    colour means, the numbers."""
    from napari_ssl.pretext.registry import resolve

    spec, label = _answer_spec(result)
    return str(resolve(spec.canvas)(result, label))
