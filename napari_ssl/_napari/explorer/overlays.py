"""Preview layers: placement copied from the source layer, named ``<scan> · <pretext> ...``, updated in place.

Every layer the explorer adds carries ``metadata["napari_ssl_explorer"] = {"source", "pretext", "role",
"dims"}`` so that the dock can find, re-use and remove its own layers and never touches any other.
Boxes (Rubik cubes, context patches) appear three ways, each right where napari can show it:

- ``... boxes`` (Shapes): one 16-vertex path per box tracing its 12 edges, for the 3D view;
- ``... cells`` (Labels): the boxes filled with their number, drawn as contours, for 2D slices in any
  orientation (hover shows the number in the status bar);
- ``... text`` (Points): the label of each box on a dark plate (an ``hbar`` marker), drawn without depth
  test so the rendered volume never hides it; at the box centre in 3D (the current context pair only) and on
  every slice the box crosses in 2D (above a small patch, on a big cube). Each pair has its own colour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from napari_ssl._napari.proxy import kind
from napari_ssl.pretext._explore import SEP, Preview, box_path, colour, contour_width, line_width, placement

if TYPE_CHECKING:
    import napari

__all__ = ["META", "SEP", "contour_width", "explorer_layers", "line_width", "placement", "remove_previews", "upsert"]

META = "napari_ssl_explorer"
TRANSPARENT = np.zeros(4)
#: 3D view of a corrupted volume with its own ``body_3d`` (Models Genesis): rays stop at the first bright voxels,
#: so the head's surface and the noise of the painted boxes read; a plain maximum projection is a bright blob
RENDERING_3D = "attenuated_mip"
ATTENUATION = 0.1




def explorer_layers(viewer: napari.Viewer, source: str | None = None) -> list[Any]:
    """The layers this explorer added (for ``source`` only when given), in viewer order."""
    out = []
    for layer in viewer.layers:
        tag = layer.metadata.get(META) if isinstance(layer.metadata, dict) else None
        if tag and (source is None or tag.get("source") == source):
            out.append(layer)
    return out


def remove_previews(viewer: napari.Viewer, source: str | None = None, keep: set[str] | None = None) -> int:
    """Remove the explorer's layers (of ``source`` when given), except names in ``keep``; returns the count."""
    doomed = [layer for layer in explorer_layers(viewer, source) if layer.name not in (keep or set())]
    for layer in doomed:
        viewer.layers.remove(layer)
    return len(doomed)


def upsert(
    viewer: napari.Viewer, name: str, layer_type: str, data: Any, kwargs: dict[str, Any], tag: dict[str, Any]
) -> Any:
    """Update the layer called ``name`` in place when it is ours and of the same type, else add it."""
    kwargs = dict(kwargs)
    kwargs["metadata"] = {**kwargs.get("metadata", {}), META: dict(tag)}
    after = {k: kwargs.pop(k) for k in ("contour",) if k in kwargs}  # not constructor arguments
    existing = viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401 (LayerList has no .get)
    if existing is not None and (
        kind(existing).lower() != layer_type
        or META not in existing.metadata
        or existing.ndim != _ndim(data, kwargs, layer_type)
    ):
        viewer.layers.remove(existing)
        existing = None
    if existing is None:
        add = getattr(viewer, f"add_{layer_type}")
        if layer_type == "shapes":
            shape_kw = {k: kwargs.pop(k) for k in ("shape_type", "edge_color", "edge_width") if k in kwargs}
            layer = add(name=name, ndim=_ndim(data, kwargs, layer_type), **kwargs)
            _set_shapes(layer, data, shape_kw)
        else:
            layer = add(data, name=name, **kwargs)
    else:
        layer = existing
        _update(existing, layer_type, data, kwargs)
    for key, value in after.items():
        setattr(layer, key, value)
    return layer


def _ndim(data: Any, kwargs: dict[str, Any], layer_type: str = "image") -> int:
    if "scale" in kwargs:
        return len(kwargs["scale"])
    if layer_type in ("shapes", "points"):  # lists of vertices / (N, D) coordinates
        arrays = data if isinstance(data, list) else [data]
        return int(np.shape(arrays[0])[-1]) if len(arrays) and np.size(arrays[0]) else 3
    return int(np.ndim(data))


