"""The Fine-tune dock: train a segmenter from image / label layer pairs (or folder pairs) in a child process.

Like the Pretrain dock, the run (:func:`napari_ssl.engine.finetune`) happens in a spawned child through the
engine's :class:`~napari_ssl._napari.relay.Relay`; the dock shows progress, the loss and the held-out Dice per
class live (:class:`~napari_ssl._napari.plot.CurvePlot`), and Cancel saves a valid checkpoint. A finished model
is offered to the Segment dock (its recent models) and can be loaded there at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_ssl._napari.plot import CurvePlot
from napari_ssl._napari.relay import Relay, RunFailed

if TYPE_CHECKING:
    import napari

__all__ = ["FinetuneDock", "make_finetune_dock"]

TARGET = "napari_ssl.engine:finetune"


def _folder_pairs(images: str, labels: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Scans in ``images`` paired with the label file of the same name in ``labels``."""
    from napari_ssl.io import find_scans

    found = {p.name: p for p in find_scans(labels)}
    imgs, labs = [], []
    for scan in find_scans(images):
        if scan.name in found:
            imgs.append(str(scan))
            labs.append(str(found[scan.name]))
    if not imgs:
        raise ValueError(f"no scan in {images} has a label file of the same name in {labels}")
    return tuple(imgs), tuple(labs)


