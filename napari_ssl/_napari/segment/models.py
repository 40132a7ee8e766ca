"""The Segment dock's model list: models the Fine-tune dock published, the recent ones, then the bundled ones.

An editable combo box: the user may type a folder or a bundled model's name (``phantom-demo``). A bundled model is
listed by its name and says it is a demonstration model; its folder inside the package is the item's data, so the
list reads the same wherever napari-ssl is installed.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QWidget

from napari_ssl._napari.hub import checkpoint_hub
from napari_ssl._napari.segment.info import recent_models
from napari_ssl.inference.bundled import BUNDLED, DEMO_DESCRIPTION, bundled_path, resolve_model

__all__ = ["ModelBox"]


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