def _set_shapes(layer: Any, data: list[np.ndarray], shape_kw: dict[str, Any]) -> None:
    """Replace every shape of ``layer`` (``shape_kw``: types, edge colours and widths, per shape or one for all).

    ``Shapes.add`` on a hidden layer leaves its cached extent NaN (napari 0.9: neither the ``data`` setter nor a
    refresh renews it while hidden), which puts the view off the scan. Setting a transform renews the extent through
    public API, so the layer's own scale is set again.
    """
    layer.selected_data = set()
    layer.data = []
    if len(data):
        layer.add(data, **shape_kw)
        layer.scale = layer.scale


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(np.shape(a) == np.shape(b) and np.allclose(np.asarray(a, float), np.asarray(b, float)))
    except (TypeError, ValueError):
        return False


def _update(layer: Any, layer_type: str, data: Any, kwargs: dict[str, Any]) -> None:
    """Update ``layer`` in place, touching only what changed (each napari setter refreshes the layer)."""
    current = {
        "scale": layer.scale,
        "translate": layer.translate,
        "rotate": layer.rotate,
        "affine": layer.affine.affine_matrix,
    }
    nd = layer.ndim
    identity = {
        "scale": np.ones(nd),
        "translate": np.zeros(nd),
        "rotate": np.eye(nd),
        "affine": np.eye(nd + 1),
    }
    for key in ("scale", "translate", "rotate", "affine"):
        wanted = kwargs.get(key, identity[key])  # a recycled layer may carry another preview's placement
        if not _same(current[key], wanted):
            setattr(layer, key, wanted)
    if layer.metadata.get(META) != kwargs["metadata"][META]:
        layer.metadata = kwargs["metadata"]
    for key in ("opacity", "rendering", "attenuation", "blending"):  # selected plane or not; 3D rendering
        if key in kwargs and getattr(layer, key, None) != kwargs[key]:
            setattr(layer, key, kwargs[key])
    if layer_type == "shapes":
        shape_kw = {k: kwargs[k] for k in ("shape_type", "edge_color", "edge_width") if k in kwargs}
        _set_shapes(layer, data, shape_kw)
        return
    if layer_type == "points":
        set_points(layer, data, kwargs)
        return
    if layer_type == "labels" and "colormap" in kwargs:
        new = kwargs["colormap"]
        old = layer.colormap
        if not (
            hasattr(old, "color_dict")
            and set(old.color_dict) == set(new.color_dict)
            and all(np.allclose(old.color_dict[k], new.color_dict[k]) for k in new.color_dict)
        ):
            layer.colormap = new
    layer.data = data
    if layer_type == "image":
        for key in ("contrast_limits", "colormap"):
            if key in kwargs and key == "contrast_limits" and not _same(layer.contrast_limits, kwargs[key]):
                layer.contrast_limits = kwargs[key]


