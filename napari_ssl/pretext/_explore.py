"""What the Pretext explorer draws of any pretext, in plain data (numpy; neither napari nor Qt): the request of one
preview (:class:`PreviewRequest`), its result (:class:`Preview`, :class:`PlaneView`), the box and colour helpers the
units' previews share, the generic preview of a pretext that brings none (:func:`boxes_preview`), and the placement
helpers of the network-answer drawings (:func:`placement`, :func:`panel_offset`).

A unit's ``explore`` module builds on these: its preview runs in the explorer's worker thread, its answer drawing
returns ``(name, layer_type, data, kwargs, role)`` tuples that the dock (:mod:`napari_ssl._napari.explorer`) turns into
layers. Where a drawing needs a napari object (a label colormap, a Qt-rendered mosaic of planes), it describes it in
plain data (:func:`direct_colormap`, :func:`mosaic_of`) and the dock builds it. Everything here is in the source's
**voxel** coordinates ``(z, y, x)``, except the world geometry of native multi-view planes (which have no common
voxel grid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume

__all__ = [
    "DIMMED_ALPHA",
    "GAP",
    "PALETTE",
    "SEP",
    "TRANSPARENT",
    "UNTOUCHED_GAIN",
    "PlaneView",
    "Preview",
    "PreviewRequest",
    "box_path",
    "boxes_preview",
    "colour",
    "contour_width",
    "dim_outside",
    "direct_colormap",
    "foreground",
    "line_width",
    "mosaic_of",
    "on_body",
    "paint_boxes",
    "panel_offset",
    "placement",
    "shifted",
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
#: between the scan's name and the rest of a preview layer's name (``<scan> · <pretext> ...``)
SEP = " · "
TRANSPARENT = np.zeros(4)
#: space between side-by-side panels of a network answer, as a fraction of the scan's width
GAP = 0.06


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


def foreground(req: PreviewRequest) -> tuple[np.ndarray | None, str]:
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


# ---------------------------------------------------------------------------------------------- generic preview
def boxes_preview(req: PreviewRequest, task: Any, rng: np.random.Generator) -> Preview:
    """The generic preview of a registered pretext: ``task.apply`` on the scan (or ``task.invert`` of it with
    "restore"), the boxes of ``task.overlay(params)["boxes"]`` (``(n, 2, 3)`` start / stop voxel corners, if any)
    outlined, ``task.describe(params)`` (if any) as the summary."""
    vol = req.volume
    if vol is None:
        raise ValueError("this pretext previews on one 3D scan; pick a scan, not 'All views'")
    mask, where = foreground(req)
    params = task.sample(vol.spatial_shape, rng, vol.spacing, foreground=mask)
    overlay = task.overlay(params)
    image = task.apply(vol.array, params)
    if req.restore and hasattr(task, "invert"):
        image = task.invert(image, params)
    image = np.asarray(image).astype(np.asarray(vol.array).dtype, copy=False)
    body_3d, limits_3d = on_body(np.asarray(vol.array), image, mask)
    boxes = np.asarray(overlay.get("boxes", np.zeros((0, 2, 3))), dtype=int).reshape(-1, 2, 3)
    n = len(boxes)
    values = np.arange(n) + 1
    describe = getattr(task, "describe", None)
    summary = describe(params) if callable(describe) else type(params).__name__
    return Preview(
        request=req,
        task=task,
        params=params,
        overlay=overlay,
        image=image,
        boxes=boxes,
        box_values=values,
        box_text=[str(v) for v in values],
        box_width=np.full(n, 1.5),
        box_alpha=np.ones(n),
        labels=paint_boxes(vol.spatial_shape, boxes, values),
        focus=(boxes[0, 0] + boxes[0, 1] - 1) / 2.0 if n else None,
        foreground=where,
        summary=summary + (f". Placed on the body ({where})" if where and n else ""),
        body_3d=body_3d,
        limits_3d=limits_3d,
    )


def on_body(source: np.ndarray, image: np.ndarray, mask: np.ndarray | None) -> tuple[Any, Any]:
    """The 3D view of a corrupted volume: ``image`` on the source's body (``mask``, or the foreground mask when
    the corruption was not placed with one), the rest set to the source's minimum (black); the limits are the
    source's percentiles 1 and 99.5 on the body. ``(None, None)`` for a volume without a body."""
    if mask is None:
        from napari_ssl.io.foreground import foreground_mask, resolve_method

        mask = foreground_mask(source, resolve_method(source))
    if mask is None or not mask.any():
        return None, None
    lo, hi = (float(v) for v in np.percentile(source[mask], (1.0, 99.5)))
    if hi <= lo:
        hi = lo + 1.0
    out = np.array(image, copy=True)
    out[~mask] = np.asarray(min(lo, float(source.min()))).astype(out.dtype)
    return out, (lo, hi)


# ---------------------------------------------------------------------------------------------- answer drawings
def placement(layer: Any) -> dict[str, Any]:
    """``scale``, ``translate``, ``rotate`` and ``affine`` of ``layer`` (any object with a napari layer's
    ``ndim``, ``affine``, ``rotate``, ``scale`` and ``translate``) for its last three axes."""
    nd = layer.ndim
    lead = nd - 3
    affine = np.asarray(layer.affine.affine_matrix, dtype=float)[lead:, lead:]
    rotate = np.asarray(layer.rotate, dtype=float)[lead:, lead:]
    return {
        "scale": tuple(float(s) for s in layer.scale[lead:]),
        "translate": tuple(float(t) for t in layer.translate[lead:]),
        "rotate": rotate,
        "affine": affine,
    }


def line_width(shape: tuple[int, ...]) -> float:
    """Wireframe edge width in voxels: Shapes widths are data units, so scale them with the volume size."""
    return max(0.15, 0.0025 * max(shape))


def contour_width(shape: tuple[int, ...]) -> int:
    """Contour thickness (pixels of the label volume) of the 2D box outlines."""
    return max(1, round(min(shape[1:]) / 128))


def _shift_axis(viewer: Any) -> int:
    """The scan axis (0..2) drawn left to right in the canvas: the last displayed one."""
    return int(viewer.dims.displayed[-1]) - (int(viewer.dims.ndim) - 3)


def panel_offset(viewer: Any, source_layer: Any) -> np.ndarray:
    """World shift (3,) from one side-by-side panel to the next: the scan's width plus a gap, left to right."""
    axis = _shift_axis(viewer)
    ext = np.asarray(source_layer.extent.world, dtype=float)[:, -3:]
    width = float(ext[1, axis] - ext[0, axis]) + float(np.abs(source_layer.scale[-3:][axis]))
    out = np.zeros(3)
    out[axis] = width * (1 + GAP)
    return out


def shifted(place: dict[str, Any], offset: np.ndarray) -> dict[str, Any]:
    """``place`` (from :func:`placement`) moved by the world translation ``offset``, applied after the layer's own
    transform."""
    affine = np.array(place["affine"], dtype=float)
    affine[:3, 3] += offset
    return {**place, "affine": affine}


def direct_colormap(colours: dict[Any, Any]) -> dict[str, Any]:
    """A label colormap in plain data: ``{label value (or None, the default): RGBA}``; the dock builds napari's
    ``DirectLabelColormap`` of it (a layer kwarg ``colormap``)."""
    return {"direct": dict(colours)}


def mosaic_of(planes: list[PlaneView], focus: int | None = None) -> dict[str, Any]:
    """An RGB grid of ``planes`` (each tile its image, heatmaps and lines; the ``focus`` one framed) in plain data:
    the layer data the dock renders (with Qt) before adding the layer."""
    return {"mosaic": list(planes), "focus": focus}
