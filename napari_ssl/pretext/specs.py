"""The registry records of the three original pretexts (their task classes live in ``rubik.py``, ``context.py`` and
``planes.py``, their sample builders in :mod:`napari_ssl.training.data`, their network hooks in
:mod:`napari_ssl.models.tasks`). Nothing here imports torch."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from napari_ssl.pretext.registry import AnswerSpec, ExplorerSpec, PretextSpec

__all__ = ["CONTEXT", "PLANES", "RESTORATION_ANSWER", "RUBIK"]

_PREVIEWS = "napari_ssl._napari.explorer.compute"
_ANSWERS = "napari_ssl.study.answers"
_DRAW = "napari_ssl._napari.explorer.learned_draw"

#: what a restoration network answers (context restoration, Models Genesis): the restored scan beside the
#: corrupted one and the original, their PSNRs
RESTORATION_ANSWER = AnswerSpec(compute=f"{_ANSWERS}:answer_context", describe=f"{_ANSWERS}:describe_restoration",
                                draw=f"{_DRAW}:restoration_specs", canvas=f"{_DRAW}:restoration_text")


def _rubik_defaults(patch: int) -> dict[str, Any]:
    """Rubik's gap ~ a quarter of a cell (the paper's 10 voxels at most)."""
    return {"gap": int(min(10, max(1, (patch // 2) // 4)))}


def _context_defaults(patch: int) -> dict[str, Any]:
    """Context patches of ``patch // 6`` voxels."""
    return {"patch_size": max(2, patch // 6)}


def _planes_defaults(patch: int) -> dict[str, Any]:
    """Plane images as large as the 3D patch, so one backbone size fits both."""
    return {"size": patch}


def _planes_batch(task: Any, patch: int) -> int:
    """As many plane pixels per step as the 3D pretexts' batch holds voxels (nnU-Net's 2D batches are larger than
    its 3D ones for the same reason): ``2 * 48^3 / (11 planes * 48^2)`` -> 9 samples at the CPU defaults, 17 with
    the GPU's 96^3 patches; never below the 3D batch."""
    from napari_ssl.plan import DEFAULT_BATCH

    pixels = (task.n_stack + task.n_oblique) * task.size[0] * task.size[1]
    return max(DEFAULT_BATCH, round(DEFAULT_BATCH * patch**3 / pixels))


RUBIK = PretextSpec(
    name="rubik",
    order=10,
    label="Rubik's cube",
    colour="#4c9be8",
    task="napari_ssl.pretext.rubik:RubikCube",
    adapter="napari_ssl.training.data:RubikAdapter",
    hooks="napari_ssl.models.tasks:RubikHooks",
    backbone="3d-encoder",
    metrics=("rubik/perm_top1", "rubik/rot_acc"),
    defaults=_rubik_defaults,
    explorer=ExplorerSpec(
        preview=f"{_PREVIEWS}:rubik_preview", restore=True,
        answer=AnswerSpec(compute=f"{_ANSWERS}:answer_rubik", describe=f"{_ANSWERS}:describe_rubik",
                          draw=f"{_DRAW}:rubik_specs", canvas=f"{_DRAW}:rubik_text"),
    ),
    paper="Zhuang et al., MICCAI 2019; Zhu et al., MedIA 2020",
)

CONTEXT = PretextSpec(
    name="context",
    order=20,
    label="Context restoration",
    colour="#f28e2b",
    task="napari_ssl.pretext.context:ContextRestoration",
    adapter="napari_ssl.training.data:ContextAdapter",
    hooks="napari_ssl.models.tasks:RestorationHooks",
    backbone="3d",
    transfer_decoder=False,  # its residual decoder outputs only the swaps' correction (registry.PretextSpec)
    metrics=("context/psnr_gain", "context/psnr", "context/psnr_input"),
    defaults=_context_defaults,
    explorer=ExplorerSpec(
        preview=f"{_PREVIEWS}:context_preview", step="swap", step_param="n_swaps", mm_params=("patch_size",),
        answer=replace(RESTORATION_ANSWER, at_step=f"{_ANSWERS}:context_step_params"),  # the swaps shown
    ),
    paper="Chen et al., MedIA 2019",
)

PLANES = PretextSpec(
    name="planes",
    order=30,
    label="Imaging planes",
    colour="#59a14f",
    task="napari_ssl.pretext.planes:ImagingPlanes",
    adapter="napari_ssl.training.data:PlanesAdapter",
    hooks="napari_ssl.models.tasks:PlanesHooks",
    backbone="2d",
    metrics=("planes/angle_error_deg", "planes/position_mae"),
    defaults=_planes_defaults,
    batch=_planes_batch,
    explorer=ExplorerSpec(
        preview="napari_ssl._napari.explorer.planes:planes_preview", step="plane", planes=True,
        answer=AnswerSpec(compute=f"{_ANSWERS}:answer_planes", describe=f"{_ANSWERS}:describe_planes",
                          draw=f"{_DRAW}:planes_specs", canvas=f"{_DRAW}:planes_text",
                          text_position="bottom_left"),  # clear of the grids of planes
    ),
    native_views="napari_ssl.pretext.planes_native:native_datasets",
    paper="Zhang et al., MICCAI 2020 (cardiac imaging planes)",
)
