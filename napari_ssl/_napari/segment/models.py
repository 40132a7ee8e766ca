"""The Segment dock's *Model* section: the model list, *Choose…*, what the chosen model is, and its trust box.

- :class:`ModelBox`, the list: models the Fine-tune dock published, the recent ones, then the bundled ones. An
  editable combo box: the user may type a folder or a bundled model's name (``phantom-demo``). A bundled model is
  listed by its name and says it is a demonstration model; its folder inside the package is the item's data, so the
  list reads the same wherever napari-ssl is installed.
- :class:`ModelPicker`, the section: the list, *Choose…*, the chosen model's summary, and "I trust this model" with
  the reason, shown only for a format whose loading runs code stored with the model; the tick is given to one model
  and never carried to the next.
"""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_ssl._napari.hub import checkpoint_hub
from napari_ssl._napari.segment.info import ModelInfo, model_root, recent_models
from napari_ssl.inference.bundled import BUNDLED, DEMO_DESCRIPTION, bundled_path, resolve_model

__all__ = ["ModelBox", "ModelPicker"]


class ModelBox(QComboBox):
    """The model picker; ``first_launch`` is true when nothing but the bundled models is listed."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setEditable(True)
        self.setMinimumContentsLength(12)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setToolTip("fine-tuned checkpoint folder (model.safetensors + meta.json), or a bundled model's name")
        for path in [*reversed(checkpoint_hub().paths("segment")), *recent_models()]:
            if self.findText(path) < 0:
                self.addItem(path)
        self.first_launch = self.count() == 0
        for name in BUNDLED:
            self.addItem(f"{name} (demonstration model)", str(bundled_path(name)))
            self.setItemData(self.count() - 1, DEMO_DESCRIPTION, Qt.ItemDataRole.ToolTipRole)
        self.setCurrentIndex(-1)

    def bundled_paths(self) -> list[str]:
        """The bundled models' folders, in list order."""
        return [str(self.itemData(i)) for i in range(self.count()) if self.itemData(i)]

    def path_of(self, text: str | None = None) -> str:
        """The folder ``text`` (default: the box's text) names: a listed item's folder, a bundled model's name,
        or a path; ``""`` for no text."""
        text = (self.currentText() if text is None else text).strip()
        index = self.findText(text)
        data = self.itemData(index) if index >= 0 else None
        return str(data) if data else str(resolve_model(text)) if text else ""

    def select(self, path: str) -> None:
        """Show ``path`` as the choice: its listed item (a bundled model's by name), else a new first item."""
        for i in range(self.count()):
            if (self.itemData(i) or self.itemText(i)) == path:
                self.setCurrentIndex(i)
                if self.itemData(i) and self.lineEdit() is not None:
                    self.lineEdit().setCursorPosition(0)  # the name first, not the end of a narrow box's text
                return
        self.insertItem(0, path)
        self.setCurrentIndex(0)


class ModelPicker(QWidget):
    """The *Model* section; ``chosen`` carries a model the user picked in the list or with *Choose…* (not yet
    read)."""

    chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model_box = ModelBox()
        self.model_box.activated.connect(lambda _=0: self.chosen.emit(self.model_box.currentText()))
        self.browse = QPushButton("Choose…")
        self.browse.setToolTip("a napari-ssl checkpoint (its meta.json), an nnU-Net results folder (its dataset.json), "
                               "a MONAI bundle (configs/metadata.json) or a TorchScript file (.ts, .pt)")
        self.browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.model_box, 1)
        row.addWidget(self.browse)
        self.info_label = QLabel("no model chosen")
        self.info_label.setWordWrap(True)
        self.trust = QCheckBox("I trust this model")
        self.trust.setVisible(False)
        self.trust_reason = QLabel("")  # the reason wraps: a check box's own text would widen the dock to its length
        self.trust_reason.setWordWrap(True)
        self.trust_reason.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("<b>Model</b>"))
        layout.addLayout(row)
        layout.addWidget(self.info_label)
        layout.addWidget(self.trust)
        layout.addWidget(self.trust_reason)

    def show_model(self, info: ModelInfo) -> None:
        """``info``'s model as the choice: selected in the list, its summary, the trust box when it needs one."""
        self.model_box.select(info.path)
        self.info_label.setText(info.summary())
        if self.trust.property("model") != info.path:  # trust is given to one model, never carried to the next
            self.trust.setChecked(False)
            self.trust.setProperty("model", info.path)
        self.trust.setVisible(info.needs_trust)
        self.trust_reason.setVisible(info.needs_trust)
        reason = info.segmenter.trust_reason.strip().rstrip(".")
        self.trust_reason.setText(f'<span style="color:#f0a030">Why it asks: {reason}.</span>' if reason else "")
        self.trust.setToolTip(reason)

    def trusted(self, info: ModelInfo) -> bool:
        """Whether the user ticked "I trust this model" for ``info``'s model (needed only when it asks)."""
        return self.trust.isChecked() and self.trust.property("model") == info.path

    def _browse(self) -> None:  # pragma: no cover - modal dialog
        chosen, _ = QFileDialog.getOpenFileName(
            self, "Choose a model", self.model_box.currentText(),
            "Models (meta.json dataset.json plans.json metadata.json *.ts *.pt);;All files (*)",
        )
        if chosen:
            self.chosen.emit(model_root(chosen))
