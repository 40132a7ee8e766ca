"""The explorer's heavy work, pure numpy: sample a pretext, apply it, and turn its overlay into drawables.

Runs in a :func:`napari.qt.threading.thread_worker`; imports neither napari nor Qt, so it can be timed and
tested on its own. Everything here is in the source's **voxel** coordinates ``(z, y, x)``, except the world
geometry of native multi-view planes (which have no common voxel grid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume

__all__ = [
    "PALETTE",
    "Preview",
    "PreviewRequest",
    "box_path",
    "context_preview",
    "paint_boxes",
    "rubik_preview",
]


def _palette(n: int) -> np.ndarray:
    """``n`` saturated RGBA colours, consecutive ones far apart in hue (golden-angle steps), bright enough to
    read on a grey scan; saturation and value cycle every three so that close hues still differ."""
    import colorsys

    out = []
    for k in range(n):
        hue = (0.58 + k * 0.381966) % 1.0  # golden angle; starts at blue
        sat, val = ((0.95, 1.0), (0.6, 1.0), (1.0, 0.78))[(k // 8) % 3]
        out.append([*colorsys.hsv_to_rgb(hue, sat, val), 1.0])
    return np.asarray(out)


#: one colour per cube / pair / plane (RGBA, 0..1): 24 distinct colours, cycled beyond
PALETTE = _palette(24)
#: opacity of the pairs other than the current one (context), so that the current pair stands out
DIMMED_ALPHA = 0.45
#: brightness kept by the voxels a Rubik shuffle leaves untouched (gaps and borders): the network never sees them
UNTOUCHED_GAIN = 0.3


def colour(i: int) -> np.ndarray:
    """Palette colour ``i`` (cycled)."""
    return PALETTE[int(i) % len(PALETTE)]


@dataclass(frozen=True, eq=False)
class PreviewRequest:
    """Everything one preview needs, captured on the GUI thread (the worker touches no layer).

    Attributes
    ----------
    pretext : str
        A registered pretext (:mod:`napari_ssl.pretext.registry`).
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
        Context: show the volume after the first ``step`` swaps (``None``: all of them); swap ``step`` is the
        current one, highlighted.
    contrast : (float, float) or None
        The source layer's contrast limits (Rubik dims the voxels outside the cubes towards the low one).
    foreground : bool
        Place patches and cubes on the body (:func:`napari_ssl.io.foreground.foreground_mask`) rather than
        anywhere in the volume.
    """

    pretext: str
    values: dict[str, Any]
    seed: int = 0
    source: str = ""
    volume: Volume | None = None
    views: tuple[Volume, ...] = ()
    restore: bool = False
    step: int | None = None
    foreground: bool = True
    contrast: tuple[float, float] | None = None


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
    box_alpha : numpy.ndarray
        ``(n,)`` opacity of each box (pairs other than the current swap are dimmed).
    focus : numpy.ndarray or None
        Voxel ``(z, y, x)`` the view should move to (the current swap), ``None`` for no move.
    foreground : str
        How the corruption was placed: ``""`` (anywhere) or the mask's method and coverage.
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
    body_3d : numpy.ndarray or None
        What the 3D view renders instead of ``image`` (``None``: ``image``): for a corruption that fills the whole
        volume (Models Genesis out-paints noise everywhere but its boxes, or turns the dark background bright),
        ``image`` on the body only, the rest at ``limits_3d[0]``; a maximum projection of ``image`` itself is a
        bright box that hides the head.
    limits_3d : (float, float) or None
        Contrast limits of the 3D view: the source's percentiles 1 and 99.5 on its body.
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
    box_alpha: np.ndarray = field(default_factory=lambda: np.zeros(0))
    focus: np.ndarray | None = None
    foreground: str = ""
    labels: np.ndarray | None = None
    planes: list[PlaneView] = field(default_factory=list)
    segments: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 3)))
    segment_pairs: list[tuple[int, int]] = field(default_factory=list)
    world: bool = False
    summary: str = ""
    body_3d: np.ndarray | None = None
    limits_3d: tuple[float, float] | None = None


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
def rubik_preview(req: PreviewRequest, task: Any, rng: np.random.Generator) -> Preview:
    """Rubik's cube: the shuffled (or restored) scan, every cube outlined and labelled with where it came from."""
    vol = req.volume
    assert vol is not None
    mask, where = _foreground(req)
    params = task.sample(vol.spatial_shape, rng, vol.spacing, foreground=mask)
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
    labels = paint_boxes(vol.spatial_shape, boxes, values)
    return Preview(
        request=req,
        task=task,
        params=params,
        overlay=overlay,
        boxes=boxes,
        box_values=values,
        box_text=text,
        box_width=np.full(n, 1.0),
        box_alpha=np.ones(n),
        labels=labels,
        image=dim_outside(image, boxes, req.contrast),
        focus=(boxes[0, 0] + boxes[0, 1] - 1) / 2.0,  # a slice through the cubes, not through a gap
        foreground=where,
        summary=(
            f"permutation {overlay['permutation_index']} of {task.n_permutations}; "
            f"{int(rotations.any(axis=1).sum())} of {n} cubes rotated"
            + (" (restored view)" if req.restore else "")
            + ". Label 'a→b ↻x': the cube of cell a now sits in cell b, turned 180° about x. "
            "Voxels outside the cubes are dimmed: the network never sees them"
            + (f". Grid on the body ({where})" if where else "")
        ),
    )


