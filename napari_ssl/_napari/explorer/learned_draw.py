"""Layers of the network's answer (GUI thread): each pretext's registry record names its drawing
(``AnswerSpec.draw`` / ``.canvas``, in its unit's ``explore`` module), which gives ``(name, layer_type, data, kwargs,
role)`` in plain data; :func:`answer_layers` builds the napari objects those describe (a label colormap, a rendered
mosaic of planes) and :func:`canvas_text` gives the canvas lines. See :mod:`~napari_ssl._napari.explorer.learned`."""

from __future__ import annotations

from typing import Any

from napari_ssl._napari.explorer.learned_compute import LearnedAnswer

__all__ = ["answer_layers", "canvas_text", "materialise"]


def materialise(spec: tuple) -> tuple:
    """``spec`` with its plain-data descriptions made napari objects: data ``{"mosaic": planes, "focus": k}``
    (:func:`~napari_ssl.pretext._explore.mosaic_of`) rendered as an RGB grid, a ``colormap`` kwarg
    ``{"direct": {value: RGBA}}`` (:func:`~napari_ssl.pretext._explore.direct_colormap`) a ``DirectLabelColormap``."""
    name, layer_type, data, kwargs, role = spec
    if isinstance(data, dict) and "mosaic" in data:
        from napari_ssl._napari.explorer.gallery import mosaic

        data = mosaic(data["mosaic"], data.get("focus"))
    cmap = kwargs.get("colormap")
    if isinstance(cmap, dict) and "direct" in cmap:
        from napari.utils.colormaps import DirectLabelColormap

        kwargs = {**kwargs, "colormap": DirectLabelColormap(color_dict=dict(cmap["direct"]))}
    return name, layer_type, data, kwargs, role


def _answer_spec(result: LearnedAnswer) -> tuple[Any, str]:
    from napari_ssl.pretext import registry
    from napari_ssl.study.answers import answer_spec

    return answer_spec(result.pretext), registry.get(result.pretext).label


def answer_layers(viewer: Any, result: LearnedAnswer, source_layer: Any) -> list[tuple]:
    """The layers of ``result`` (its pretext's ``AnswerSpec.draw``)."""
    from napari_ssl.pretext.registry import resolve

    spec, _ = _answer_spec(result)
    return [materialise(s) for s in resolve(spec.draw)(viewer, result, source_layer)]


def canvas_text(result: LearnedAnswer) -> str:
    """The lines shown on the canvas (its pretext's ``AnswerSpec.canvas``): which checkpoint, what each panel /
    colour means, the numbers."""
    from napari_ssl.pretext.registry import resolve

    spec, label = _answer_spec(result)
    return str(resolve(spec.canvas)(result, label))