# ---------------------------------------------------------------------------------------------- boxes
def box_layer_specs(
    preview: Preview, base: str, source_layer: Any, ndisplay: int, sliced_axis: int
) -> list[tuple]:
    """``(name, layer_type, data, kwargs, role)`` for the corrupted image and the box overlays."""
    from napari.utils.colormaps import DirectLabelColormap

    place = placement(source_layer)
    image_kw: dict[str, Any] = {**place, "colormap": "gray", "blending": "translucent", "rendering": "mip"}
    limits = getattr(source_layer, "contrast_limits", None)
    if limits is not None:
        image_kw["contrast_limits"] = tuple(limits)
    image = preview.image
    if ndisplay == 3 and preview.body_3d is not None:  # a corruption filling the volume: the body, attenuated
        image = preview.body_3d
        image_kw.update(rendering=RENDERING_3D, attenuation=ATTENUATION, contrast_limits=preview.limits_3d)
    specs: list[tuple] = [(base, "image", image, image_kw, "image")]

    boxes = preview.boxes
    values = preview.box_values
    alpha = preview.box_alpha if len(preview.box_alpha) == len(values) else np.ones(len(values))
    edge_colors = np.array([colour(v - 1) for v in values]).reshape(-1, 4)
    edge_colors[:, 3] = alpha
    # on voxel borders, but not beyond the volume's outer voxel centres: that would stretch the slice slider
    top = np.asarray(preview.labels.shape, dtype=float) - 1
    paths = [np.clip(box_path(lo, hi), 0.0, top) for lo, hi in boxes]
    specs.append(
        (
            f"{base} boxes",
            "shapes",
            paths,
            {
                **place,
                "shape_type": "path",
                "edge_color": edge_colors if len(paths) else "white",
                "edge_width": preview.box_width * line_width(preview.labels.shape) if len(paths) else 1.0,
                "face_color": "transparent",
                "opacity": 1.0,
                "visible": ndisplay == 3,
                # over a volume rendered to its surface (body_3d), boxes inside the head would be hidden
                "blending": "translucent_no_depth" if preview.body_3d is not None else "translucent",
            },
            "boxes",
        )
    )
    cmap = {None: TRANSPARENT, 0: TRANSPARENT}
    for v, a in zip(values, alpha, strict=True):
        cmap[int(v)] = np.append(colour(int(v) - 1)[:3], a)
    specs.append(
        (
            f"{base} cells",
            "labels",
            preview.labels if preview.labels.max(initial=0) > 255 else preview.labels.astype(np.uint8),
            {
                **place,
                "colormap": DirectLabelColormap(color_dict=cmap),
                "opacity": 1.0,
                "visible": ndisplay == 2,
                **({"contour": contour_width(preview.labels.shape)} if ndisplay == 2 else {}),
            },
            "cells",
        )
    )
    points, labels, rgba, sizes = text_points(preview, ndisplay, sliced_axis)
    # text in the box's colour on a dark plate: readable on bright tissue and on dark air alike
    kwargs = text_kwargs(labels, rgba, sizes)
    specs.append((f"{base} text", "points", points, {**place, **kwargs}, "text"))
    return specs


#: text size (screen pixels) of box and plane labels, and the dark plate behind each label
TEXT_SIZE = 11
PLATE = "#000000a8"  # black, 66% opaque


def text_kwargs(labels: list[str], rgba: np.ndarray, sizes: Any = 1.0, plate: bool = True) -> dict[str, Any]:
    """Points kwargs drawing ``labels`` centred on their points, each on a dark plate.

    The plate is napari's ``hbar`` marker (three times wider than tall); ``sizes`` are its widths in data
    units (see :func:`plate_width`), so that it scales with its box like the box itself. Drawn without depth
    test, so that in 3D the volume does not hide them.
    """
    return {
        "features": text_features(labels, rgba),
        "text": {
            "string": "{label}",
            "color": {"feature": "colour"},
            "size": TEXT_SIZE,
            "anchor": "center",
            "blending": "translucent_no_depth",
        },
        "symbol": "hbar",
        "size": np.broadcast_to(np.asarray(sizes, dtype=float), (len(labels),)).copy() if labels else 1.0,
        "face_color": PLATE if plate else "transparent",
        "border_width": 0,
        "border_color": "transparent",
        # no depth test: in 3D a label stays on top of the rendered volume (and of its own plate)
        "blending": "translucent_no_depth",
    }


def plate_width(extent: float, chars: int = 6) -> float:
    """Plate width (data units) for a label of ``chars`` characters on a box whose smallest displayed side is
    ``extent``: wider than a small patch (its 3-character label must fit), a fraction of a big cube (its
    content must stay visible), longer for a longer label."""
    return float(extent) * (1.3 if extent < 32 else 0.6) * max(1.0, chars / 7)


def text_features(labels: list[str], rgba: np.ndarray) -> dict[str, list[str]]:
    """Points features for box text: the label and its colour as hex (the colour of its box)."""
    hexes = [
        "#{:02x}{:02x}{:02x}{:02x}".format(*(np.round(np.asarray(c)[:4] * 255).astype(int)))
        for c in np.asarray(rgba).reshape(-1, 4)
    ]
    return {"label": list(labels), "colour": hexes}




