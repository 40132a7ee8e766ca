"""The inputs of the Pretrain dock: data, pretexts with their parameters, budget, device, folders.

:class:`PretrainForm` only collects and checks values (:meth:`PretrainForm.collect`: the keyword arguments of
:class:`~napari_ssl.training.pretrain.PretrainConfig`, which the child process builds); the run itself lives in
:mod:`napari_ssl._napari.pretrain.dock`.
Pretext parameters come from :func:`~napari_ssl._napari.params.pretext_param_widget` (the explorer's widgets:
one definition, two uses). Only values the user changed are passed to the engine, so the others keep the
engine's defaults scaled to the patch size.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from napari_ssl._napari.checks import scan_problem
from napari_ssl._napari.params import pretext_param_widget
from napari_ssl._napari.widgets import (
    BACKBONES,
    PathEdit,
    fill_devices,
    pretext_labels,
    spin,
    training_threads,
)

if TYPE_CHECKING:
    import napari

__all__ = ["FOLDER", "LAYERS", "PretrainForm"]

LAYERS = "Selected image layers"
FOLDER = "Folder of scans"


class _PretextRow(QWidget):
    """A pretext check box, its loss weight, and its parameter widgets (shown while checked)."""

    def __init__(self, name: str, checked: bool) -> None:
        super().__init__()
        self.name = name
        self.check = QCheckBox(pretext_labels()[name])
        self.check.setChecked(checked)
        self.weight = QDoubleSpinBox()
        self.weight.setRange(0.0, 100.0)
        self.weight.setSingleStep(0.1)
        self.weight.setValue(1.0)
        self.weight.setPrefix("weight ")
        self.weight.setToolTip("loss weight of this pretext in a combined run")
        self.params = pretext_param_widget(name)
        self.defaults = self.params.values()
        self.params.native.setVisible(checked)
        self.params.native.setContentsMargins(16, 0, 0, 0)
        self.check.toggled.connect(self.params.native.setVisible)
        self.check.toggled.connect(self.weight.setEnabled)
        self.weight.setEnabled(checked)
        head = QHBoxLayout()
        head.setContentsMargins(0, 0, 0, 0)
        head.addWidget(self.check)
        head.addStretch(1)
        head.addWidget(self.weight)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(head)
        layout.addWidget(self.params.native)

    def changed_options(self) -> dict[str, Any]:
        """Parameters that differ from the defaults shown (the rest keep the engine's patch-scaled defaults)."""
        return {k: v for k, v in self.params.values().items() if v != self.defaults.get(k)}

    def show_defaults(self, options: dict[str, Any]) -> None:
        """Show ``options`` (the run's defaults at its patch) as the defaults; a value the user changed is kept."""
        current = self.params.values()
        for key, value in options.items():
            if key not in current:
                continue
            untouched = current[key] == self.defaults.get(key)
            self.defaults[key] = value
            if untouched:
                self.params[key].value = value
                self.defaults[key] = self.params.values()[key]  # as the widget holds it


class PretrainForm(QWidget):
    """Every input of a pretraining run, as widgets; :meth:`collect` checks and returns them."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer

        # data
        self.source = QComboBox()
        self.source.addItems([LAYERS, FOLDER])
        self.layers_label = QLabel()
        self.layers_label.setWordWrap(True)
        self.folder = PathEdit("folder of scans (searched recursively)")
        data_box = QGroupBox("Data")
        data_form = QFormLayout(data_box)
        data_form.addRow("from", self.source)
        data_form.addRow("layers", self.layers_label)
        data_form.addRow("folder", self.folder)
        self.folder_label = QLabel()  # "N scans, X GB": what the run would use, listed off the GUI thread
        self.folder_label.setWordWrap(True)
        data_form.addRow("found", self.folder_label)
        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(300)  # typing a path: one listing when it settles
        self._count_timer.timeout.connect(self._count_folder)
        self._counting: str | None = None  # the folder the running listing is for
        self.count_worker: Any = None
        self.folder.line.textChanged.connect(self._folder_changed)
        self.source.currentTextChanged.connect(self._source_changed)
        viewer.layers.selection.events.changed.connect(self._update_layers_label)
        viewer.layers.events.inserted.connect(self._update_layers_label)
        viewer.layers.events.removed.connect(self._update_layers_label)
        viewer.layers.events.renamed.connect(self._update_layers_label)

        # pretexts
        names = list(pretext_labels())  # every registered pretext; the first one checked
        self.pretexts = {name: _PretextRow(name, name == names[0]) for name in names}
        pretext_box = QGroupBox("Pretexts")
        pretext_layout = QVBoxLayout(pretext_box)
        pretext_layout.setSpacing(4)
        for row in self.pretexts.values():
            pretext_layout.addWidget(row)

        # training
        self.backbone = QComboBox()
        self.backbone.addItem("auto", None)
        self.backbone.setToolTip("auto: small on a CPU, medium on MPS, large on CUDA")
        for size in BACKBONES:
            self.backbone.addItem(size, size)
        self.steps = spin(
            1, 10_000_000, 1000, 100, tip="the run ends at this step (a resumed run continues to it)"
        )
        self.batch = spin(0, 512, 0, special="auto",
                          tip="samples per step; auto: 2, imaging planes alone more (9 at the CPU defaults)")
        self.patch = spin(
            16, 512, 16, 16, special="auto", tip="3D patch edge in voxels (>= 32); auto follows the device"
        )
        self.threads = training_threads()
        self.device = QComboBox()
        fill_devices(self.device, self.threads)
        self.seed = spin(0, 2**31 - 1, 0, tip="seed of the initial weights and of every sample")
        self.save_every = spin(
            0, 10_000_000, 500, 100, special="end only", tip="save a checkpoint every N steps"
        )
        self.out = PathEdit("default: ~/napari-ssl/pretrain-<date-time>")
        self.resume = PathEdit("optional: a checkpoint folder to continue")
        train_box = QGroupBox("Training")
        train_form = QFormLayout(train_box)
        train_form.addRow("backbone", self.backbone)
        train_form.addRow("steps", self.steps)
        train_form.addRow("batch", self.batch)
        train_form.addRow("patch", self.patch)
        train_form.addRow("device", self.device)
        train_form.addRow("seed", self.seed)
        train_form.addRow("save every", self.save_every)
        train_form.addRow("output folder", self.out)
        train_form.addRow("resume from", self.resume)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for box in (data_box, pretext_box, train_box):
            layout.addWidget(box)
        self._source_changed(self.source.currentText())
        # what the parameters show is what the run uses: the engine's defaults at the run's patch
        self.patch.valueChanged.connect(self.show_run_defaults)
        self.device.currentIndexChanged.connect(self.show_run_defaults)
        self.show_run_defaults()

    def run_patch(self) -> int:
        """The patch edge the run will use: the form's, or for "auto" the device's default (the first GPU listed
        when the device is "auto"), as the engine resolves it."""
        from napari_ssl.device import patch_for

        if self.patch.value() != self.patch.minimum():
            return int(self.patch.value())
        device = str(self.device.currentData() or "auto")
        if device == "auto":
            listed = [str(self.device.itemData(i) or "") for i in range(self.device.count())]
            device = next((d for d in listed if d.startswith(("cuda", "mps"))), "cpu")
        return patch_for(device)

    def show_run_defaults(self, *_: Any) -> None:
        """Every pretext's parameters at the run's patch (:func:`napari_ssl.training.pretrain.default_pretext_options`)."""
        from napari_ssl.pretext import registry

        patch = self.run_patch()
        for name, row in self.pretexts.items():
            row.show_defaults(registry.get(name).default_options(patch))

    # ------------------------------------------------------------ data source
    def _source_changed(self, text: str) -> None:
        self.folder.setEnabled(text == FOLDER)
        self.folder_label.setEnabled(text == FOLDER)
        self._folder_changed()
        self.layers_label.setEnabled(text == LAYERS)
        self._update_layers_label()

    def _folder_changed(self, *_: Any) -> None:
        self.folder_label.setText("")
        if self.source.currentText() == FOLDER and self.folder.path:
            self.folder_label.setText("counting scans ...")
            self._count_timer.start()
        else:
            self._count_timer.stop()

    def _count_folder(self) -> None:
        """List the folder's scans in a thread (a folder of thousands of files never blocks the GUI)."""
        from napari.qt.threading import thread_worker

        folder = self.folder.path
        if self.source.currentText() != FOLDER or not folder:
            return
        if not Path(folder).is_dir():
            self.folder_label.setText("no such folder")
            return
        if self._counting is not None:  # one listing at a time: the newest path is counted when it ends
            self._count_timer.start()
            return
        self._counting = folder
        worker = thread_worker(_summarize, start_thread=False, ignore_errors=True)(folder)
        worker.returned.connect(self._show_count)
        worker.errored.connect(lambda exc: self._show_count((folder, None, str(exc))))
        worker.finished.connect(self._count_finished)
        self.count_worker = worker
        worker.start()

    def _show_count(self, result: tuple[str, tuple[int, int] | None, str]) -> None:
        folder, summary, error = result
        if folder != self.folder.path or self.source.currentText() != FOLDER:
            return  # the user moved on: that path's count is stale
        if summary is None:
            self.folder_label.setText(f"cannot list the folder: {error}")
            return
        n, size = summary
        self.folder_label.setText(f"{n} scan{'s' if n != 1 else ''}, {_size_text(size)}" if n
                                  else "no scans (NIfTI, NRRD, MHA/MHD or DICOM) in this folder")

    def _count_finished(self) -> None:
        counted, self._counting = self._counting, None
        if counted != self.folder.path and self.folder.path and self.source.currentText() == FOLDER:
            self._count_timer.start()  # the path changed while listing

    def image_layers(self) -> list[Any]:
        """The selected layers that are usable 3D Image layers."""
        return [layer for layer in self.viewer.layers.selection if scan_problem(layer) is None]

    def layer_problems(self) -> list[str]:
        """Why each selected layer that cannot be used is refused (one sentence each)."""
        return [p for layer in self.viewer.layers.selection if (p := scan_problem(layer, what="pretraining"))]

    def _update_layers_label(self, *_: Any) -> None:
        layers = self.image_layers()
        self.layers_label.setText(
            ", ".join(layer.name for layer in layers) or "none selected: select 3D Image layers"
        )

    def set_pretexts(self, names: list[str] | tuple[str, ...]) -> None:
        for name, row in self.pretexts.items():
            row.check.setChecked(name in names)

    # ------------------------------------------------------------ config
    def collect(self, *, resume: str | None = None) -> dict[str, Any]:
        """Keyword arguments of :class:`~napari_ssl.training.pretrain.PretrainConfig` from the widgets (GUI thread only:
        selected layers are read here). ``resume`` continues that checkpoint, writing back into it.

        Raises
        ------
        ValueError
            No data or no pretext; the message says what to choose.
        """
        from napari_ssl._napari.layers import layer_to_volume

        data: tuple[str, ...] = ()
        volumes: tuple[Any, ...] = ()
        if self.source.currentText() == FOLDER:
            if not self.folder.path:
                raise ValueError("choose a folder of scans, or train on the selected image layers")
            if not Path(self.folder.path).is_dir():
                raise FileNotFoundError(f"folder {self.folder.path} does not exist")
            data = (self.folder.path,)
        else:
            problems = self.layer_problems()
            if problems:
                raise ValueError(problems[0])
            layers = self.image_layers()
            if not layers:
                raise ValueError(
                    "select one or more 3D Image layers in the layer list (or train from a folder)"
                )
            volumes = tuple(layer_to_volume(layer) for layer in layers)
        chosen = [name for name, row in self.pretexts.items() if row.check.isChecked()]
        if not chosen:
            raise ValueError("choose at least one pretext")
        options = {name: self.pretexts[name].changed_options() for name in chosen}
        weights = {name: self.pretexts[name].weight.value() for name in chosen if len(chosen) > 1}
        resume = resume if resume is not None else self.resume.path
        from napari_ssl.checkpoint import is_checkpoint

        if resume and not is_checkpoint(resume):
            raise FileNotFoundError(f"cannot resume: {resume} is not a checkpoint folder (no meta.json)")
        out = resume or self.out.path
        if not out:
            out = str(Path.home() / "napari-ssl" / time.strftime("pretrain-%Y%m%d-%H%M%S"))
            self.out.path = out
        patch = self.patch.value()
        return {
            "pretexts": tuple(chosen),
            "data": data,
            "volumes": volumes,
            "out": out,
            "steps": self.steps.value(),
            "batch_size": self.batch.value() or None,
            "patch_size": None if patch == self.patch.minimum() else patch,
            "backbone": self.backbone.currentData(),
            "device": self.device.currentData() or "auto",
            "seed": self.seed.value(),
            "resume": resume,
            "num_threads": self.threads,
            "save_every": self.save_every.value(),
            "weights": weights,
            "pretext_options": {k: v for k, v in options.items() if v},
        }


def _summarize(folder: str) -> tuple[str, tuple[int, int] | None, str]:
    """(folder, (scans, bytes), "") for a thread worker: :func:`napari_ssl.training.prepared.source_summary`."""
    from napari_ssl.training.prepared import source_summary

    return folder, source_summary([folder]), ""


def _size_text(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
