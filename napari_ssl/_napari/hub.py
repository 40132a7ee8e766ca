"""The checkpoint hub: where every dock offers the checkpoints it wrote and learns of the others' (no dock
imports another dock).

``checkpoint_hub().published`` is a Qt signal ``(path, kind)`` with ``kind`` ``"pretrain"`` or ``"segment"``;
``checkpoint_hub().latest(kind)`` is the last one of that kind. The Pretrain dock publishes pretraining
checkpoints (the Fine-tune dock offers them as its starting point); the Fine-tune dock publishes segmenters
(the Segment dock lists them at once).
"""

from __future__ import annotations

from qtpy.QtCore import QObject, Signal

__all__ = ["KINDS", "CheckpointHub", "checkpoint_hub"]

KINDS = ("pretrain", "segment")


class CheckpointHub(QObject):
    """Checkpoints written by the docks since napari opened: connect ``published(str path, str kind)``."""

    published = Signal(str, str)

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[str, str]] = []

    def paths(self, kind: str) -> list[str]:
        """Published folders of ``kind``, oldest first."""
        return [p for p, k in self.items if k == kind]

    def latest(self, kind: str) -> str | None:
        found = self.paths(kind)
        return found[-1] if found else None

    def publish(self, path: str, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
        self.items.append((str(path), kind))
        self.published.emit(str(path), kind)


_HUB: CheckpointHub | None = None


def checkpoint_hub() -> CheckpointHub:
    """The application-wide :class:`CheckpointHub`."""
    global _HUB
    if _HUB is None:
        _HUB = CheckpointHub()
    return _HUB
