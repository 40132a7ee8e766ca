"""Anatomy-oriented imaging planes (Zhang et al.), one unit: the task (:mod:`.task`, with its plane geometry in
:mod:`.geometry` and :mod:`.views`), its samples from native 2D acquisitions (:mod:`.native`), its training sample
(:mod:`.sample`), its network (:mod:`.network`: hooks, heads, losses, metrics), its answer in the explorer
(:mod:`.answer`), its explorer drawing (:mod:`.explore`) and its registry record (:data:`SPEC`).

Importing this package imports neither torch nor Qt: its parts are named as ``".module:attribute"`` strings, resolved
against this package on use.
"""

from __future__ import annotations

from typing import Any

from napari_ssl.pretext.planes.geometry import PlanesParams
from napari_ssl.pretext.planes.task import ImagingPlanes
from napari_ssl.pretext.registry import AnswerSpec, ExplorerSpec, PretextSpec

__all__ = ["SPEC", "ImagingPlanes", "PlanesParams"]


def defaults(patch: int) -> dict[str, Any]:
    """Plane images as large as the 3D patch, so one backbone size fits both."""
    return {"size": patch}


def batch(task: Any, patch: int) -> int:
    """As many plane pixels per step as the 3D pretexts' batch holds voxels (nnU-Net's 2D batches are larger than
    its 3D ones for the same reason): ``2 * 48^3 / (11 planes * 48^2)`` -> 9 samples at the CPU defaults, 17 with
    the GPU's 96^3 patches; never below the 3D batch."""
    from napari_ssl.plan import DEFAULT_BATCH

    pixels = (task.n_stack + task.n_oblique) * task.size[0] * task.size[1]
    return max(DEFAULT_BATCH, round(DEFAULT_BATCH * patch**3 / pixels))


SPEC = PretextSpec(
    name="planes",
    label="Imaging planes",
    colour="#59a14f",
    order=30,
    module=__name__,
    task=".task:ImagingPlanes",
    adapter=".sample:PlanesAdapter",
    hooks=".network:PlanesHooks",
    backbone="2d",
    metrics=("planes/angle_error_deg", "planes/position_mae"),
    defaults=defaults,
    batch=batch,
    explorer=ExplorerSpec(
        preview=".explore:planes_preview", step="plane", planes=True,
        answer=AnswerSpec(compute=".answer:answer_planes", describe=".answer:describe_planes",
                          draw=".explore:planes_specs", canvas=".explore:planes_text",
                          text_position="bottom_left"),  # clear of the grids of planes
    ),
    native_views=".native:native_datasets",
    paper="Zhang et al., MICCAI 2020 (cardiac imaging planes)",
)
