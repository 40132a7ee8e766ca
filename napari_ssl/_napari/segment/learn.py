"""*Learn from my corrections*: the Segment dock's side of the correction loop (:mod:`napari_ssl.training.corrections`).

After Segment, the user fixes the masks with napari's brush and eraser and clicks *Learn from my corrections*: the
masks layer and the scan it was made from (named in the layer's metadata) are checked on the GUI thread (shape,
grid, the model's classes, something edited: one sentence each, nothing written), then one child job stores them
beside the model, continues training from the model's weights for the minutes set, saves a new version and
segments the scan again into ``<scan> masks v<N>``; the corrected layer is left as the user made it.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from qtpy.QtWidgets import QDoubleSpinBox, QHBoxLayout, QPushButton, QWidget

from napari_ssl._napari.jobs import CorrectRequest
from napari_ssl._napari.proxy import holds, same_layer
from napari_ssl._napari.segment.info import MaskTarget

__all__ = ["Edits", "LearnRow", "correction_request", "masks_to_learn"]


class LearnRow(QWidget):
    """The dock's *Learn from my corrections* button and the minutes a round trains (``minutes_set``)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.button = QPushButton("Learn from my corrections")
        self.button.setToolTip(
            "correct the masks with napari's brush and eraser, then click: the scan and the corrected masks are kept "
            "beside the model as a new case, training goes on from the model for the minutes set (the corrections "
            "give half the patches, the model's own training scans the other half), and a new version of the model "
            "segments the scan again (the model itself is kept as it is)")
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0.25, 120.0)
        self.minutes.setSingleStep(0.5)
        self.minutes.setValue(2.0)
        self.minutes.setDecimals(1)
        self.minutes.setSuffix(" min")
        self.minutes.setMinimumWidth(self.minutes.fontMetrics().horizontalAdvance("000.0 min") + 40)
        self.minutes.setToolTip("how long training goes on from the model's weights")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.button, 1)
        row.addWidget(self.minutes)

    @property
    def minutes_set(self) -> float:
        return float(self.minutes.value())


class Edits:
    """The model's own masks for the last masks layer Segment made, to count the voxels the user changed."""

    def __init__(self) -> None:
        self._layer: Any = None
        self._data: np.ndarray | None = None

    def remember(self, layer: Any) -> None:
        self._layer = layer
        self._data = np.array(layer.data, copy=True)

    def edited(self, layer: Any) -> int | None:
        """Voxels of ``layer`` that differ from what the model gave (None: not the layer Segment last made)."""
        if self._data is None or not same_layer(layer, self._layer):
            return None
        data = np.asarray(layer.data)
        if data.shape != self._data.shape:
            return None
        return int(np.count_nonzero(data != self._data))


def masks_to_learn(viewer: Any, last: Any) -> Any:
    """The masks layer to learn from: the selected Labels layer when Segment made it, else the last one made."""
    from napari.layers import Labels

    active = viewer.layers.selection.active
    if isinstance(active, Labels) and (active.metadata.get("napari_ssl") or {}).get("model"):
        return active
    if holds(viewer.layers, last):
        return last
    if isinstance(active, Labels):
        return active
    return None


def correction_request(viewer: Any, layer: Any, edits: Edits, *, minutes: float | None, device: str, threads: int,
                       options: dict[str, Any], steps: int | None = None) -> tuple[CorrectRequest, MaskTarget]:
    """The child job's request and where its masks go, for the masks ``layer``; a refusal is a ``ValueError``
    sentence and nothing is written (GUI thread: reads a small meta.json, no torch)."""
    from napari_ssl import checkpoint
    from napari_ssl._napari.layers import layer_to_volume
    from napari_ssl.training.corrections import check_correction, check_writable, next_version

    if layer is None:
        raise ValueError("no masks to learn from: run Segment, correct its masks layer, then click Learn")
    meta = layer.metadata.get("napari_ssl") or {}
    model = meta.get("model")
    if not model:
        raise ValueError(f"{layer.name!r} was not made by Segment: segment the scan first, correct that masks "
                         "layer, then learn from it")
    if not checkpoint.is_checkpoint(model):
        raise ValueError(f"the model that made {layer.name!r} is not a napari-ssl segmenter; only napari-ssl's own "
                         "segmenters learn from corrections (fine-tune one in the Fine-tune dock)")
    ckpt = checkpoint.open_checkpoint(model, kinds=("segment",))
    check_writable(model)
    scans = [str(name) for name in meta.get("scans") or ()]
    if not scans:
        raise ValueError(f"{layer.name!r} does not say which scan it was made from: segment the scan again")
    for name in scans:
        if name not in viewer.layers:
            raise ValueError(f"the scan layer {name!r} that {layer.name!r} was made from is gone (renamed or "
                             "deleted): open it again under that name, or segment again")
    channels = [layer_to_volume(viewer.layers[name]) for name in scans]
    masks = layer_to_volume(layer)
    check_correction(masks, channels, ckpt.classes, masks_name=layer.name, scan_name=scans[0])
    edited = edits.edited(layer)
    if edited == 0:
        raise ValueError(f"{layer.name!r} is as the model made it: correct it with the brush and eraser first")
    out = next_version(model, ckpt.model_version)
    request = CorrectRequest(
        model=str(model), out=str(out), volumes=tuple(channels), masks=masks, scan_name=scans[0],
        masks_name=layer.name, edited_voxels=edited, minutes=minutes, steps=steps, device=device, threads=threads,
        options=options,
    )
    version = re.search(r"-v(\d+)$", out.name)
    target = MaskTarget(name=f"{scans[0]} masks v{version.group(1) if version else ckpt.model_version + 1}",
                        scan_path=meta.get("path"), model_path=str(out), scans=tuple(scans))
    return request, target
