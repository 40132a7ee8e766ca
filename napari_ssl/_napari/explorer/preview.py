"""The Pretext explorer worker's whole job, :func:`compute_preview`: sample a pretext's parameters, apply it and lay
out what the dock draws. It dispatches to the pretext's registered preview (Rubik's cube and context restoration in
:mod:`~napari_ssl._napari.explorer.compute`, the planes in :mod:`~napari_ssl._napari.explorer.planes`) or to the
generic one (:mod:`~napari_ssl._napari.explorer.generic`), so it sits above both: no module imports its caller.
"""

from __future__ import annotations

import numpy as np

from napari_ssl._napari.explorer.compute import Preview, PreviewRequest, make_task
from napari_ssl._napari.explorer.generic import boxes_preview

__all__ = ["compute_preview"]


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