def text_points(
    preview: Preview, ndisplay: int, sliced_axis: int
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Text anchor points of the boxes (centres in 3D; in 2D one per slice along ``sliced_axis``), their
    labels, colours and plate widths."""
    pts: list[np.ndarray] = []
    labels: list[str] = []
    rgba: list[np.ndarray] = []
    sizes: list[float] = []
    alphas = (
        preview.box_alpha if len(preview.box_alpha) == len(preview.boxes) else np.ones(len(preview.boxes))
    )
    for (lo, hi), text, v, a in zip(
        preview.boxes, preview.box_text, preview.box_values, alphas, strict=False
    ):
        if ndisplay == 3 and a < 1:  # 3D: the labels of the current pair only; all of them overlap
            continue
        centre = (np.asarray(lo) + np.asarray(hi) - 1) / 2.0
        shown = [hi[k] - lo[k] for k in range(3) if ndisplay == 3 or k != sliced_axis]
        width = plate_width(min(shown), len(text))
        if ndisplay == 3:
            steps = [centre]
        else:
            row = min(k for k in range(3) if k != sliced_axis)  # the axis drawn top to bottom
            if width > min(shown):  # a small patch: its label just above it, not over its content
                centre[row] = lo[row] - 0.5 - width / 6
            steps = []
            for k in range(int(lo[sliced_axis]), int(hi[sliced_axis])):
                p = centre.copy()
                p[sliced_axis] = k
                steps.append(p)
        pts.extend(steps)
        labels.extend([text] * len(steps))
        rgba.extend([_text_colour(colour(v - 1), a)] * len(steps))
        sizes.extend([width] * len(steps))
    data = np.array(pts, dtype=float).reshape(-1, 3)
    return data, labels, np.array(rgba).reshape(-1, 4), np.asarray(sizes, dtype=float)


def _text_colour(rgba: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """A box colour lifted towards white so that it reads on the dark plate (dark blues and purples do not);
    the text of a dimmed box is dimmed less than the box, so it stays legible."""
    c = np.asarray(rgba, dtype=float).copy()
    c[:3] = 0.45 + 0.55 * c[:3]
    c[3] = max(0.7, float(alpha))
    return c


def set_text(
    layer: Any, points: np.ndarray, labels: list[str], rgba: np.ndarray, sizes: Any, plate: bool = True
) -> None:
    """Replace the points and labels of a text layer made with :func:`text_kwargs`, plates included."""
    set_points(layer, points, text_kwargs(labels, rgba, sizes, plate))


def set_points(layer: Any, data: np.ndarray, kwargs: dict[str, Any]) -> None:
    """New points, features, text and plates for a Points layer, touching only what changed (every napari
    setter refreshes the whole layer)."""
    for key in ("face_color", "symbol", "border_width"):  # what the points added below get
        if key in kwargs:
            setattr(layer, f"current_{key}", kwargs[key])
    layer.data = data
    if "features" in kwargs:
        layer.features = kwargs["features"]
    text = kwargs.get("text")
    if text is not None and getattr(layer.text.string, "format", None) != text["string"]:
        layer.text = text
    if not len(layer.data):
        return
    size = np.broadcast_to(np.asarray(kwargs.get("size", 1.0), dtype=float), (len(layer.data),))
    if not np.array_equal(np.asarray(layer.size, dtype=float), size):
        layer.size = size
    if "face_color" in kwargs and not np.allclose(layer.face_color, transform_colour(kwargs["face_color"])):
        layer.face_color = kwargs["face_color"]


def transform_colour(colour: Any) -> np.ndarray:
    """One colour (name, hex or RGBA) as RGBA floats."""
    from napari.utils.colormaps.standardize_color import transform_color

    return np.asarray(transform_color(colour)[0])




def recycle(viewer: Any, source: str, specs: list[tuple]) -> None:
    """Rename this scan's spare preview layers to the names ``specs`` needs (same role and type), so a new
    pretext or plane count updates layers in place: creating a layer (and its GL visual) costs far more than
    updating one."""
    wanted = {spec[0] for spec in specs}
    spare = [layer for layer in explorer_layers(viewer, source) if layer.name not in wanted]
    for name, layer_type, *_, role in specs:
        if name in viewer.layers:
            continue
        for layer in spare:
            if layer.metadata[META].get("role") == role and kind(layer).lower() == layer_type:
                layer.name = name
                spare.remove(layer)
                break
