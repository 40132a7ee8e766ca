"""npe2 writers: Image and Labels layers to NIfTI / NRRD / MHA with the layer's world geometry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl import io
from napari_ssl._napari.layers import volume_from_layer_data
from napari_ssl.io.volume import Volume


def _volume(data: Any, meta: dict[str, Any]) -> Volume:
    return volume_from_layer_data(
        np.asarray(data),
        scale=meta.get("scale"),
        translate=meta.get("translate"),
        affine=meta.get("affine"),
        name=meta.get("name"),
        metadata=meta.get("metadata") or {},
    )


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Image layer (3D) atomically, keeping spacing, origin and direction."""
    if meta.get("rgb"):
        raise io.ScanWriteError(path, "RGB layers cannot be written as scans")
    return [str(io.write(_volume(data, meta), path))]


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer (3D) atomically as integer ids, keeping the layer's geometry."""
    return [str(_write_ids(_volume(data, meta), path))]


def write_labels_layer(layer: Any, path: str | Path) -> Path:
    """Write a Labels layer object (the Segment dock's masks) like :func:`write_labels`; returns the path."""
    from napari_ssl._napari.layers import layer_to_volume

    return _write_ids(layer_to_volume(layer), path)


def _write_ids(volume: Volume, path: str | Path) -> Path:
    array = np.asarray(volume.array)
    fits_uint16 = array.size == 0 or (array.min() >= 0 and array.max() <= np.iinfo(np.uint16).max)
    narrow = array.dtype.kind in "iu" and array.dtype.itemsize <= 2
    if not narrow and fits_uint16:  # napari labels are often int64/int32; keep files small and portable
        array = array.astype(np.uint16)
    return io.write(volume.with_array(array), path)