class FinetuneDock(QWidget):
    """The Fine-tune dock (see the module docstring); ``relay`` is the running job."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.relay: Relay | None = None
        self.last_path: str | None = None
        self.pairs: list[tuple[str, str]] = []

        self.image_box, self.label_box = QComboBox(), QComboBox()
        add = QPushButton("Add pair")
        add.clicked.connect(self.add_pair)
        self.pair_list = QListWidget()
        self.pair_list.setMaximumHeight(70)
        remove = QPushButton("Remove")
        remove.clicked.connect(self._remove_pair)
        self.image_dir, self.label_dir = QLineEdit(), QLineEdit()
        self.image_dir.setPlaceholderText("or a folder of scans")
        self.label_dir.setPlaceholderText("and a folder of label files (same names)")
        pair_row = QHBoxLayout()
        pair_row.addWidget(self.image_box)
        pair_row.addWidget(self.label_box)
        pair_row.addWidget(add)

        self.pretrained = QLineEdit()
        self.pretrained.setPlaceholderText("pretrained checkpoint folder, or empty for scratch")
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse_pretrained)
        pre_row = QHBoxLayout()
        pre_row.addWidget(self.pretrained, 1)
        pre_row.addWidget(browse)
        self.classes = QLineEdit()
        self.classes.setPlaceholderText("e.g. 1   or   liver,spleen   or   whole_tumor=1+2+4")
        self.classes_file = QLineEdit()
        self.classes_file.setPlaceholderText("classes.json (for names)")
        self.backbone = QComboBox()
        for size in ("tiny", "small", "medium", "large"):
            self.backbone.addItem(size, size)
        self.backbone.setCurrentIndex(1)
        self.steps = QSpinBox()
        self.steps.setRange(1, 1_000_000)
        self.steps.setValue(500)
        self.patch = QSpinBox()
        self.patch.setRange(32, 256)
        self.patch.setSingleStep(16)
        self.patch.setValue(48)
        self.fraction = QDoubleSpinBox()
        self.fraction.setRange(0.05, 1.0)
        self.fraction.setSingleStep(0.05)
        self.fraction.setValue(1.0)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu"])
        self.out = QLineEdit(str(Path.home() / "napari-ssl-segmenter"))

        form = QFormLayout()
        form.addRow("pretrained", pre_row)
        form.addRow("classes", self.classes)
        form.addRow("classes file", self.classes_file)
        form.addRow("backbone", self.backbone)
        form.addRow("steps", self.steps)
        form.addRow("patch", self.patch)
        form.addRow("label fraction", self.fraction)
        form.addRow("device", self.device)
        form.addRow("output", self.out)

        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.loss_plot = CurvePlot(ylabel="loss", title="DiceCE loss")
        self.dice_plot = CurvePlot(ylabel="Dice", ylim=(0.0, 1.0), title="held-out Dice")

        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Training pairs</b> (image layer, labels layer)"))
        layout.addLayout(pair_row)
        layout.addWidget(self.pair_list)
        layout.addWidget(remove)
        layout.addWidget(self.image_dir)
        layout.addWidget(self.label_dir)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.loss_plot)
        layout.addWidget(self.dice_plot)
        layout.addStretch(1)

        try:  # a checkpoint the Pretrain dock just wrote is the natural starting point
            from napari_ssl._napari.pretrain import checkpoint_hub

            hub = checkpoint_hub()
            hub.published.connect(self.pretrained.setText)
            if hub.latest:
                self.pretrained.setText(hub.latest)
        except ImportError:  # pragma: no cover
            pass
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------ inputs
    def _refresh_layers(self, *_: Any) -> None:
        from napari.layers import Image, Labels

        for box, kind in ((self.image_box, Image), (self.label_box, Labels)):
            current = box.currentText()
            box.clear()
            box.addItems([layer.name for layer in self.viewer.layers if isinstance(layer, kind)])
            if current:
                box.setCurrentText(current)

    def add_pair(self) -> None:
        image, labels = self.image_box.currentText(), self.label_box.currentText()
        if not image or not labels:
            show_warning("Fine-tune: pick an Image layer and a Labels layer")
            return
        self.pairs.append((image, labels))
        self.pair_list.addItem(f"{image}  +  {labels}")

    def _remove_pair(self) -> None:
        row = self.pair_list.currentRow()
        if row >= 0:
            self.pair_list.takeItem(row)
            del self.pairs[row]

    def _browse_pretrained(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Pretrained checkpoint", self.pretrained.text())
        if folder:
            self.pretrained.setText(folder)

    def make_config(self) -> Any:
        """The :class:`~napari_ssl.finetune.FinetuneConfig` of the form (layers are copied, never modified)."""
        from napari_ssl._napari.layers import layer_to_volume
        from napari_ssl.finetune import FinetuneConfig

        pairs = []
        for image, labels in self.pairs:
            if image not in self.viewer.layers or labels not in self.viewer.layers:
                raise ValueError(f"layer {image if image not in self.viewer.layers else labels!r} is gone")
            img, lab = layer_to_volume(self.viewer.layers[image]), layer_to_volume(self.viewer.layers[labels])
            pairs.append((img.with_array(img.array.copy()), lab.with_array(lab.array.copy())))
        images: tuple[str, ...] = ()
        labels_: tuple[str, ...] = ()
        if self.image_dir.text().strip() or self.label_dir.text().strip():
            images, labels_ = _folder_pairs(self.image_dir.text().strip(), self.label_dir.text().strip())
        return FinetuneConfig(
            images=images, labels=labels_, pairs=tuple(pairs), classes=self.classes.text(),
            classes_file=self.classes_file.text().strip() or None, pretrained=self.pretrained.text().strip() or None,
            out=self.out.text().strip(), steps=self.steps.value(),
            backbone=None if self.pretrained.text().strip() else self.backbone.currentData(),
            patch_size=self.patch.value(), label_fraction=self.fraction.value(), device=self.device.currentText(),
            val_every=max(1, self.steps.value() // 10),
        )

    # ------------------------------------------------------------ run
    def start(self) -> Relay | None:
        """Start fine-tuning in a child process; returns the relay (None when the form is refused)."""
        if self.relay is not None:
            show_warning("Fine-tune: a run is already going")
            return None
        try:
            config = self.make_config()
        except (ValueError, OSError) as exc:
            show_error(f"Fine-tune: {exc}")
            return None
        relay = Relay(TARGET, config, label="Fine-tuning")
        relay.worker.yielded.connect(self._on_event)
        relay.worker.errored.connect(self._on_error)
        relay.worker.finished.connect(self._on_finished)
        self.relay = relay
        self.loss_plot.clear()
        self.dice_plot.clear()
        self.loss_plot.set_xrange(0, config.steps)
        self.dice_plot.set_xrange(0, config.steps)
        self.progress.setRange(0, config.steps)
        self.progress.setValue(0)
        self.status.setText("starting...")
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        relay.start()
        return relay

    def cancel(self) -> None:
        """Stop the run; the child saves a checkpoint of the steps done."""
        if self.relay is not None:
            self.relay.stop()
            self.status.setText("stopping (saving)...")

    def _on_event(self, event: Any) -> None:
        from napari_ssl.events import Finished, Progress, Started, Stopped
        from napari_ssl.finetune import Validated

        if isinstance(event, Started):
            self.status.setText(f"training on {event.device}: {event.n_train} case(s), {event.n_val} held out")
        elif isinstance(event, Progress):
            self.progress.setValue(event.step)
            self.loss_plot.add("loss", event.step, event.loss)
        elif isinstance(event, Validated):
            self.dice_plot.add_many(event.step, event.dice)
            self.status.setText(f"step {event.step}: Dice " + ", ".join(f"{k} {v:.3f}" for k, v in event.dice.items()))
        elif isinstance(event, Finished):
            self.last_path = event.path
            self._offer(event.path)
            show_info(f"Fine-tune: finished; model in {event.path}")
        elif isinstance(event, Stopped):
            self.last_path = event.path
            self.status.setText(f"cancelled; checkpoint in {event.path}")
            self._offer(event.path)

    def _offer(self, path: str | None) -> None:
        if not path or not Path(path).is_dir():
            return
        from napari_ssl._napari.segment import remember_model

        remember_model(path)

    def _on_error(self, exc: Exception) -> None:
        self.status.setText("failed")
        show_error(str(exc) if isinstance(exc, RunFailed) else f"Fine-tune failed: {exc}")

    def _on_finished(self) -> None:
        self.relay = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def closeEvent(self, event: Any) -> None:
        if self.relay is not None:
            self.relay.shutdown()
        super().closeEvent(event)


def make_finetune_dock(viewer: napari.viewer.Viewer) -> FinetuneDock:
    """npe2 widget command: the Fine-tune dock for ``viewer``."""
    return FinetuneDock(viewer)
