"""npe2 reader: NIfTI, NRRD, MHA/MHD, DICOM files, DICOMDIRs and folders (one layer per series or file).

The reader only turns paths into layer data: it never changes the viewer. Showing oblique planes in 3D is
:mod:`napari_ssl._napari.view_hook`'s job.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_ssl import io
from napari_ssl._napari.layers import arrange_case_layers, volume_to_layer_data
from napari_ssl._napari.view_hook import is_oblique
from napari_ssl.io.volume import Volume

LayerData = tuple[Any, dict[str, Any], str]
PathLike = str | os.PathLike[str]


def _claims(path: Path) -> bool:
    if path.is_dir():
        return io.holds_scans(path)
    return io.is_scan_file(path)


def napari_get_reader(path: PathLike | list[PathLike]) -> Callable[[Any], list[LayerData]] | None:
    """Return :func:`read_layers` when napari-ssl can open ``path``, else ``None`` (never raises).

    DICOM files are recognised by content, whatever their names (UIDs with dots, ``.IMA``, no suffix).
    """
    paths = path if isinstance(path, list) else [path]
    try:
        if not paths or not all(_claims(Path(p)) for p in paths):
            return None
    except OSError:
        return None
    return read_layers


def read_layers(path: PathLike | list[PathLike]) -> list[LayerData]:
    """Open each path as layers placed at their world position (mm).

    A folder gives one layer per scan or DICOM series inside it (BraTS modalities, cardiac views, the series
    of a DICOMDIR); mask files (``seg``, ``label``, ``mask`` in the name, integer voxels) open as Labels
    layers, on top of the images; of several images on one grid only the first is visible. Skipped localizers
    and filled slice gaps become warning notifications. A corrupt file raises
    :class:`napari_ssl.io.ScanReadError` naming the path and the reason.
    """
    paths = path if isinstance(path, list) else [path]
    layers: list[LayerData] = []
    all_volumes: list[Volume] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", io.ScanWarning)
        per_path = [io.read_all(p) for p in paths]
    _relay(caught)
    for volumes in per_path:
        all_volumes.extend(volumes)
        names = [v.name for v in volumes]
        for volume in volumes:
            data, kwargs, layer_type = volume_to_layer_data(volume)
            if names.count(volume.name) > 1 and volume.path:
                kwargs["name"] = f"{Path(volume.path).parent.name}/{volume.name}"
            if layer_type == "image" and len(volumes) > 1:
                kwargs.setdefault("blending", "translucent")
            layers.append((data, kwargs, layer_type))
    _hook_viewers(any(v.is_plane and is_oblique(v.direction) for v in all_volumes))
    return arrange_case_layers(layers, all_volumes)


def _relay(caught: list[warnings.WarningMessage]) -> None:
    """Scan notices become napari warnings (a notification); any other warning goes on as it came."""
    for w in caught:
        if issubclass(w.category, io.ScanWarning):
            from napari.utils.notifications import show_warning

            show_warning(f"napari-ssl: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _hook_viewers(oblique: bool) -> None:
    """Make sure open viewers carry the oblique-plane hook, and tell it when oblique planes are coming (the
    hook, not the reader, switches a viewer to 3D as they are inserted)."""
    from napari_ssl._napari.view_hook import expect_oblique_planes, install_current

    install_current()
    if oblique:
        expect_oblique_planes()
