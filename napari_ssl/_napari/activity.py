"""Long jobs also shown in napari's activity dock (``napari.utils.progress``), updated from the docks' throttled
timer slots only. Opt-in (``NAPARI_SSL_ACTIVITY=1``): napari's animated activity indicator stalls the event loop
(measured with benchmarks/bench_gui.py: stalls p50 0.2 -> 35 ms, p99 31 -> 141 ms while training)."""

from __future__ import annotations

from typing import Any

__all__ = ["Activity"]


class Activity:
    """One entry of napari's activity dock: ``set(value, total)`` then ``close()`` (idempotent)."""

    def __init__(self, desc: str, total: int | None = None) -> None:
        import os

        from napari.utils import progress

        # off unless NAPARI_SSL_ACTIVITY=1: napari's activity indicator animates while a job runs, and that
        # repaint took the viewer's event-loop stalls from p50 0.2 ms to 35 ms (p99 31 -> 141 ms) in bench_gui
        wanted = os.environ.get("NAPARI_SSL_ACTIVITY", "0") == "1"
        self.bar: Any = progress(total=total, desc=desc) if wanted else None

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
