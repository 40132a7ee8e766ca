"""Volume <-> napari layers: geometry in, geometry out.

A layer built here sits at its true world position in mm (patient coordinates, see
:mod:`napari_ssl.io.volume`), so scans, single-slice views and overlays from different series line up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from napari_ssl.io.volume import Volume

if TYPE_CHECKING:
    import napari

__all__ = [
    "LABEL_HINTS",
    "arrange_case_layers",
    "guess_layer_type",
    "layer_kwargs",
    "layer_to_volume",
    "volume_from_layer_data",
    "volume_to_layer_data",
]

#: file-name fragments that mark a label volume (segmentation masks)
LABEL_HINTS = ("seg", "label", "mask", "gm.", "wm.")


def guess_layer_type(volume: Volume) -> str:
    """``"labels"`` for an integer volume whose name says it is a mask, else ``"image"``."""
    name = (volume.name or "").lower() + (volume.path or "").lower().rsplit("/", 1)[-1]
    if volume.array.dtype.kind in "biu" and any(h.rstrip(".") in name for h in LABEL_HINTS[:3]):
        return "labels"
    return "image"


def volume_to_layer_data(
    volume: Volume, layer_type: str | None = None, **extra: Any
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari ``LayerDataTuple`` for ``volume`` placed in world mm.

    Parameters
    ----------
    volume : Volume
        The scan.
    layer_type : {"image", "labels"}, optional
        Guessed from dtype and name when omitted.
    **extra
        More layer keyword arguments (colormap, opacity, ...).
    """
    layer_type = layer_type or guess_layer_type(volume)
    kwargs = layer_kwargs(volume)
    data = volume.array
    if layer_type == "labels":
        if data.dtype.kind == "f" or data.dtype == np.bool_:
            data = data.astype(np.uint16 if data.size and data.max() > 255 else np.uint8)
        elif data.dtype.kind == "i" and data.size and data.min() < 0:
            raise ValueError(f"{volume.name or 'labels'}: label volumes cannot hold negative ids")
    else:
        kwargs.setdefault("colormap", "gray")
        if data.size:
            lo, hi = _contrast(data)
            if hi > lo:
                kwargs["contrast_limits"] = (lo, hi)
    if volume.array.ndim == 4:
        kwargs["axis_labels"] = ("t", "z", "y", "x")
    kwargs.update(extra)
    return data, kwargs, layer_type


def _contrast(data: np.ndarray) -> tuple[float, float]:
    sample = data[tuple(slice(None, None, max(1, s // 64)) for s in data.shape)]
    lo, hi = np.percentile(sample, (0.5, 99.5))
    return float(lo), float(hi)


def layer_to_volume(layer: napari.layers.Layer) -> Volume:
    """The :class:`Volume` a layer shows: its data with the world geometry of its transform."""
    return volume_from_layer_data(
        np.asarray(layer.data),
        scale=layer.scale,
        translate=layer.translate,
        affine=layer.affine.affine_matrix,
        name=layer.name,
        metadata=dict(layer.metadata),
    )


def layer_kwargs(volume: Volume) -> dict[str, Any]:
    """Keyword arguments for ``viewer.add_image`` / ``add_labels`` that place ``volume``'s voxels in world mm.

    ``scale`` is the spacing and ``translate`` the origin; an oblique or flipped ``direction`` goes in
    ``affine`` as a rotation about the origin, so ``layer.scale`` still reads as the voxel size.
    A leading time/channel axis gets scale 1.
    """
    lead = volume.array.ndim - 3
    rot = np.eye(4)
    if not np.allclose(volume.direction, np.eye(3)):
        rot[:3, :3] = volume.direction
        rot[:3, 3] = np.asarray(volume.origin) - volume.direction @ np.asarray(volume.origin)
    affine = np.eye(4 + lead)
    affine[lead:, lead:] = rot
    kwargs: dict[str, Any] = {
        "scale": (1.0,) * lead + volume.spacing,
        "translate": (0.0,) * lead + volume.origin,
        "affine": affine,
        "metadata": {
            "napari_ssl": {
                "spacing": list(volume.spacing),
                "origin": list(volume.origin),
                "direction": volume.direction.tolist(),
                "path": volume.path,
                **{k: v for k, v in volume.metadata.items() if _jsonable(v)},
            }
        },
    }
    if volume.name:
        kwargs["name"] = volume.name
    return kwargs


def volume_from_layer_data(
    data: Any,
    *,
    scale: Any = None,
    translate: Any = None,
    affine: Any = None,
    name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Volume:
    """Rebuild a :class:`Volume` from a layer's data and transform (the inverse of :func:`layer_kwargs`).

    Uses the last three axes of ``scale``, ``translate`` and ``affine`` (a 4x4 or larger matrix).
    A shear or a non-orthonormal affine raises ``ValueError``.
    """
    array = np.asarray(data)
    lead = array.ndim - 3
    spacing = np.ones(3) if scale is None else np.asarray(scale, dtype=float)[-3:]
    origin = np.zeros(3) if translate is None else np.asarray(translate, dtype=float)[-3:]
    full = np.eye(4)
    if affine is not None:
        mat = np.asarray(affine, dtype=float)
        full = mat[lead:, lead:] if mat.shape[0] == 4 + lead else mat[-4:, -4:]
    # world = A (origin + S idx) with A = [R | t]  =>  origin' = R origin + t, direction = R.
    rotation = full[:3, :3]
    norms = np.linalg.norm(rotation, axis=0)  # fold any scaling in the affine into the spacing
    if np.any(norms <= 0):
        raise ValueError("layer affine is singular")
    meta = dict(metadata or {})
    extra = meta.pop("napari_ssl", {}) if isinstance(meta.get("napari_ssl"), dict) else {}
    return Volume(
        array=array,
        spacing=tuple(spacing * norms),
        origin=tuple(rotation @ origin + full[:3, 3]),
        direction=rotation / norms[None, :],
        path=extra.get("path"),
        name=name,
        metadata={k: v for k, v in extra.items() if k not in {"spacing", "origin", "direction", "path"}},
    )


def arrange_case_layers(
    layers: list[tuple[np.ndarray, dict[str, Any], str]], volumes: list[Volume]
) -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Order a case's layers so the user sees something useful when they open together.

    Image layers come first (drawn below) and Labels layers last (drawn on top). Of several images on one
    grid (BraTS t1, t1ce, t2, flair) only the first is visible, so it is not hidden under an opaque twin; images
    elsewhere in space (cardiac views, each in its own plane) all stay visible.
    """
    pairs = sorted(zip(layers, volumes, strict=True), key=lambda p: p[0][2] == "labels")
    shown: list[Volume] = []
    out = []
    for (data, kwargs, layer_type), volume in pairs:
        if layer_type == "image":
            if any(volume.same_geometry(other) for other in shown):
                kwargs = {**kwargs, "visible": False}
            else:
                shown.append(volume)
        out.append((data, kwargs, layer_type))
    return out


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, tuple))
