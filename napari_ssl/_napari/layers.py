"""Volume <-> napari layers: geometry in, geometry out.

A layer built here sits at its true world position in mm (patient coordinates, see
:mod:`napari_ssl.volume`), so scans, single-slice views and overlays from different series line up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from napari_ssl.volume import Volume

if TYPE_CHECKING:
    import napari

__all__ = ["LABEL_HINTS", "guess_layer_type", "layer_to_volume", "volume_to_layer_data"]

#: file-name fragments that mark a label volume (segmentation masks)
LABEL_HINTS = ("seg", "label", "mask", "gm.", "wm.")


def guess_layer_type(volume: Volume) -> str:
    """``"labels"`` for an integer volume whose name says it is a mask, else ``"image"``."""
    name = (volume.name or "").lower() + (volume.path or "").lower().rsplit("/", 1)[-1]
    if volume.array.dtype.kind in "biu" and any(h.rstrip(".") in name for h in LABEL_HINTS[:3]):
        return "labels"
    return "image"


def volume_to_layer_data(
    volume: Volume, layer_type: str | None = None, **extra: Any
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari ``LayerDataTuple`` for ``volume`` placed in world mm.

    Parameters
    ----------
    volume : Volume
        The scan.
    layer_type : {"image", "labels"}, optional
        Guessed from dtype and name when omitted.
    **extra
        More layer keyword arguments (colormap, opacity, ...).
    """
    layer_type = layer_type or guess_layer_type(volume)
    kwargs = volume.layer_kwargs()
    data = volume.array
    if layer_type == "labels":
        if data.dtype.kind == "f" or data.dtype == np.bool_:
            data = data.astype(np.uint16 if data.size and data.max() > 255 else np.uint8)
        elif data.dtype.kind == "i" and data.size and data.min() < 0:
            raise ValueError(f"{volume.name or 'labels'}: label volumes cannot hold negative ids")
    else:
        kwargs.setdefault("colormap", "gray")
        if data.size:
            lo, hi = _contrast(data)
            if hi > lo:
                kwargs["contrast_limits"] = (lo, hi)
    if volume.array.ndim == 4:
        kwargs["axis_labels"] = ("t", "z", "y", "x")
    kwargs.update(extra)
    return data, kwargs, layer_type


def _contrast(data: np.ndarray) -> tuple[float, float]:
    sample = data[tuple(slice(None, None, max(1, s // 64)) for s in data.shape)]
    lo, hi = np.percentile(sample, (0.5, 99.5))
    return float(lo), float(hi)


def layer_to_volume(layer: napari.layers.Layer) -> Volume:
    """The :class:`Volume` a layer shows: its data with the world geometry of its transform."""
    return Volume.from_layer_data(
        np.asarray(layer.data),
        scale=layer.scale,
        translate=layer.translate,
        affine=layer.affine.affine_matrix,
        name=layer.name,
        metadata=dict(layer.metadata),
    )
