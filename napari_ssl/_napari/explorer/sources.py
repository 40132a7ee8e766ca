"""Which layers the explorer can preview on, and their volumes: bad selections become words, not tracebacks."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_ssl._napari.explorer.overlays import META
from napari_ssl._napari.layers import layer_to_volume
from napari_ssl._napari.proxy import kind
from napari_ssl.io.volume import Volume
from napari_ssl.pretext._explore import PreviewRequest

__all__ = [
    "SourceError",
    "current_frame",
    "displayed_extent",
    "go_to",
    "is_view_layer",
    "sliced_axis",
    "source_names",
    "source_request",
    "source_volume",
    "view_volumes",
]


class SourceError(ValueError):
    """A layer the explorer cannot preview on; the message says why in words."""


def is_view_layer(layer: Any) -> bool:
    """True for a grey-level Image layer of acquired 2D planes: ``(1, H, W)``, a thin stack or a cine."""
    if layer.__class__.__name__ != "Image" or getattr(layer, "rgb", False) or layer.ndim < 3:
        return False
    if META in layer.metadata:
        return False
    z = layer.data.shape[-3]
    return z == 1 or (z <= 32 and z * 4 <= min(layer.data.shape[-2:]))


def current_frame(viewer: Any, layer: Any) -> Volume:
    """A layer's 3D volume; for a 4D+ layer (cine, time series) the frame at the viewer's current position."""
    volume = layer_to_volume(layer)
    lead = layer.ndim - 3
    if lead <= 0:
        return volume
    step = layer.world_to_data(viewer.dims.point)[:lead]
    index = tuple(
        int(np.clip(round(s), 0, n - 1)) for s, n in zip(step, layer.data.shape[:lead], strict=True)
    )
    return volume.with_array(np.asarray(volume.array[index]))


def source_volume(viewer: Any, name: str, planes_hint: bool = False) -> Volume:
    """The current 3D volume of layer ``name``, or a :class:`SourceError` saying why it cannot be used."""
    if not name or name not in viewer.layers:
        raise SourceError("no scan selected: open a 3D scan (File > Open) and pick it under 'scan'")
    layer = viewer.layers[name]
    kind = layer.__class__.__name__
    if kind == "Labels":
        raise SourceError(f"'{name}' is a Labels layer (a mask); pick the Image layer of the scan")
    if kind != "Image":
        raise SourceError(f"'{name}' is a {kind} layer; pick an Image layer holding a 3D scan")
    if getattr(layer, "rgb", False):
        raise SourceError(f"'{name}' is an RGB image; the pretexts need a grey-level scan")
    if layer.ndim < 3 or layer.data.shape[-3] == 1:
        shape = tuple(layer.data.shape)
        hint = " For acquired views choose 'All views'." if planes_hint else ""
        raise SourceError(f"'{name}' is a 2D image {shape}; this pretext needs a 3D volume (z, y, x).{hint}")
    if layer.multiscale:
        raise SourceError(f"'{name}' is multiscale; the explorer previews single-resolution scans only")
    return current_frame(viewer, layer)


def source_request(viewer: Any, name: str | None, planes: bool, common: dict[str, Any]) -> PreviewRequest:
    """The preview request on layer ``name`` (None: every acquired view, for imaging planes) with the controls'
    ``common`` fields; a :class:`SourceError` for a selection the pretext cannot use."""
    if name is None:
        if not planes:
            raise SourceError("'All views' is for imaging planes; pick one 3D scan for this pretext")
        views = view_volumes(viewer)
        if len(views) < 2:
            raise SourceError(f"native multi-view needs at least 2 visible plane layers, found {len(views)}")
        return PreviewRequest(views=tuple(views), source="views", **common)
    volume = source_volume(viewer, name, planes_hint=planes)
    limits = getattr(viewer.layers[name], "contrast_limits", None)
    contrast = (float(limits[0]), float(limits[1])) if limits is not None else None
    return PreviewRequest(volume=volume, source=name, contrast=contrast, **common)


def view_volumes(viewer: Any) -> list[Volume]:
    """Every visible acquired view (plane, stack or cine frame) in the viewer, in layer order."""
    return [current_frame(viewer, layer) for layer in viewer.layers if is_view_layer(layer) and layer.visible]


def is_scan(layer: Any) -> bool:
    """A grey-level 3D (or 3D + time) Image layer: a sensible default source."""
    return (
        kind(layer) == "Image"
        and not getattr(layer, "rgb", False)
        and layer.ndim >= 3
        and layer.data.shape[-3] > 1
    )


def source_names(viewer: Any, planes: bool, all_views: str) -> tuple[list[str], str | None]:
    """The source list (every layer not ours; ``all_views`` first for planes with >= 2 acquired views) and
    the default pick: the active layer when it is a 3D scan, else the first 3D scan."""
    names = [layer.name for layer in viewer.layers if META not in layer.metadata]
    if planes and sum(is_view_layer(lay) for lay in viewer.layers) >= 2:
        names = [all_views, *names]
    active = viewer.layers.selection.active
    scans = [lay.name for lay in viewer.layers if lay.name in names and is_scan(lay)]
    if active is not None and active.name in scans:
        return names, active.name
    return names, scans[0] if scans else None


# ------------------------------------------------------------------------------- where the view looks
def sliced_axis(viewer: Any) -> int:
    """The spatial axis (0..2 of the last three) the 2D view slices along."""
    dims = viewer.dims
    first = dims.ndim - 3
    hidden = [a - first for a in dims.order[first:] if a not in dims.displayed]
    return hidden[0] if hidden else 0


def go_to(viewer: Any, layer: Any, voxel: Any) -> None:
    """Move the view to ``voxel`` ``(z, y, x)`` of ``layer``: the slice through it, the camera centred on it."""
    lead = layer.ndim - 3
    world = np.asarray(layer.data_to_world(np.concatenate([np.zeros(lead), np.asarray(voxel, float)])))
    dims = viewer.dims
    offset = dims.ndim - layer.ndim
    for axis in range(dims.ndim - 3, dims.ndim):
        if axis not in dims.displayed:
            dims.set_point(axis, world[axis - offset])
    viewer.camera.center = tuple(world[a - offset] for a in dims.displayed)


def displayed_extent(viewer: Any, source_layer: Any) -> np.ndarray | None:
    """World ``(lo, hi)`` of the last two axes of the source (or of every layer not ours)."""
    layers = [source_layer] if source_layer is not None else list(viewer.layers)
    boxes = [lay.extent.world for lay in layers if META not in lay.metadata and lay.ndim >= 2]
    if not boxes:
        return None
    return np.stack([np.min([b[0][-2:] for b in boxes], axis=0), np.max([b[1][-2:] for b in boxes], axis=0)])
