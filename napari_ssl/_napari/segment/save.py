"""The Segment dock's *Save masks…*: the selected masks layer (else the last one the dock made) written with its
geometry (NIfTI / NRRD / MHA, :func:`napari_ssl._napari.writer.write_labels_layer`), by default next to its scan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QFileDialog, QWidget

__all__ = ["save_masks"]


def save_masks(parent: QWidget, viewer: Any, last_masks: Any, path: str | Path | None = None) -> Path | None:
    """Write the selected Labels layer, or ``last_masks`` when none is selected, to ``path`` (``None``: ask, next to
    the scan). Returns the file written, or None (nothing to save, the dialog cancelled, an error: notified)."""
    from napari.layers import Labels

    from napari_ssl._napari.writer import write_labels_layer
    from napari_ssl.inference.segment import default_output_path

    layer = viewer.layers.selection.active
    if not isinstance(layer, Labels):
        layer = last_masks if last_masks in viewer.layers else None
    if layer is None:
        show_warning("Segment: no masks to save; run Segment first or select a Labels layer")
        return None
    if path is None:  # pragma: no cover - modal dialog
        scan = (layer.metadata.get("napari_ssl") or {}).get("path")
        default = default_output_path(scan, layer.name.removesuffix(" masks"))
        chosen, _ = QFileDialog.getSaveFileName(parent, "Save masks", str(default),
                                                "Scans (*.nii.gz *.nii *.nrrd *.mha)")
        if not chosen:
            return None
        path = chosen
    try:
        out = write_labels_layer(layer, path)
    except (ValueError, OSError) as exc:
        show_error(f"Segment: cannot save masks: {exc}")
        return None
    show_info(f"Segment: saved {out}")
    return out
