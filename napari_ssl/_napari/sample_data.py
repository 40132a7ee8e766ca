"""npe2 sample data: the procedural head phantom (image + labels), generated offline in code."""

from __future__ import annotations

from typing import Any

from napari_ssl._napari.layers import volume_to_layer_data
from napari_ssl.phantom import PHANTOM_CLASSES, make_phantom


def phantom_layers(seed: int = 0) -> list[tuple[Any, dict[str, Any], str]]:
    """The phantom's image and its tissue/lesion labels, aligned in world mm."""
    image, labels = make_phantom(seed=seed)
    colors = {0: (0.0, 0.0, 0.0, 0.0)} | {k: v[2] for k, v in PHANTOM_CLASSES.items()}
    features = {
        "index": [0, *sorted(PHANTOM_CLASSES)],
        "class": ["background"] + [PHANTOM_CLASSES[k][0] for k in sorted(PHANTOM_CLASSES)],
    }
    return [
        volume_to_layer_data(image, "image"),
        volume_to_layer_data(labels, "labels", opacity=0.35, colormap=_label_colormap(colors), features=features),
    ]


def _label_colormap(colors: dict[int, tuple[float, float, float, float]]) -> Any:
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: (0.0, 0.0, 0.0, 0.0), **colors})
