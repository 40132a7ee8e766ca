"""Live training curves (loss per pretext, Dice per class, ...) in a small matplotlib canvas.

:class:`CurvePlot` is a ``QWidget`` holding a ``FigureCanvasQTAgg``. Points are appended from GUI-thread slots
(:meth:`CurvePlot.add` / :meth:`CurvePlot.add_many`); redraws are coalesced by a timer (at most ``max_fps``
a second) and cheap: the axes, ticks and labels are drawn once into a cached background and each update only
blits the lines. A full redraw happens only when a point leaves the current limits (the y range then grows
with a margin; the x range is set from the run's budget with :meth:`CurvePlot.set_xrange`, or doubles).
On a busy 2-core CPU a full matplotlib draw costs 100-300 ms, a blit a few ms: that is the difference
between a stuttering and a fluid viewer. Used by the Pretrain dock (losses) and the Fine-tune dock (loss and
held-out Dice)::

    plot = CurvePlot(ylabel="loss")
    plot.set_xrange(0, 1000)
    plot.add("loss", step, 2.31)
    dice = CurvePlot(ylabel="Dice", ylim=(0, 1), xlabel="epoch")
    dice.add_many(epoch, {"liver": 0.81, "spleen": 0.66})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

__all__ = ["DARK", "CurvePlot"]

#: dark defaults matching napari's default theme
DARK = {"background": "#262930", "axes": "#262930", "text": "#f0f1f2", "grid": "#414851"}
#: line colours (matplotlib's tab10, readable on the dark background)
PALETTE = ("#4c9be8", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#edc948", "#76b7b2", "#ff9da7", "#9c755f")
#: above this many points a series is shown decimated (every value is kept)
MAX_SHOWN = 2000


class CurvePlot(QWidget):
    """A live line plot of named series against a step / epoch axis.

    Parameters
    ----------
    xlabel, ylabel : str
        Axis labels.
    title : str
        Shown above the canvas with the coloured legend (a Qt label: costs nothing to redraw).
    logy : bool
        Logarithmic y axis (non-positive values are skipped).
    ylim : (float, float), optional
        Fixed y range (e.g. ``(0, 1)`` for Dice); otherwise it grows to fit the data.
    max_fps : float
        Upper bound on redraws per second.
    auto : bool
        Redraw on a timer after new points; ``False``: the owner calls :meth:`redraw` (e.g. in the same
        timer tick as its labels, so Qt repaints the window once: with napari's OpenGL canvas in the window,
        every separate repaint of a dock widget recomposites the whole window, ~20 ms in software GL).
    colors : mapping, optional
        Overrides of :data:`DARK` (``background``, ``axes``, ``text``, ``grid``), e.g. from the napari theme.
    series_colors : mapping, optional
        A fixed colour per series name (the Pretrain dock: one per pretext, the same after Resume).
    height : int
        Height of the canvas in pixels (fixed: a resize would force a full redraw).
    parent : QWidget, optional

    Attributes
    ----------
    full_draws, blits : int
        How many full redraws and line-only blits happened (tests and benchmarks read them).
    """

    def __init__(
        self,
        *,
        xlabel: str = "step",
        ylabel: str = "loss",
        title: str = "",
        logy: bool = False,
        ylim: tuple[float, float] | None = None,
        max_fps: float = 4.0,
        auto: bool = True,
        colors: Mapping[str, str] | None = None,
        series_colors: Mapping[str, str] | None = None,
        height: int = 150,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.colors = {**DARK, **dict(colors or {})}
        self.series_colors = dict(series_colors or {})
        self.title = title
        self.logy = bool(logy)
        self.fixed_ylim = ylim
        self.auto = bool(auto)
        self.full_draws = 0
        self.blits = 0
        self._data: dict[str, tuple[list[float], list[float]]] = {}
        self._lines: dict[str, Any] = {}
        self._dirty = False
        self._background: Any = None
        self._xrange: tuple[float, float] | None = None

        self.figure = Figure(figsize=(3.2, 2.0), dpi=90, facecolor=self.colors["background"])
        self.figure.subplots_adjust(left=0.15, right=0.97, bottom=0.2, top=0.95)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setFixedHeight(int(height))  # a canvas resize forces a full redraw: keep it stable while running
        self.axes = self.figure.add_subplot(111)
        self._style_axes(xlabel, ylabel)
        self.canvas.mpl_connect("draw_event", self._on_full_draw)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self._update_legend()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.legend)
        layout.addWidget(self.canvas)

        # the first draw of a figure loads fonts and fills text caches (2-3x a normal draw): pay it now, when
        # the dock opens, rather than in the middle of a run
        self.figure.canvas.draw()

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(max(10, int(1000 / max(max_fps, 0.1))))
        self._timer.timeout.connect(self.redraw)

    def _style_axes(self, xlabel: str, ylabel: str) -> None:
        ax, c = self.axes, self.colors
        ax.set_facecolor(c["axes"])
        ax.set_xlabel(xlabel, color=c["text"], fontsize=8, labelpad=1)
        ax.set_ylabel(ylabel, color=c["text"], fontsize=8, labelpad=1)
        ax.tick_params(colors=c["text"], labelsize=7, length=2, pad=1)
        ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
        if not self.logy:
            ax.yaxis.set_major_locator(MaxNLocator(4))
        for spine in ax.spines.values():
            spine.set_color(c["grid"])
        ax.grid(True, color=c["grid"], linewidth=0.5)
        if self.logy:
            ax.set_yscale("log")
        ax.set_xlim(0, 10)
        ax.set_ylim(*(self.fixed_ylim or ((0.1, 1.0) if self.logy else (0.0, 1.0))))

    # ------------------------------------------------------------ data
    @property
    def names(self) -> list[str]:
        """Series names in the order they first appeared."""
        return list(self._data)

    def series(self, name: str) -> tuple[list[float], list[float]]:
        """Copies of the ``(x, y)`` values of series ``name``."""
        xs, ys = self._data[name]
        return list(xs), list(ys)

    def __len__(self) -> int:
        """Total number of points over all series."""
        return sum(len(xs) for xs, _ in self._data.values())

    def add(self, name: str, x: float, y: float) -> None:
        """Append one point to series ``name`` (created on first use); non-finite values are skipped."""
        y = float(y)
        if not math.isfinite(y) or (self.logy and y <= 0):
            return
        if name not in self._data:
            self._data[name] = ([], [])
            self._update_legend()
        xs, ys = self._data[name]
        xs.append(float(x))
        ys.append(y)
        self._schedule()

    def add_many(self, x: float, values: Mapping[str, float]) -> None:
        """Append one point to each series named in ``values`` at the same ``x``."""
        for name, y in values.items():
            self.add(name, x, y)

    def set_series(self, name: str, xs: Sequence[float], ys: Sequence[float]) -> None:
        """Replace a whole series (e.g. the loss history of a resumed checkpoint)."""
        pairs = [
            (float(a), float(b))
            for a, b in zip(xs, ys, strict=True)
            if math.isfinite(b) and (b > 0 or not self.logy)
        ]
        new = name not in self._data
        self._data[name] = ([a for a, _ in pairs], [b for _, b in pairs])
        if new:
            self._update_legend()
        self._schedule()

    @property
    def xrange(self) -> tuple[float, float] | None:
        """The fixed x range (None: fitted to the data)."""
        return self._xrange

    def set_xrange(self, lo: float, hi: float) -> None:
        """Fix the x range (e.g. ``0 .. total steps``) so the axes need no redraw while the run advances."""
        self._xrange = (float(lo), float(max(hi, lo + 1)))
        self._schedule()

    def clear(self) -> None:
        """Remove every series (the axes and labels stay)."""
        if not self._data and not self._lines:
            self._xrange = None
            return
        self._data.clear()
        for line in self._lines.values():
            line.remove()
        self._lines.clear()
        self._xrange = None
        self._update_legend()
        self._schedule(full=True)

    def color(self, name: str) -> str:
        """The series' colour: fixed by ``series_colors`` (e.g. one per pretext), else by order of appearance."""
        if name in self.series_colors:
            return self.series_colors[name]
        free = [c for c in PALETTE if c not in self.series_colors.values()] or list(PALETTE)
        others = [n for n in self.names if n not in self.series_colors]
        return free[others.index(name) % len(free)] if name in others else free[0]

    def _update_legend(self) -> None:
        items = [f'<span style="color:{self.color(n)}">&#9473;&#9473; {n}</span>' for n in self.names]
        head = f"<b>{self.title}</b>&nbsp;&nbsp;" if self.title else ""
        self.legend.setText(head + "&nbsp;&nbsp;".join(items))

    # ------------------------------------------------------------ drawing
    def _schedule(self, full: bool = False) -> None:
        self._dirty = True
        if full:
            self._background = None
        if self.auto and not self._timer.isActive():
            self._timer.start()

    def _wanted_limits(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """New (xlim, ylim) when some point lies outside the current ones, else ``None``."""
        ax = self.axes
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        xs = [x for values, _ in self._data.values() for x in values[-1:]] + [0.0]
        ys = [y for _, values in self._data.values() for y in values]
        xlim = self._xrange or (0.0, x1)
        if not self._xrange and max(xs) > x1:
            xlim = (0.0, max(10.0, 2 ** math.ceil(math.log2(max(xs) * 1.25))))
        ylim = (y0, y1)
        if ys and self.fixed_ylim is None:
            lo, hi = min(ys), max(ys)
            if lo < y0 or hi > y1 or not self._lines:
                # generous margins: every full redraw costs the event loop 100-300 ms on a busy CPU
                if self.logy:
                    ylim = (lo / 2.0, hi * 2.0)
                else:
                    span = max(hi - lo, 0.5 * max(abs(hi), abs(lo)), 1e-6)
                    ylim = (lo - 0.3 * span, hi + 0.3 * span)
                    if lo >= 0:  # losses, Dice: from zero, so a falling curve never forces a redraw
                        ylim = (0.0, ylim[1])
        if xlim != (x0, x1) or ylim != (y0, y1):
            return xlim, ylim
        return None

    def redraw(self) -> None:
        """Push the data to the lines and repaint: blit the lines, or redraw everything when limits change."""
        if not self._dirty:
            return
        self._dirty = False
        ax = self.axes
        for name, (xs, ys) in self._data.items():
            step = max(1, len(xs) // MAX_SHOWN)
            line = self._lines.get(name)
            if line is None:
                (line,) = ax.plot(
                    xs[::step], ys[::step], linewidth=1.3, color=self.color(name), animated=True
                )
                self._lines[name] = line
            else:
                line.set_data(xs[::step], ys[::step])
        limits = self._wanted_limits()
        if limits is not None:
            ax.set_xlim(*limits[0])
            ax.set_ylim(*limits[1])
            self._background = None
        if not self.canvas.isVisible():  # nothing to paint; showEvent redraws
            self._background = None
        elif self._background is None:
            self.canvas.draw_idle()  # full draw; _on_full_draw stores the background and draws the lines
        else:
            self._blit()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self._schedule(full=True)

    def _on_full_draw(self, _event: Any) -> None:
        self.full_draws += 1
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._draw_lines()

    def _draw_lines(self) -> None:
        for line in self._lines.values():
            self.axes.draw_artist(line)

    def _blit(self) -> None:
        self.canvas.restore_region(self._background)
        self._draw_lines()
        # update(), not matplotlib's blit() (a synchronous repaint): Qt then paints this together with the
        # other widgets changed in the same event-loop pass, one window composite instead of several
        self.canvas.update()
        self.blits += 1

    def flush(self) -> None:
        """Redraw everything now, synchronously (for screenshots and tests)."""
        self._dirty = True
        self._background = None
        self.redraw()
        self.canvas.draw()
