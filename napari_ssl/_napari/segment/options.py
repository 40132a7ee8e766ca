"""The Segment dock's run options: how the model runs on the scan, not which model or scan.

Window overlap (Gaussian blending) and the device for every model; the largest-component clean-up of the masks; for a
napari-ssl model of several channels, the modality ensemble (partly ticked: as the model was trained, on after
modality dropout); and, only for an nnU-Net model, its own opening options: the folds to average and test-time
mirroring (partly ticked: nnU-Net's default for the device the child finds, on a GPU and off on a CPU). The same
options drive a correction round's segmentation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLineEdit, QWidget

from napari_ssl._napari.widgets import fill_devices, training_threads

if TYPE_CHECKING:
    from napari_ssl._napari.segment.info import ModelInfo

__all__ = ["RunOptions"]


class RunOptions(QWidget):
    """The options' widgets in a form; :meth:`show_model` fits them to the chosen model."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.overlap = QDoubleSpinBox()
        self.overlap.setRange(0.0, 0.9)
        self.overlap.setSingleStep(0.125)
        self.overlap.setValue(0.5)
        self.overlap.setToolTip("overlap of neighbouring windows (Gaussian blending)")
        self.largest = QCheckBox("keep largest component per class")
        self.mirroring = QCheckBox("test-time mirroring")
        self.mirroring.setToolTip("nnU-Net's mirroring: each window also runs mirrored along its axes and the answers "
                                  "are averaged; up to 8x the time of a 3D model on a CPU. Partly ticked: on a GPU, "
                                  "off on a CPU")
        self.ensemble = QCheckBox("modality ensemble")
        self.ensemble.setToolTip("each window also runs with each channel blanked in turn, and a voxel is kept when "
                                 "any of these finds it: a structure one modality hides is found from the others; "
                                 "about channels + 1 times the time. Partly ticked: as the model was trained (on after "
                                 "modality dropout)")
        self.folds = QLineEdit()
        self.folds.setToolTip("the nnU-Net folds to average, e.g. 0,1 (empty: every trained fold)")
        self.threads = training_threads()
        self.device = QComboBox()
        fill_devices(self.device, self.threads)
        self.device.setToolTip("where the model runs (in a separate process, freed after each run)")
        self._form = QFormLayout(self)
        self._form.setContentsMargins(0, 0, 0, 0)
        self._form.addRow("overlap", self.overlap)
        self._form.addRow("device", self.device)
        self._form.addRow(self.largest)
        self._form.addRow(self.ensemble)
        self._form.addRow("folds", self.folds)
        self._form.addRow(self.mirroring)
        self.show_model(None)

    def show_model(self, info: ModelInfo | None) -> None:
        """nnU-Net's own options (folds, mirroring) only for an nnU-Net model, mirroring off on a CPU by default; the
        modality ensemble only for a napari-ssl model of several channels, as trained by default."""
        several = info is not None and info.format == "napari-ssl" and len(info.segmenter.channels) > 1
        self._form.setRowVisible(self.ensemble, several)
        if several and self.ensemble.property("model") != info.path:
            self.ensemble.setProperty("model", info.path)
            self.ensemble.setTristate(True)
            self.ensemble.setCheckState(Qt.CheckState.PartiallyChecked)
        nnunet = info is not None and info.format == "nnunet"
        for widget in (self.folds, self.mirroring):
            self._form.setRowVisible(widget, nnunet)
        if nnunet and self.folds.property("model") != info.path:
            folds = dict(info.segmenter.details).get("folds", "")
            self.folds.setText("")
            self.folds.setPlaceholderText(f"all: {folds}" if folds else "all")
            self.folds.setProperty("model", info.path)
            self.mirroring.setTristate(True)  # partly checked: nnU-Net's default for the device the child finds
            self.mirroring.setCheckState(Qt.CheckState.PartiallyChecked)

    @property
    def device_name(self) -> str:
        """The chosen device, ``auto`` until the worker has listed them."""
        return self.device.currentData() or "auto"

    def segment_options(self) -> dict[str, Any]:
        """The options of :func:`napari_ssl.inference.segment.segment` set here."""
        out: dict[str, Any] = {"overlap": float(self.overlap.value()), "largest_component": self.largest.isChecked()}
        state = self.ensemble.checkState()
        if self._form.isRowVisible(self.ensemble) and state != Qt.CheckState.PartiallyChecked:
            out["modality_ensemble"] = state == Qt.CheckState.Checked  # the user's choice; else as trained
        return out

    def open_options(self, info: ModelInfo) -> dict[str, Any]:
        """The format's opening options set here: nnU-Net's folds and mirroring."""
        if info.format != "nnunet":
            return {}
        out: dict[str, Any] = {}
        state = self.mirroring.checkState()
        if state != Qt.CheckState.PartiallyChecked:  # the user's choice; else on a GPU, off on a CPU
            out["mirroring"] = state == Qt.CheckState.Checked
        if self.folds.text().strip():
            out["folds"] = self.folds.text().strip()
        return out
