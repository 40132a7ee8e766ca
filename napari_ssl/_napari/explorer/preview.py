"""The Pretext explorer worker's whole job, :func:`compute_preview`: sample a pretext's parameters, apply it and lay
out what the dock draws. It dispatches to the pretext's registered preview (each unit's ``explore`` module, e.g.
:mod:`napari_ssl.pretext.rubik.explore`) or to the generic one (:func:`napari_ssl.pretext._explore.boxes_preview`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_ssl.pretext._explore import Preview, PreviewRequest, boxes_preview

__all__ = ["compute_preview", "make_task"]


def make_task(pretext: str, values: dict[str, Any]) -> Any:
    """A pretext instance; its constructor raises ``ValueError`` naming any bad parameter."""
    from napari_ssl._napari.params import pretext_class

    return pretext_class(pretext)(**values)


def compute_preview(req: PreviewRequest) -> Preview:
    """Sample, apply and lay out one pretext preview (the worker's whole job).

    Raises
    ------
    ValueError
        From the pretext, naming the parameter and its limit (volume too small, too many swaps, ...).
    """
    from napari_ssl.pretext import registry

    spec = registry.get(req.pretext)  # ValueError naming the known pretexts
    task = make_task(req.pretext, req.values)
    rng = np.random.default_rng(int(req.seed))
    if spec.explorer.preview is None:  # the generic preview: the corrupted scan and the task's boxes
        return boxes_preview(req, task, rng)
    return registry.resolve(spec.explorer.preview)(req, task, rng)  # type: ignore[no-any-return]
