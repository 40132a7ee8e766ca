"""npe2 reader: NIfTI, NRRD, MHA/MHD, DICOM files and folders (one layer per series or file)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl import io
from napari_ssl._napari.layers import volume_to_layer_data
from napari_ssl.volume import Volume

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
    all_volumes: list[Volume] = []
    for p in paths:
        volumes = io.read_all(p)
        all_volumes.extend(volumes)
        names = [v.name for v in volumes]
        for volume in volumes:
            data, kwargs, layer_type = volume_to_layer_data(volume)
            if names.count(volume.name) > 1 and volume.path:
                kwargs["name"] = f"{Path(volume.path).parent.name}/{volume.name}"
            if layer_type == "image" and len(volumes) > 1:
                kwargs.setdefault("blending", "translucent")
            layers.append((data, kwargs, layer_type))
    if any(_oblique_plane(v) for v in all_volumes):
        _show_in_3d()
    return layers


def _oblique_plane(volume: Volume) -> bool:
    """A single-slice view whose plane is not one of the viewer's axis planes (a cardiac view, say)."""
    d = np.abs(volume.direction)
    return volume.is_plane and not np.allclose(np.sort(d, axis=0)[-1], 1.0, atol=1e-3)


def _show_in_3d() -> None:
    """Oblique planes only have their true pose in 3D (napari's 2D view drops out-of-plane rotation, and
    views perpendicular to the screen cannot be drawn at all), so switch the current viewer to 3D."""
    import napari
    from napari.utils.notifications import show_info

    viewer = napari.current_viewer()
    if viewer is not None and viewer.dims.ndisplay != 3:
        viewer.dims.ndisplay = 3
        show_info("napari-ssl: switched to the 3D view to show oblique imaging planes at their true positions")
