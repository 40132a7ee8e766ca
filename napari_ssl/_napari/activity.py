"""Long jobs also shown in napari's activity dock (``napari.utils.progress``), updated from the docks' throttled
timer slots only (every update repaints it)."""

from __future__ import annotations

from typing import Any

__all__ = ["Activity"]


class Activity:
    """One entry of napari's activity dock: ``set(value, total)`` then ``close()`` (idempotent)."""

    def __init__(self, desc: str, total: int | None = None) -> None:
        from napari.utils import progress

        self.bar: Any = progress(total=total, desc=desc)

    def set(self, value: int, total: int | None = None, desc: str | None = None) -> None:
        if self.bar is None:
            return
        if total is not None and total != self.bar.total:
            self.bar.total = total
        if desc is not None:
            self.bar.set_description(desc)
        delta = int(value) - int(self.bar.n)
        if delta:
            self.bar.update(delta)

    def close(self) -> None:
        if self.bar is not None:
            bar, self.bar = self.bar, None
            bar.close()
