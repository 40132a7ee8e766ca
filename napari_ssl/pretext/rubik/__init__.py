"""Rubik's cube recovery (Zhuang et al., MICCAI 2019), one unit: the task (:mod:`.task`), its training sample
(:mod:`.sample`), its network (:mod:`.network`: hooks, heads, losses, metrics), its answer in the explorer
(:mod:`.answer`), its explorer drawing (:mod:`.explore`) and its registry record (:data:`SPEC`).

Importing this package imports neither torch nor Qt: its parts are named as ``".module:attribute"`` strings, resolved
against this package on use.
"""

from __future__ import annotations

from typing import Any

from napari_ssl.pretext.registry import AnswerSpec, ExplorerSpec, PretextSpec
from napari_ssl.pretext.rubik.task import RubikCube, RubikParams, min_hamming_distance, permutation_set

__all__ = ["SPEC", "RubikCube", "RubikParams", "min_hamming_distance", "permutation_set"]


def defaults(patch: int) -> dict[str, Any]:
    """Rubik's gap ~ a quarter of a cell (the paper's 10 voxels at most)."""
    return {"gap": int(min(10, max(1, (patch // 2) // 4)))}


SPEC = PretextSpec(
    name="rubik",
    label="Rubik's cube",
    colour="#4c9be8",
    order=10,
    module=__name__,
    task=".task:RubikCube",
    adapter=".sample:RubikAdapter",
    hooks=".network:RubikHooks",
    backbone="3d-encoder",
    metrics=("rubik/perm_top1", "rubik/rot_acc"),
    defaults=defaults,
    explorer=ExplorerSpec(
        preview=".explore:rubik_preview", restore=True,
        answer=AnswerSpec(compute=".answer:answer_rubik", describe=".answer:describe_rubik",
                          draw=".explore:rubik_specs", canvas=".explore:rubik_text"),
    ),
    paper="Zhuang et al., MICCAI 2019; Zhu et al., MedIA 2020",
)
