"""The explorer's heavy work, pure numpy: sample a pretext, apply it, and turn its overlay into drawables.

Runs in a :func:`napari.qt.threading.thread_worker`; imports neither napari nor Qt, so it can be timed and
tested on its own. Everything here is in the source's **voxel** coordinates ``(z, y, x)``, except the world
geometry of native multi-view planes (which have no common voxel grid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_ssl.volume import Volume

__all__ = ["PALETTE", "Preview", "PreviewRequest", "box_path", "compute_preview", "paint_boxes"]

#: one colour per cube / pair / plane (RGBA, 0..1); cycled when there are more
PALETTE = np.array(
    [
        [0.12, 0.47, 0.71, 1.0],
        [1.00, 0.50, 0.05, 1.0],
        [0.17, 0.63, 0.17, 1.0],
        [0.84, 0.15, 0.16, 1.0],
        [0.58, 0.40, 0.74, 1.0],
        [0.55, 0.34, 0.29, 1.0],
        [0.89, 0.47, 0.76, 1.0],
        [0.74, 0.74, 0.13, 1.0],
        [0.09, 0.75, 0.81, 1.0],
        [1.00, 0.85, 0.20, 1.0],
    ]
)


def colour(i: int) -> np.ndarray:
    """Palette colour ``i`` (cycled)."""
    return PALETTE[int(i) % len(PALETTE)]


@dataclass(frozen=True, eq=False)
class PreviewRequest:
    """Everything one preview needs, captured on the GUI thread (the worker touches no layer).

    Attributes
    ----------
    pretext : str
        ``"rubik"``, ``"context"`` or ``"planes"``.
    source : str
        Name of the source layer (``"views"`` in native multi-view mode); preview layers are named after it.
    values : dict
        Constructor keywords of the pretext (from :class:`~napari_ssl._napari.params.PretextParamWidget`).
    seed : int
        Seed of the ``numpy.random.Generator`` given to ``sample``.
    volume : Volume or None
        The source scan, 3D ``(z, y, x)``, with its geometry; ``None`` in native multi-view mode.
    views : tuple of Volume
        Native multi-view mode: the acquired planes / stacks in world coordinates.
    restore : bool
        Rubik: show the inverse (restored) volume instead of the shuffled one.
    step : int or None
        Context: show the volume after the first ``step`` swaps (``None``: all of them).
    """

    pretext: str
    values: dict[str, Any]
    seed: int = 0
    source: str = ""
    volume: Volume | None = None
    views: tuple[Volume, ...] = ()
    restore: bool = False
    step: int | None = None


@dataclass(eq=False)
class PlaneView:
    """One imaging plane ready to draw.

    ``image`` is what the network sees (H, W); ``corners`` the world/voxel positions of pixels
    (0, 0), (0, W-1), (H-1, W-1), (H-1, 0); ``lines`` one ``(other_plane, p0, p1)`` per intersection, end
    points in this plane's pixel coordinates (row, col); ``heatmaps`` (n_other, H, W) in [0, 1] with
    ``heat_index`` naming the other plane of each channel; ``slice_position`` in [0, 1] for stack slices.
    """

    name: str
    image: np.ndarray
    corners: np.ndarray
    lines: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)
    heatmaps: np.ndarray | None = None
    heat_index: list[int] = field(default_factory=list)
    slice_position: float | None = None
    stack: str | None = None


@dataclass(eq=False)
class Preview:
    """The result of one preview: arrays and geometry in voxel coordinates of the source (or world mm).

    Attributes
    ----------
    request : PreviewRequest
    task : object
        The pretext instance.
    params : object
        Its sampled params (frozen dataclass).
    overlay : dict
        ``task.overlay(params)``, untouched.
    image : numpy.ndarray or None
        Corrupted (or restored / partially corrupted) volume, same shape and dtype as the source.
    boxes : numpy.ndarray
        ``(n, 2, 3)`` start / stop (exclusive) voxel corners of every box to outline.
    box_values : numpy.ndarray
        ``(n,)`` label value of each box (cube number + 1, or pair number + 1: equal values share a colour).
    box_text : list of str
        One label per box.
    box_width : numpy.ndarray
        ``(n,)`` edge width (the current context swap is drawn thicker).
    labels : numpy.ndarray or None
        ``uint16`` volume with every box filled with its value (shown as contours in 2D).
    planes : list of PlaneView
        Imaging planes.
    segments : numpy.ndarray
        ``(m, 2, 3)`` intersection segments (world mm in multi-view mode, else source voxels).
    segment_pairs : list of (int, int)
        The two planes of each segment.
    world : bool
        True when ``planes`` corners and ``segments`` are world mm (native multi-view).
    summary : str
        One line for the dock: permutation index, number of swaps, planes and lines.
    """

    request: PreviewRequest
    task: Any
    params: Any
    overlay: dict[str, Any]
    image: np.ndarray | None = None
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 3), dtype=int))
    box_values: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    box_text: list[str] = field(default_factory=list)
    box_width: np.ndarray = field(default_factory=lambda: np.zeros(0))
    labels: np.ndarray | None = None
    planes: list[PlaneView] = field(default_factory=list)
    segments: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 3)))
    segment_pairs: list[tuple[int, int]] = field(default_factory=list)
    world: bool = False
    summary: str = ""


# ---------------------------------------------------------------------------------------------- helpers
def make_task(pretext: str, values: dict[str, Any]) -> Any:
    """A pretext instance; its constructor raises ``ValueError`` naming any bad parameter."""
    from napari_ssl._napari.params import pretext_class

    return pretext_class(pretext)(**values)


def box_path(start: Any, stop: Any) -> np.ndarray:
    """One path of 16 vertices tracing the 12 edges of the box ``[start, stop]`` (voxel corners).

    Drawn in voxel units with the source's transform: the box covers voxel centres ``start .. stop - 1``,
    so its faces sit half a voxel outside them, on the voxel borders.
    """
    lo = np.asarray(start, dtype=float) - 0.5
    hi = np.asarray(stop, dtype=float) - 0.5
    # corners as bits (z, y, x): A B C D bottom loop, E F G H top loop, then the three missing verticals
    order = [
        "000",
        "010",
        "011",
        "001",
        "000",
        "100",
        "110",
        "111",
        "101",
        "100",
        "110",
        "010",
        "011",
        "111",
        "101",
        "001",
    ]
    return np.array([[hi[a] if b == "1" else lo[a] for a, b in enumerate(code)] for code in order])


def paint_boxes(shape: tuple[int, ...], boxes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A ``uint16`` volume with each box ``[start, stop)`` filled with its value (later boxes on top)."""
    out = np.zeros(shape, dtype=np.uint16)
    for (lo, hi), v in zip(np.asarray(boxes, dtype=int), values, strict=False):
        out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = v
    return out


