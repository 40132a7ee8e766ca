"""Which layers a dock can use, and why not, in one sentence naming the layer (checked before any process starts).

The docks need single-scale 3D scans: :func:`scan_problem` returns ``None`` for a usable Image layer (or a
Labels layer where labels are asked for) and otherwise the reason, e.g.
``"'flair' is a 2D image (shape (240, 240)); choose a 3D scan (z, y, x)"``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MIN_EDGE", "scan_problem"]

#: the smallest edge (voxels) of a scan the docks accept
MIN_EDGE = 8


def scan_problem(layer: Any, *, want: str = "image", what: str = "") -> str | None:
    """Why ``layer`` cannot be used as ``want`` (``"image"`` or ``"labels"``), or ``None`` when it can.

    Parameters
    ----------
    layer : napari layer
    want : {"image", "labels"}
    what : str
        What the dock does with it, for the sentence (``"pretraining"``, ``"segmentation"``, ...).
    """
    name = f"{layer.name!r}"
    kind = layer.__class__.__name__
    doing = f" for {what}" if what else ""
    if want == "image" and kind != "Image":
        article = "an" if kind[:1] in "AEIOU" else "a"
        return f"{name} is {article} {kind} layer; choose an Image layer{doing}"
    if want == "labels" and kind not in {"Labels", "Image"}:
        return f"{name} is a {kind} layer; choose a Labels layer{doing}"
    if getattr(layer, "multiscale", False):
        return (
            f"{name} is a multiscale (pyramid) layer; open the full-resolution scan as one volume{doing}"
        )
    if getattr(layer, "rgb", False):
        return f"{name} is an RGB image; choose a grey-value 3D scan{doing}"
    shape = tuple(int(s) for s in layer.data.shape)
    if want == "labels" and kind == "Image" and layer.data.dtype.kind not in "biu":
        return f"{name} holds {layer.data.dtype} values; labels must be whole numbers (a Labels layer)"
    if len(shape) == 2 or (len(shape) == 3 and min(shape) < 2):
        return f"{name} is a 2D image (shape {shape}); choose a 3D scan (z, y, x){doing}"
    if len(shape) > 3:
        return (
            f"{name} has {len(shape)} dimensions (shape {shape}: time points or channels); "
            f"save or open one 3D volume of it{doing}"
        )
    if len(shape) < 2:
        return f"{name} is not an image (shape {shape})"
    if min(shape) < MIN_EDGE:
        return f"{name} is too small (shape {shape}); every edge needs at least {MIN_EDGE} voxels{doing}"
    return None