def context_preview(req: PreviewRequest, task: Any, rng: np.random.Generator) -> Preview:
    """Context restoration: the scan after the first ``step`` swaps, the swapped pairs outlined in pair colours."""
    import dataclasses

    vol = req.volume
    assert vol is not None
    mask, where = _foreground(req)
    params = task.sample(vol.spatial_shape, rng, vol.spacing, foreground=mask)
    overlay = task.overlay(params)
    n_pairs = len(params.pairs)
    step = n_pairs if req.step is None else int(np.clip(req.step, 0, n_pairs))
    shown = params if step == n_pairs else dataclasses.replace(params, pairs=params.pairs[:step])
    image = task.apply(vol.array, shown)
    pair_boxes = np.asarray(overlay["boxes"], dtype=int).reshape(-1, 2, 2, 3)[:step]
    boxes = pair_boxes.reshape(-1, 2, 3)
    values = np.repeat(np.arange(step) + 1, 2)
    text = [f"{t + 1}{ab}" for t in range(step) for ab in ("a", "b")]
    current = values == step
    focus, where_now = None, ""
    if step:
        lo, hi = pair_boxes[step - 1, 0]
        focus = (lo + hi - 1) / 2.0
        za, zb = (int(b[0, 0] + b[1, 0] - 1) // 2 for b in pair_boxes[step - 1])
        where_now = f" ({step}a around slice {za}, {step}b around slice {zb})"
    on_body = ""
    if mask is not None and step:
        inside = [mask[tuple(slice(a, b) for a, b in zip(*box, strict=True))].mean() >= 0.5 for box in boxes]
        on_body = f"; {int(np.sum(inside))} of {len(boxes)} patches on the body ({where})"
    return Preview(
        request=req,
        task=task,
        params=params,
        overlay=overlay,
        image=image,
        boxes=boxes,
        box_values=values,
        box_text=text,
        box_width=np.where(current, 2.5, 1.0),
        box_alpha=np.where(current, 1.0, DIMMED_ALPHA),
        labels=paint_boxes(vol.spatial_shape, boxes, values),
        focus=focus,
        foreground=where,
        summary=(
            f"swap {step} of {n_pairs}{where_now}, bright; earlier swaps faint. "
            f"Patches of {tuple(params.patch)} voxels"
            f"{on_body}. Boxes 'ta' and 'tb' (same colour) traded places at swap t"
        ),
    )


def _foreground(req: PreviewRequest) -> tuple[np.ndarray | None, str]:
    """The foreground mask of the request's volume (``None`` when off or empty) and a few words on it."""
    if not req.foreground or req.volume is None:
        return None, ""
    from napari_ssl.io.foreground import foreground_mask, resolve_method

    array = np.asarray(req.volume.array)
    method = resolve_method(array)
    mask = foreground_mask(array, method)
    fraction = float(mask.mean()) if mask.size else 0.0
    if fraction == 0.0:
        return None, ""
    return mask, f"{method} mask, {100 * fraction:.0f}% of the scan"


def dim_outside(image: np.ndarray, boxes: np.ndarray, limits: tuple[float, float] | None) -> np.ndarray:
    """``image`` with the voxels outside every box ``[start, stop)`` pulled towards the dark end of the
    display range (keeping ``UNTOUCHED_GAIN`` of their contrast), dtype kept; the boxes' voxels unchanged.

    One vectorised pass over the volume, then the boxes copied back (no boolean gather / scatter)."""
    arr = np.asarray(image)
    lo = float(limits[0]) if limits is not None else float(arr.min(initial=0))
    if np.issubdtype(arr.dtype, np.floating):
        out = arr * np.asarray(UNTOUCHED_GAIN, arr.dtype)
        out += np.asarray(lo * (1 - UNTOUCHED_GAIN), arr.dtype)
    else:
        dimmed = arr * np.float32(UNTOUCHED_GAIN) + np.float32(lo * (1 - UNTOUCHED_GAIN))
        info = np.iinfo(arr.dtype)
        out = np.clip(np.rint(dimmed), info.min, info.max).astype(arr.dtype)
    for start, stop in np.asarray(boxes, dtype=int):
        box = (..., *(slice(a, b) for a, b in zip(start, stop, strict=True)))
        out[box] = arr[box]
    return out
