"""What the Fine-tune dock reads from its inputs: the classes present in a Labels layer, folder pairs."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["folder_pairs", "label_values"]


def label_values(layer: Any) -> dict[int, str]:
    """Label values present in ``layer`` (background 0 left out) -> name (from its features or metadata)."""
    data = np.asarray(layer.data)
    if data.dtype.kind not in "biu":
        return {}
    flat = data.ravel()
    if flat.size and flat.min() >= 0 and flat.max() < 65536:
        present = np.nonzero(np.bincount(flat.astype(np.int64, copy=False)))[0]
    else:
        present = np.unique(flat)
    names: dict[int, str] = {}
    features = getattr(layer, "features", None)
    if features is not None and {"index", "class"} <= set(features.columns):
        names = {int(i): str(c) for i, c in zip(features["index"], features["class"], strict=True)}
    for key, value in ((layer.metadata.get("napari_ssl") or {}).get("classes") or {}).items():
        names.setdefault(int(key), str(value))
    return {int(v): names.get(int(v), f"label {int(v)}") for v in present if v != 0}


def folder_pairs(images: str, labels: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Scans in ``images`` paired with the label file of the same name in ``labels``."""
    from napari_ssl.io import find_scans

    found = {p.name: p for p in find_scans(labels)}
    imgs, labs = [], []
    for scan in find_scans(images):
        if scan.name in found:
            imgs.append(str(scan))
            labs.append(str(found[scan.name]))
    if not imgs:
        raise ValueError(f"no scan in {images} has a label file of the same name in {labels}")
    return tuple(imgs), tuple(labs)
