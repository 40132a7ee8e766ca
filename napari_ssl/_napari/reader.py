"""npe2 reader: NIfTI, NRRD, MHA/MHD, DICOM files and folders (one layer per series or file)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_ssl import io
from napari_ssl._napari.layers import volume_to_layer_data

LayerData = tuple[Any, dict[str, Any], str]
PathLike = str | os.PathLike[str]


def _claims(path: Path) -> bool:
    if path.is_dir():
        return io.is_dicom_dir(path) or any(
            io.scan_suffix(child) in io.READ_SUFFIXES or io.is_dicom_dir(child)
            for child in path.iterdir()
        )
    suffix = io.scan_suffix(path)
    if suffix in io.READ_SUFFIXES:
        return True
    return suffix == "" and io.is_dicom_file(path)


def napari_get_reader(path: PathLike | list[PathLike]) -> Callable[[Any], list[LayerData]] | None:
    """Return :func:`read_layers` when napari-ssl can open ``path``, else ``None`` (never raises)."""
    paths = path if isinstance(path, list) else [path]
    try:
        if not paths or not all(_claims(Path(p)) for p in paths):
            return None
    except OSError:
        return None
    return read_layers


def read_layers(path: PathLike | list[PathLike]) -> list[LayerData]:
    """Open each path as layers placed at their world position (mm).

    A folder gives one layer per scan or DICOM series inside it (BraTS modalities, cardiac views);
    mask files (``seg``, ``label``, ``mask`` in the name, integer voxels) open as Labels layers.
    A corrupt file raises :class:`napari_ssl.io.ScanReadError` naming the path and the reason.
    """
    paths = path if isinstance(path, list) else [path]
    layers: list[LayerData] = []
    for p in paths:
        volumes = io.read_all(p)
        names = [v.name for v in volumes]
        for volume in volumes:
            data, kwargs, layer_type = volume_to_layer_data(volume)
            if names.count(volume.name) > 1 and volume.path:
                kwargs["name"] = f"{Path(volume.path).parent.name}/{volume.name}"
            if layer_type == "image" and len(volumes) > 1:
                kwargs.setdefault("blending", "additive" if volume.is_plane else "translucent")
            layers.append((data, kwargs, layer_type))
    return layers
