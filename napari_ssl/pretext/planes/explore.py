"""How the Pretext explorer shows the imaging planes, in plain data (numpy and torch; neither napari nor Qt): the
preview (planes resampled from a volume, or the acquired views of a multi-view exam, with their heatmaps, lines and
slice positions; run in the explorer's worker) and the network's answer (a grid of its heatmaps under the grid of
targets, described with :func:`~napari_ssl.pretext._explore.mosaic_of` for the dock to render; the canvas lines).
The dock lays a preview's planes out as layers (:mod:`napari_ssl._napari.explorer.planes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.pretext._explore import SEP, PlaneView, Preview, PreviewRequest, foreground, mosaic_of

__all__ = ["network_planes", "planes_preview", "planes_specs", "planes_text"]


def _native_images(views: tuple[Any, ...]) -> list[np.ndarray]:
    """The 2D image of every plane from_images() makes of ``views``, in the same order."""
    images = []
    for vol in views:
        array = np.asarray(vol.array)
        while array.ndim > 3:  # a cine without a chosen frame: its first frame
            array = array[0]
        images.extend(np.asarray(array[z], dtype=np.float32) for z in range(array.shape[0]))
    return images


def planes_preview(req: PreviewRequest, task: Any, rng: np.random.Generator) -> Preview:
    """Sample (or read) the planes, resample them, and compute heatmaps, lines and slice positions."""
    if req.volume is not None:
        mask, _ = foreground(req)
        params = task.sample(req.volume, rng, foreground=mask)
        images = list(task.apply(np.asarray(req.volume.array, dtype=np.float32), params))
        world = False
    else:
        params = type(task).from_images(list(req.views))
        images = _native_images(req.views)
        world = True
    overlay = task.overlay(params)
    targets = task.targets(params)
    heat = targets["heatmaps"]
    has_line = np.asarray(targets["has_line"])
    positions = np.asarray(targets["slice_position"])
    in_stack = np.asarray(targets["in_stack"])
    n = params.n_planes
    planes: list[PlaneView] = []
    for k in range(n):
        others = [j for j in range(n) if has_line[k, j]]
        planes.append(
            PlaneView(
                name=params.names[k],
                image=np.asarray(images[k]),
                corners=np.asarray(overlay["planes"][k]["corners_world"]),
                heatmaps=np.asarray(heat[k])[others] if others else None,
                heat_index=others,
                slice_position=float(positions[k]) if in_stack[k] else None,
                stack=None if params.stack[k] < 0 else f"stack {params.stack[k]}",
            )
        )
    segments, pairs = [], []
    for line in overlay["lines"]:
        if line["segment_world"] is None:
            continue
        i, j = line["i"], line["j"]
        segments.append(np.asarray(line["segment_world"]))
        pairs.append((i, j))
        planes[i].lines.append((j, *np.asarray(line["pixels_i"])))
        planes[j].lines.append((i, *np.asarray(line["pixels_j"])))
    n_stack = int(in_stack.sum())
    summary = (
        f"{n} planes ({n_stack} in stacks, {n - n_stack} single views); {len(segments)} intersection lines"
        f" inside both images; heatmap sigma {task.sigma:g} mm"
    )
    return Preview(
        request=req,
        task=task,
        params=params,
        overlay=overlay,
        planes=planes,
        segments=np.asarray(segments, dtype=float).reshape(-1, 2, 3),
        segment_pairs=pairs,
        world=world,
        summary=summary,
    )


def network_planes(result: Any) -> list[PlaneView]:
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


def planes_specs(viewer: Any, result: Any, source_layer: Any) -> list[tuple]:
    """In 2D, a grid of the planes with the network's heatmaps under the explorer's grid of targets."""
    if viewer.dims.ndisplay != 2:
        return []
    source = result.preview.request.source
    name = f"{source}{SEP}planes grid"
    if name in viewer.layers:
        grid = viewer.layers[name]
        scale = np.array(grid.scale[-2:], dtype=float)  # copies: never write into the layer's own arrays
        translate = np.array(grid.translate[-2:], dtype=float)
        translate[0] += grid.data.shape[0] * scale[0] * 1.03  # just under the explorer's grid
    else:
        scale, translate = np.ones(2), np.zeros(2)
    kwargs = {"rgb": True, "scale": tuple(scale), "translate": tuple(translate), "blending": "translucent"}
    return [(f"{source}{SEP}network grid", "image", mosaic_of(network_planes(result)), kwargs, "grid")]


def planes_text(result: Any, label: str) -> str:
    """Canvas lines of an imaging-planes answer: the errors and what each grid shows."""
    r = result.result
    mae = r["position_mae"]
    return (
        f"Network {Path(result.path).name}: {label}\n"
        f"line angle error {r['angle_error_deg']:.1f}° ({int(r['has_line'].sum())} lines)"
        + (f"\nslice position error {mae:.2f}" if np.isfinite(mae) else "")
        + "\nupper grid: targets\nlower grid: the network (heatmaps\nscaled to their peak; true lines)"
    )
