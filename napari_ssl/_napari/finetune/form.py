"""The inputs of the Fine-tune dock: training pairs (layers) or folders, the classes, budget, device, output.

A pair is a case: *Add pair* on a layer that names a modality (``flair``) takes the Image layers of the case's other
modalities on its grid too (``flair+t1+t1ce+t2  +  seg``, one input channel each, in one order). A folder of case
folders (BraTS: ``<case>/{flair,t1,t1ce,t2,seg}.nii.gz``) with no label folder trains on its cases, every modality a
channel (:func:`napari_ssl.training.cases.find_cases`); the form says what it found. The classes to learn are
offered from the values present in the chosen Labels layer (named when the layer knows their names); the note under
*annotations* says which slices of that layer hold labels.

:class:`FinetuneForm` only collects and checks values (:meth:`FinetuneForm.collect`: the keyword arguments of
:class:`~napari_ssl.training.finetune.FinetuneConfig`, which the child process builds), each refusal a sentence; the
run itself lives in :mod:`napari_ssl._napari.finetune.dock`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_ssl._napari.checks import scan_problem
from napari_ssl._napari.finetune.inputs import (
    ClassPicker,
    PairList,
    case_layers,
    channels_text,
    checkpoint_backbone,
    folder_cases,
    folder_pairs,
)
from napari_ssl._napari.hub import checkpoint_hub
from napari_ssl._napari.proxy import holds
from napari_ssl._napari.widgets import (
    BACKBONES,
    PathEdit,
    decimal_spin,
    fill_devices,
    spin,
    training_threads,
)
from napari_ssl.classes import describe_slices, painted_slices

if TYPE_CHECKING:
    import napari

__all__ = ["FinetuneForm", "annotation_text"]


def annotation_text(labels: np.ndarray, image: np.ndarray | None, partial: bool) -> str:
    """The note under the checkbox: ``labels on 31 of 155 slices (every 5th): unpainted slices ignored`` with the
    option on; with it off, a hint to turn it on when fewer than half the slices that hold body (any image voxel
    above the scan's minimum) hold labels; nothing for an empty layer."""
    painted = painted_slices(labels)
    if not painted.any():
        return ""
    where = f"labels on {describe_slices(painted)}"
    if partial:
        return f"{where}: unpainted slices ignored"
    body = len(painted)
    if image is not None and image.shape == labels.shape:
        flat = image.reshape(image.shape[0], -1)
        body = max(1, int(np.count_nonzero(flat.max(axis=1) > flat.min())))
    if painted.sum() < body / 2:
        return f"{where}: every unpainted slice is taught as background; tick 'only painted slices are labelled' " \
               "if you painted only some slices"
    return where


class FinetuneForm(QWidget):
    """The Fine-tune dock's inputs (see the module docstring); the layers come from ``viewer``."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.image_box, self.label_box = QComboBox(), QComboBox()
        for box in (self.image_box, self.label_box):
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.setMinimumContentsLength(6)
        self.label_box.currentTextChanged.connect(self._refresh_classes)
        self.label_box.currentTextChanged.connect(self._refresh_annotation)
        self.image_box.currentTextChanged.connect(self._refresh_annotation)
        add = QPushButton("Add pair")
        add.clicked.connect(self.add_pair)
        remove = QPushButton("Remove")
        remove.clicked.connect(self._remove_pair)
        self.pair_list = PairList()
        self.pair_list.setMaximumHeight(52)
        self.image_dir = PathEdit("or a folder of case folders, or of scans")
        self.label_dir = PathEdit("and a folder of label files (same names), or none for case folders")
        self.folder_note = QLabel("")  # what the folder holds: "13 cases, 4 channels: flair, t1, t1ce, t2"
        self.folder_note.setWordWrap(True)
        self.folder_note.setVisible(False)
        self._folder_timer = QTimer(self)  # look at the folder once the typing stops, not at every key
        self._folder_timer.setSingleShot(True)
        self._folder_timer.setInterval(300)
        self._folder_timer.timeout.connect(self.refresh_folder_note)
        for edit in (self.image_dir, self.label_dir):
            edit.line.textChanged.connect(self._folder_timer.start)
        self.modalities = QCheckBox("with its case's other modalities")  # off: the picked layer alone (FLAIR only)
        self.modalities.setChecked(True)
        self.modalities.setToolTip("Add pair on a modality layer (flair) takes the case's other modality layers on "
                                   "its grid as channels too; untick to train on the picked layer alone")
        pair_row = QFormLayout()
        pair_row.addRow("image", self.image_box)
        pair_row.addRow("", self.modalities)
        labels_row = QHBoxLayout()
        labels_row.addWidget(self.label_box, 1)
        labels_row.addWidget(add)
        pair_row.addRow("labels", labels_row)

        self.pretrained = PathEdit("pretrained checkpoint folder, or empty for scratch")
        self.pretrained.line.textChanged.connect(self._pretrained_changed)
        self.class_list = ClassPicker()
        self.class_list.setMaximumHeight(90)
        for widget in (self.class_list, self.pair_list):
            widget.setMinimumWidth(80)
        classes_row = self.class_list.with_merge_button()
        self.backbone = QComboBox()
        self.backbone.addItem("from the plan (device)", None)  # the CLI's default: the plan picks per device
        for size in BACKBONES:
            self.backbone.addItem(size, size)
        self.backbone.setCurrentIndex(0)
        self.backbone_note = QLabel("")
        self.backbone_note.setWordWrap(True)  # unwrapped, it widened the dock by ~50 px when a checkpoint arrived
        # the CLI's defaults: steps, patch, spacing and normalisation from the plan (shown when the run starts)
        self.steps = spin(0, 1_000_000, 0, 50, special="from the plan",
                          tip="optimisation steps; 'from the plan': 1000 on a CPU (2000 where it computes bfloat16), "
                          "4000 on CUDA")
        self.minutes = decimal_spin(0.0, 24 * 60.0, 0.0, 5.0, 1, special="no limit",
                                    tip="stop after this many minutes of training, saving as at the end")
        self.patch = spin(0, 256, 0, 16, special="from the plan",
                          tip="patch edge in voxels (multiple of 16); 'from the plan': sized from the data and device")
        self.fraction = decimal_spin(0.05, 1.0, 1.0, 0.05, tip="the share of the labelled cases to train on")
        from napari_ssl.training.config import HOLD_OUT_MIN_CASES, VAL_FRACTION

        self.held_out = QComboBox()  # the CLI's --val-fraction
        self.held_out.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.held_out.addItem(f"auto: none below {HOLD_OUT_MIN_CASES} cases", None)  # the tooltip says the rest
        self.held_out.addItem("none: every case trains", 0.0)
        for share in (0.1, 0.2, 0.3):
            self.held_out.addItem(f"{share:.0%} of the cases", share)
        self.held_out.setToolTip(
            f"cases held out to measure Dice and keep the best weights (one case: its last slices). Auto: none "
            f"below {HOLD_OUT_MIN_CASES} labelled cases, else {VAL_FRACTION:.0%}. None: every case "
            "trains and the last weights are kept; on ten BraTS cases that scored higher on unseen cases than holding "
            "two out, in 3 of 3 seeds (0.76-0.80 vs 0.68-0.75 Dice)")
        self.partial = QCheckBox("only painted slices are labelled")
        self.partial.setToolTip("slices (along the first axis) without any painted label are ignored by the loss "
                                "instead of taught as background: paint every 5th slice of a few scans")
        self.partial.toggled.connect(self._refresh_annotation)
        self.annotation_note = QLabel("")  # which slices of the chosen pair hold labels
        self.annotation_note.setWordWrap(True)
        self.annotation_note.setVisible(False)
        self._watched: Any = None  # the Labels layer whose painting refreshes the note
        self.threads = training_threads()
        self.device = QComboBox()
        fill_devices(self.device, self.threads)
        self.out = PathEdit("output folder")
        self.out.path = str(Path.home() / "napari-ssl-segmenter")

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("pretrained", self.pretrained)
        form.addRow("classes", classes_row)
        form.addRow("backbone", self.backbone)
        form.addRow("", self.backbone_note)
        form.addRow("steps", self.steps)
        form.addRow("minutes", self.minutes)
        form.addRow("patch", self.patch)
        form.addRow("label fraction", self.fraction)
        form.addRow("held out", self.held_out)
        form.addRow("annotations", self.partial)
        form.addRow("", self.annotation_note)
        form.addRow("device", self.device)
        form.addRow("output", self.out)

        title = QLabel("<b>Training pairs</b>: an Image and its Labels layer")
        title.setWordWrap(True)
        pairs_row = QHBoxLayout()
        pairs_row.addWidget(self.pair_list, 1)
        pairs_row.addWidget(remove, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(title)
        layout.addLayout(pair_row)
        layout.addLayout(pairs_row)
        layout.addWidget(self.image_dir)
        layout.addWidget(self.label_dir)
        layout.addWidget(self.folder_note)
        layout.addLayout(form)

        latest = checkpoint_hub().latest("pretrain")
        if latest:  # the checkpoint the Pretrain dock just wrote is the natural start
            self.pretrained.path = latest
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed, viewer.layers.events.renamed):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        self._pretrained_changed()

    def _pretrained_changed(self, *_: Any) -> None:
        """A pretrained checkpoint fixes the backbone: show the one that will run."""
        path = self.pretrained.path
        size = checkpoint_backbone(path)
        self.backbone.setEnabled(not path)
        if size in BACKBONES:
            self.backbone.setCurrentIndex(self.backbone.findData(size))
        self.backbone_note.setText(f"fixed by the pretrained checkpoint ({size})" if path and size else "")
        self.backbone_note.setVisible(bool(path and size))

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The added training pairs, as (image layers' names, labels layer name): ``("flair+t1+t1ce+t2", "seg")``."""
        return self.pair_list.names()

    def refresh_folder_note(self) -> None:
        """Say what the image folder holds for training: its cases and their channels, the cases left out."""
        text = ""
        try:
            found = folder_cases(self.image_dir.path, self.label_dir.path)
        except (ValueError, OSError) as exc:
            found, text = None, str(exc)
        if found is not None:
            text = found.describe()
            if found.skipped:
                text += " (" + "; ".join(f"{name}: {why}" for name, why in found.skipped) + ")"
        self.folder_note.setText(text)
        self.folder_note.setVisible(bool(text))

    def _refresh_layers(self, *_: Any) -> None:
        for image, labels in self.pair_list.refresh(list(self.viewer.layers)):
            show_info(f"Fine-tune: the pair {image} + {labels} went with its layer")
        for box, kind in ((self.image_box, "Image"), (self.label_box, "Labels")):
            current = box.currentText()
            box.blockSignals(True)
            box.clear()
            box.addItems([layer.name for layer in self.viewer.layers if layer.__class__.__name__ == kind])
            if current:
                box.setCurrentText(current)
            box.blockSignals(False)
        self._refresh_classes()
        self._refresh_annotation()

    def _refresh_annotation(self, *_: Any) -> None:
        """Say which slices of the chosen Labels layer hold labels, and whether the unpainted ones are ignored."""
        name = self.label_box.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401 (a LayerList)
        if self._watched is not None and self._watched is not layer:
            for event in ("paint", "data"):  # painting (or new data) changes which slices hold labels
                with contextlib.suppress(AttributeError, RuntimeError, TypeError, ValueError):
                    getattr(self._watched.events, event).disconnect(self._refresh_annotation)
            self._watched = None
        if layer is not None and self._watched is None and layer.__class__.__name__ == "Labels":
            for event in ("paint", "data"):
                if hasattr(layer.events, event):
                    getattr(layer.events, event).connect(self._refresh_annotation)
            self._watched = layer
        text = ""
        if layer is not None and np.ndim(layer.data) == 3:
            image_name = self.image_box.currentText()
            image = self.viewer.layers[image_name] if image_name in self.viewer.layers else None  # noqa: SIM401
            text = annotation_text(np.asarray(layer.data), None if image is None else np.asarray(image.data),
                                   self.partial.isChecked())
        self.annotation_note.setText(text)
        self.annotation_note.setVisible(bool(text))

    def _refresh_classes(self, *_: Any) -> None:
        """Offer the label values present in the chosen Labels layer (all ticked)."""
        name = self.label_box.currentText()
        if name in self.viewer.layers:
            self.class_list.show_layer(self.viewer.layers[name])

    def chosen_classes(self) -> tuple[str, ...]:
        """``NAME=ID+ID`` of every ticked class (``ID`` alone when it has no name)."""
        return self.class_list.chosen()

    def add_pair(self) -> None:
        image, labels = self.image_box.currentText(), self.label_box.currentText()
        if not image or not labels:
            active = self.viewer.layers.selection.active
            want = "image" if not image else "labels"
            problem = scan_problem(active, want=want, what="fine-tuning") if active is not None else None
            show_error(f"Fine-tune: {problem or 'pick an Image layer and a Labels layer'}")
            return
        for name, want in ((image, "image"), (labels, "labels")):
            problem = (scan_problem(self.viewer.layers[name], want=want, what="fine-tuning")
                       if name in self.viewer.layers else f"layer {name!r} is gone; pick another")
            if problem:
                show_error(f"Fine-tune: {problem}")
                return
        if self.viewer.layers[image].data.shape != self.viewer.layers[labels].data.shape:
            show_error(
                f"Fine-tune: {labels!r} {tuple(self.viewer.layers[labels].data.shape)} does not match "
                f"{image!r} {tuple(self.viewer.layers[image].data.shape)}; choose the labels of that scan"
            )
            return
        picked = self.viewer.layers[image]
        channels = case_layers(picked, self.viewer.layers) if self.modalities.isChecked() else [picked]
        problem = self._channel_problem(channels)
        if problem:
            show_error(f"Fine-tune: {problem}")
            return
        self.pair_list.add(channels, self.viewer.layers[labels])

    def _channel_problem(self, channels: Any) -> str | None:
        """Why a pair of these channels cannot join the pairs added (every pair the same number of channels)."""
        if self.pair_list.pairs and len(self.pair_list.pairs[0][0]) != len(channels):
            first = self.pair_list.pairs[0][0]
            return (f"{channels_text(channels)} is {len(channels)} channel(s) and the pairs added are {len(first)} "
                    f"({channels_text(first)}); every pair needs the same channels")
        return None

    def _remove_pair(self) -> None:
        self.pair_list.remove_current()

    def collect(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~napari_ssl.training.finetune.FinetuneConfig`, checked (GUI thread, no torch).

        Raises
        ------
        ValueError, FileNotFoundError
            No training data, a layer gone or unusable, no class ticked, a missing pretrained folder.
        """
        from napari_ssl import checkpoint
        from napari_ssl._napari.layers import layer_to_volume
        from napari_ssl.training.cases import file_classes

        pairs = []
        for channels, labels in self.pair_list.pairs:
            for layer, want in [*((c, "image") for c in channels), (labels, "labels")]:
                if not holds(self.viewer.layers, layer):
                    raise ValueError(f"layer {layer.name!r} is gone; remove its pair")
                problem = scan_problem(layer, want=want, what="fine-tuning")
                if problem:
                    raise ValueError(problem)
            # no copy here: the relay writes the arrays to the child's input file off the GUI thread
            image = layer_to_volume(channels[0]) if len(channels) == 1 else tuple(layer_to_volume(c) for c in channels)
            pairs.append((image, layer_to_volume(labels)))
        images: tuple[str, ...] = ()
        labels_: tuple[str, ...] = ()
        found = folder_cases(self.image_dir.path, self.label_dir.path)
        if found is not None:
            images, labels_ = found.images, found.labels
        elif self.image_dir.path or self.label_dir.path:
            images, labels_ = folder_pairs(self.image_dir.path or "", self.label_dir.path or "")
        counts = {len(c) for c, _ in self.pair_list.pairs} | {len(item.split(",")) for item in images}
        if len(counts) > 1:
            raise ValueError(f"every case needs the same number of channels; the pairs and folders give "
                             f"{', '.join(map(str, sorted(counts)))}")
        if not pairs and not images:
            raise ValueError("no training data: add an image + labels pair, or choose a folder of case folders "
                             "(or a folder of scans and one of their label files)")
        classes = self.chosen_classes()
        if pairs and not classes:
            raise ValueError("tick at least one class to learn")
        if not classes:  # folders alone: the classes their first label file offers (whole tumour for BraTS)
            classes = file_classes(labels_[0])
        pretrained = self.pretrained.path
        if pretrained:
            if not Path(pretrained).is_dir():
                raise FileNotFoundError(f"pretrained folder {pretrained} does not exist")
            checkpoint.open_checkpoint(pretrained)  # a foreign folder is refused now, not by the child
        if not self.out.path:
            raise ValueError("choose an output folder")
        return {
            "images": images, "labels": labels_, "pairs": tuple(pairs), "classes": classes,
            "pretrained": pretrained, "out": self.out.path, "steps": self.steps.value() or None,
            "minutes": self.minutes.value() or None,
            "backbone": None if pretrained else self.backbone.currentData(), "patch_size": self.patch.value() or None,
            "label_fraction": self.fraction.value(), "val_fraction": self.held_out.currentData(),
            "annotated": "slices" if self.partial.isChecked() else "all",
            "device": self.device.currentData() or "auto",
            "num_threads": self.threads,
        }
