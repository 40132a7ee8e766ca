"""Context restoration (Chen et al., Medical Image Analysis 2019), one unit: the task (:mod:`.task`), its training
sample (:mod:`.sample`), its explorer drawing (:mod:`.explore`) and its registry record (:data:`SPEC`). Its network
and its answer in the explorer are the restoration U-Net's, shared with Models Genesis
(:mod:`napari_ssl.pretext._restoration`).

Importing this package imports neither torch nor Qt: its parts are named as ``".module:attribute"`` strings, resolved
against this package on use.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from napari_ssl.pretext._restoration import HOOKS, RESTORATION_ANSWER
from napari_ssl.pretext.context.task import MIN_INSIDE, ContextParams, ContextRestoration
from napari_ssl.pretext.registry import ExplorerSpec, PretextSpec

__all__ = ["MIN_INSIDE", "SPEC", "ContextParams", "ContextRestoration"]


def defaults(patch: int) -> dict[str, Any]:
    """Context patches of ``patch // 6`` voxels."""
    return {"patch_size": max(2, patch // 6)}


SPEC = PretextSpec(
    name="context",
    label="Context restoration",
    colour="#f28e2b",
    order=20,
    module=__name__,
    task=".task:ContextRestoration",
    adapter=".sample:ContextAdapter",
    hooks=HOOKS,
    backbone="3d",
    transfer_decoder=False,  # its residual decoder outputs only the swaps' correction (registry.PretextSpec)
    metrics=("context/psnr_gain", "context/psnr", "context/psnr_input"),
    defaults=defaults,
    explorer=ExplorerSpec(
        preview=".explore:context_preview", step="swap", step_param="n_swaps", mm_params=("patch_size",),
        answer=replace(RESTORATION_ANSWER, at_step=".explore:context_step_params"),  # the swaps shown
    ),
    paper="Chen et al., MedIA 2019",
)
