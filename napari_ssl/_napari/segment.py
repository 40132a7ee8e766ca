"""The Segment dock: pick a fine-tuned model and an Image layer, one click gives a Labels layer ``<scan> masks``.

- The model is a checkpoint folder (``Browse...``); the last models used are remembered (``QSettings``).
  A model with several input channels (e.g. FLAIR + T1ce) shows one layer picker per channel.
- Inference (:func:`napari_ssl.segment.segment_iter`) runs in a napari ``thread_worker``: the progress bar follows
  the sliding windows, Cancel stops before the next window. Bad input (a pretraining checkpoint, a corrupt file,
  a 2D image, a model for another number of channels) becomes a notification; the dock stays usable.
- The Labels layer has the scan's geometry (scale, translate, affine), the checkpoint's colours, and a
  ``class`` feature, so napari's status bar names the class under the cursor. The user's layers are only read.
- ``Save masks`` writes the selected masks layer (NIfTI / NRRD / MHA) with its geometry, next to the scan.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QSettings
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    import napari

__all__ = ["SegmentDock", "make_segment_dock", "masks_layer_kwargs"]

RECENT_KEY = "segment/recent_models"
MAX_RECENT = 8


def _settings() -> QSettings:
    return QSettings("napari-ssl", "napari-ssl")


def recent_models() -> list[str]:
    """Model folders used last (most recent first) that still exist."""
    value = _settings().value(RECENT_KEY, [])
    items = [value] if isinstance(value, str) else list(value or [])
    return [p for p in items if Path(p).is_dir()]


def remember_model(path: str) -> None:
    items = [str(path)] + [p for p in recent_models() if p != str(path)]
    _settings().setValue(RECENT_KEY, items[:MAX_RECENT])


def masks_layer_kwargs(names: dict[int, str], colors: dict[int, str]) -> dict[str, Any]:
    """Labels-layer keyword arguments: colours from the checkpoint and a ``class`` feature per label value."""
    import pandas as pd
    from napari.utils.colormaps import DirectLabelColormap

    color_dict: dict[Any, Any] = {0: "transparent", None: "transparent"}
    color_dict.update({int(k): v for k, v in colors.items()})
    values = sorted(names)
    return {
        "colormap": DirectLabelColormap(color_dict=color_dict),
        "features": pd.DataFrame({"index": values, "class": [names[v] for v in values]}),
        "opacity": 0.6,
    }


class SegmentDock(QWidget):
    """The Segment dock (see the module docstring). ``model`` is the loaded model, ``worker`` the running job."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.model: Any = None
        self.worker: Any = None
        self._cancel: threading.Event | None = None
        self.last_masks: Any = None

        self.model_box = QComboBox()
        self.model_box.setEditable(True)
        self.model_box.setToolTip("fine-tuned checkpoint folder (model.safetensors + meta.json)")
        self.model_box.addItems(recent_models())
        self.model_box.setCurrentIndex(-1)
        self.browse = QPushButton("Browse...")
        self.browse.clicked.connect(self._browse)
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(lambda: self.load_model(self.model_box.currentText()))
        row = QHBoxLayout()
        row.addWidget(self.model_box, 1)
        row.addWidget(self.browse)
        row.addWidget(self.load_button)
        self.info = QLabel("no model loaded")
        self.info.setWordWrap(True)

        self.channel_form = QFormLayout()
        self.channel_boxes: list[QComboBox] = []
        self._set_channels(["image"])
        self.overlap = QDoubleSpinBox()
        self.overlap.setRange(0.0, 0.9)
        self.overlap.setSingleStep(0.125)
        self.overlap.setValue(0.5)
        self.overlap.setToolTip("overlap of neighbouring windows (Gaussian blending)")
        self.largest = QCheckBox("keep largest component per class")
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu"])
        self.device.setToolTip("where the windows run; a large scan's stitched output stays on the CPU")
        options = QFormLayout()
        options.addRow("overlap", self.overlap)
        options.addRow("device", self.device)
        options.addRow(self.largest)

        self.run_button = QPushButton("Segment")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.save_button = QPushButton("Save masks...")
        self.save_button.clicked.connect(lambda: self.save_masks())

        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Model</b>"))
        layout.addLayout(row)
        layout.addWidget(self.info)
        layout.addWidget(QLabel("<b>Scan</b>"))
        layout.addLayout(self.channel_form)
        layout.addLayout(options)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.save_button)
        layout.addStretch(1)

        for event in (viewer.layers.events.inserted, viewer.layers.events.removed, viewer.layers.events.reordered):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------ layers
    def _image_layers(self) -> list[Any]:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _set_channels(self, names: list[str]) -> None:
        while self.channel_form.rowCount():
            self.channel_form.removeRow(0)
        self.channel_boxes = []
        for name in names:
            box = QComboBox()
            box.setToolTip(f"Image layer for the model's input {name!r}")
            self.channel_boxes.append(box)
            self.channel_form.addRow(name, box)
        self._refresh_layers()

    def _refresh_layers(self, *_: Any) -> None:
        names = [layer.name for layer in self._image_layers()]
        for i, box in enumerate(getattr(self, "channel_boxes", [])):
            current = box.currentText()
            box.blockSignals(True)
            box.clear()
            box.addItems(names)
            if current in names:
                box.setCurrentText(current)
            else:
                box.setCurrentIndex(i if len(names) > i else -1)
            box.blockSignals(False)

    # ------------------------------------------------------------ model
    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Fine-tuned model folder", self.model_box.currentText())
        if folder:
            self.load_model(folder)

    def load_model(self, path: str | Path) -> bool:
        """Load the checkpoint at ``path``; a bad one gives a notification and leaves the previous model."""
        from napari_ssl.segment import load_model

        path = str(path).strip()
        if not path:
            show_warning("Segment: choose a fine-tuned model folder first")
            return False
        device = self.device.currentText()
        try:
            model = load_model(path, device="cpu" if device == "auto" else device)
        except (ValueError, OSError) as exc:
            show_error(f"Segment: cannot use model: {exc}")
            return False
        if device == "auto":
            from napari_ssl.device import resolve_device

            model.net.to(resolve_device("auto"))
            model.device = next(model.net.parameters()).device
        self.model = model
        remember_model(path)
        if self.model_box.findText(path) < 0:
            self.model_box.insertItem(0, path)
        self.model_box.setCurrentText(path)
        classes = ", ".join(c["name"] for c in model.classes)
        spacing = " x ".join(f"{s:g}" for s in model.spacing) if model.spacing else "native"
        self.info.setText(f"{classes}<br>{model.in_channels} channel(s), {spacing} mm, patch {model.patch_size}")
        self._set_channels(model.channel_names)
        return True

    # ------------------------------------------------------------ run
    def run(self) -> Any:
        """Segment the chosen layer(s); returns the worker (or None when the input is refused)."""
        from napari_ssl._napari.layers import layer_to_volume
        from napari_ssl.segment import check_scan, segment_iter

        if self.worker is not None:
            show_warning("Segment: a segmentation is already running")
            return None
        stale = self.model is None or self.model.path != self.model_box.currentText().strip()
        if stale and not self.load_model(self.model_box.currentText()):
            return None
        layers = {layer.name: layer for layer in self._image_layers()}
        chosen = [box.currentText() for box in self.channel_boxes]
        if not chosen or any(name not in layers for name in chosen) or len(set(chosen)) != len(chosen):
            inputs = ", ".join(self.model.channel_names)
            show_error(f"Segment: the model takes {len(chosen)} input(s) ({inputs}); pick a different Image layer "
                       "for every input")
            return None
        try:
            volumes = [layer_to_volume(layers[name]) for name in chosen]
            for volume in volumes:
                check_scan(volume)
        except ValueError as exc:
            show_error(f"Segment: {exc}")
            return None
        self._source = layers[chosen[0]]
        self._cancel = threading.Event()
        options = {"overlap": float(self.overlap.value()), "largest_component": self.largest.isChecked(),
                   "cancel": self._cancel}
        worker = create_worker(_cancellable, segment_iter(volumes, self.model, **options), _start_thread=False,
                               _ignore_errors=True)
        worker.yielded.connect(self._on_yield)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText(f"segmenting {chosen[0]}...")
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop the running segmentation before its next window (no layer is added)."""
        if self._cancel is not None:
            self._cancel.set()
        if self.worker is not None:
            self.worker.quit()

    def _on_yield(self, event: Any) -> None:
        from napari_ssl.segment import SegmentProgress

        if isinstance(event, SegmentProgress):
            self.progress.setValue(round(100 * event.fraction))
            return
        self._add_masks(event)

    def _add_masks(self, result: Any) -> None:
        from napari_ssl._napari.layers import volume_to_layer_data

        source = self._source
        name = f"{source.name} masks"
        data, kwargs, _ = volume_to_layer_data(result.labels, "labels")
        kwargs.update(masks_layer_kwargs(dict(result.names), dict(result.colors)))
        kwargs["name"] = name
        meta = kwargs.setdefault("metadata", {}).setdefault("napari_ssl", {})
        meta["path"] = (source.metadata.get("napari_ssl") or {}).get("path")
        meta["classes"] = {str(k): v for k, v in result.names.items()}
        meta["model"] = self.model.path
        if name in self.viewer.layers and self.viewer.layers[name].metadata.get("napari_ssl", {}).get("model"):
            self.viewer.layers.remove(name)  # our own earlier result is replaced; a user's layer is kept (napari renames)
        self.last_masks = self.viewer.add_labels(data, **kwargs)
        counts = {n: int(np.count_nonzero(data == v)) for v, n in result.names.items() if v}
        self.status.setText("found " + ", ".join(f"{n}: {c} voxels" for n, c in counts.items()))
        self.progress.setValue(100)

    def _on_error(self, exc: Exception) -> None:
        from napari_ssl.segment import SegmentationCancelled

        if isinstance(exc, SegmentationCancelled):
            self.status.setText("cancelled")
            show_info("Segment: cancelled")
            return
        self.status.setText("failed")
        show_error(f"Segment: {exc}")

    def _on_finished(self) -> None:
        if self._cancel is not None and self._cancel.is_set() and self.status.text().startswith("segmenting"):
            self.status.setText("cancelled")
            show_info("Segment: cancelled")
        self.worker = None
        self._cancel = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    # ------------------------------------------------------------ save
    def save_masks(self, path: str | Path | None = None) -> Path | None:
        """Write the selected masks layer (or the last one made) with its geometry; returns the path."""
        from napari.layers import Labels

        from napari_ssl import io
        from napari_ssl._napari.layers import layer_to_volume
        from napari_ssl.segment import default_output_path

        layer = self.viewer.layers.selection.active
        if not isinstance(layer, Labels):
            layer = self.last_masks if self.last_masks in self.viewer.layers else None
        if layer is None:
            show_warning("Segment: no masks to save; run Segment first or select a Labels layer")
            return None
        volume = layer_to_volume(layer)
        if path is None:
            default = default_output_path(volume.path, layer.name.removesuffix(" masks"))
            chosen, _ = QFileDialog.getSaveFileName(self, "Save masks", str(default),
                                                    "Scans (*.nii.gz *.nii *.nrrd *.mha)")
            if not chosen:
                return None
            path = chosen
        try:
            out = io.write(volume.with_array(np.asarray(volume.array).astype(np.uint8 if volume.array.max() < 256 else np.uint16)), path)
        except (ValueError, OSError) as exc:
            show_error(f"Segment: cannot save masks: {exc}")
            return None
        show_info(f"Segment: saved {out}")
        self.status.setText(f"saved {out}")
        return out

    def closeEvent(self, event: Any) -> None:
        self.cancel()
        super().closeEvent(event)


def _cancellable(gen: Any) -> Any:
    """Relay ``gen``; a cancelled segmentation just ends (the dock reports it), other errors propagate."""
    from napari_ssl.segment import SegmentationCancelled

    try:
        yield from gen
    except SegmentationCancelled:
        return


def make_segment_dock(viewer: napari.viewer.Viewer) -> SegmentDock:
    """npe2 widget command: the Segment dock for ``viewer``."""
    return SegmentDock(viewer)