# ---------------------------------------------------------------------------------------------- pretexts
def _rubik(req: PreviewRequest, task: Any, rng: np.random.Generator) -> Preview:
    vol = req.volume
    assert vol is not None
    params = task.sample(vol.spatial_shape, rng, vol.spacing)
    overlay = task.overlay(params)
    shuffled = task.apply(vol.array, params)
    image = task.invert(shuffled, params) if req.restore else shuffled
    boxes = np.asarray(overlay["boxes"], dtype=int)
    n = len(boxes)
    rotations = np.asarray(overlay["rotations"], dtype=bool).reshape(n, -1)
    source = np.asarray(overlay["source"], dtype=int)
    text = []
    for i in range(n):
        rot = "+".join(ax for ax, on in zip(("x", "y"), rotations[i], strict=False) if on)
        text.append(f"{source[i]}→{i}" + (f" ↻{rot}" if rot else ""))
    if req.restore:  # every cube back home: outline the source cells with their own number
        boxes = np.asarray(overlay["source_boxes"], dtype=int)
        text = [f"{source[i]}" for i in range(n)]
    values = (source if req.restore else np.arange(n)) + 1
    return Preview(
        request=req,
        task=task,
        params=params,
        overlay=overlay,
        image=image,
        boxes=boxes,
        box_values=values,
        box_text=text,
        box_width=np.full(n, 1.0),
        labels=paint_boxes(vol.spatial_shape, boxes, values),
        summary=(
            f"permutation {overlay['permutation_index']} of {task.n_permutations}; "
            f"{int(rotations.any(axis=1).sum())} of {n} cubes rotated"
            + (" (restored view)" if req.restore else "")
            + ". Label 'a→b ↻x': the cube of cell a now sits in cell b, turned 180° about x"
        ),
    )


def _context(req: PreviewRequest, task: Any, rng: np.random.Generator) -> Preview:
    import dataclasses

    vol = req.volume
    assert vol is not None
    params = task.sample(vol.spatial_shape, rng, vol.spacing)
    overlay = task.overlay(params)
    n_pairs = len(params.pairs)
    step = n_pairs if req.step is None else int(np.clip(req.step, 0, n_pairs))
    shown = params if step == n_pairs else dataclasses.replace(params, pairs=params.pairs[:step])
    image = task.apply(vol.array, shown)
    pair_boxes = np.asarray(overlay["boxes"], dtype=int).reshape(-1, 2, 2, 3)[:step]
    boxes = pair_boxes.reshape(-1, 2, 3)
    values = np.repeat(np.arange(step) + 1, 2)
    text = [f"{t + 1}{ab}" for t in range(step) for ab in ("a", "b")]
    width = np.where(values == step, 2.5, 0.7) if step < n_pairs else np.full(len(values), 1.0)
    return Preview(
        request=req,
        task=task,
        params=params,
        overlay=overlay,
        image=image,
        boxes=boxes,
        box_values=values,
        box_text=text,
        box_width=width,
        labels=paint_boxes(vol.spatial_shape, boxes, values),
        summary=(
            f"swap {step} of {n_pairs}; patches of {tuple(params.patch)} voxels. "
            "Boxes 'ta' and 'tb' (same colour) traded places at swap t"
        ),
    )


def compute_preview(req: PreviewRequest) -> Preview:
    """Sample, apply and lay out one pretext preview (the worker's whole job).

    Raises
    ------
    ValueError
        From the pretext, naming the parameter and its limit (volume too small, too many swaps, ...).
    """
    task = make_task(req.pretext, req.values)
    rng = np.random.default_rng(int(req.seed))
    if req.pretext == "rubik":
        return _rubik(req, task, rng)
    if req.pretext == "context":
        return _context(req, task, rng)
    if req.pretext == "planes":
        from napari_ssl._napari.explorer_planes import planes_preview

        return planes_preview(req, task, rng)
    raise ValueError(f"unknown pretext {req.pretext!r}; choose rubik, context or planes")
