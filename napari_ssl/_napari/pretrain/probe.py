"""Event-loop stall probe: a ``QTimer`` that measures how late the GUI thread serves it.

A timer asks to fire every ``interval_ms``; each time it fires, the time since the previous firing minus the
interval is how long the event loop was busy elsewhere (a *stall*). Used by the Pretrain dock's tests and by
``benchmarks/bench_gui.py`` to show that training in the child process leaves the viewer responsive.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, Qt, QTimer

__all__ = ["StallProbe"]


class StallProbe(QObject):
    """Measure event-loop stalls (ms) between :meth:`start` and :meth:`stop`.

    Parameters
    ----------
    interval_ms : int
        Timer period; stalls shorter than the timer's own jitter (~1 ms) are noise.
    """

    def __init__(self, interval_ms: int = 10, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.interval_ms = int(interval_ms)
        self.gaps_ms: list[float] = []
        self.at: list[float] = []  # perf_counter() at the start of each gap
        self._last: float | None = None
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(self.interval_ms)
        self._timer.timeout.connect(self._tick)

    def start(self) -> StallProbe:
        self.gaps_ms.clear()
        self.at.clear()
        self._last = time.perf_counter()
        self._timer.start()
        return self

    def stop(self) -> StallProbe:
        self._timer.stop()
        self._last = None
        return self

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps_ms.append(max(0.0, (now - self._last) * 1000.0 - self.interval_ms))
            self.at.append(self._last)
        self._last = now

    @property
    def stalls_ms(self) -> np.ndarray:
        return np.asarray(self.gaps_ms, dtype=float)

    def worst(self, n: int = 5) -> list[tuple[float, float]]:
        """The ``n`` longest stalls as ``(perf_counter at their start, ms)``, longest first."""
        order = np.argsort(self.stalls_ms)[::-1][:n]
        return [(self.at[i], self.gaps_ms[i]) for i in order]

    def stats(self) -> dict[str, float]:
        """``{"n", "p50", "p99", "max"}`` of the stalls in ms (zeros when nothing was measured)."""
        return stall_stats(self.gaps_ms)


def stall_stats(gaps_ms: Any) -> dict[str, float]:
    """``{"n", "p50", "p99", "max"}`` of stalls in ms (zeros when there are none)."""
    s = np.asarray(gaps_ms, dtype=float)
    if s.size == 0:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    return {
        "n": int(s.size),
        "p50": float(np.percentile(s, 50)),
        "p99": float(np.percentile(s, 99)),
        "max": float(s.max()),
    }
