"""Where the Pretrain dock offers finished checkpoints to other docks (the fine-tuning section listens).

``checkpoint_hub().published`` is a Qt signal carrying the checkpoint folder; ``checkpoint_hub().latest`` is the
last one. Also importable as ``napari_ssl._napari.pretrain.checkpoint_hub``.
"""

from __future__ import annotations

from qtpy.QtCore import QObject, Signal

__all__ = ["CheckpointHub", "checkpoint_hub"]


class CheckpointHub(QObject):
    """Where pretrained checkpoints are offered to other docks: connect ``published(str path)``."""

    published = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    @property
    def latest(self) -> str | None:
        return self.paths[-1] if self.paths else None

    def publish(self, path: str) -> None:
        self.paths.append(str(path))
        self.published.emit(str(path))


_HUB: CheckpointHub | None = None


def checkpoint_hub() -> CheckpointHub:
    """The application-wide :class:`CheckpointHub` (the fine-tuning dock listens to it)."""
    global _HUB
    if _HUB is None:
        _HUB = CheckpointHub()
    return _HUB
