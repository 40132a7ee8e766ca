"""Models Genesis (Zhou et al., Medical Image Analysis 2021), one unit: the task (:mod:`.task`), its training
sample (:mod:`.sample`) and its registry record (:data:`SPEC`). Its network is the restoration U-Net shared with
context restoration (:mod:`napari_ssl.pretext._restoration`), predicting the correction from a zero output layer,
and so is its answer in the explorer.

Importing this package imports neither torch nor Qt: the parts are named as ``".module:attribute"`` strings,
resolved against this package on use.
"""

from __future__ import annotations

from napari_ssl.pretext._restoration import HOOKS, RESTORATION_ANSWER
from napari_ssl.pretext.genesis.task import INNER, OUTER, GenesisParams, ModelsGenesis, bezier_map
from napari_ssl.pretext.registry import ExplorerSpec, PretextSpec

__all__ = ["INNER", "OUTER", "SPEC", "GenesisParams", "ModelsGenesis", "bezier_map"]

SPEC = PretextSpec(
    name="genesis",
    label="Models Genesis",
    colour="#b07aa1",
    order=40,
    module=__name__,
    task=".task:ModelsGenesis",
    adapter=".sample:GenesisAdapter",
    hooks=HOOKS,
    backbone="3d",
    metrics=("genesis/psnr_gain", "genesis/psnr", "genesis/psnr_input"),
    # the network's answer: the restoration view of context restoration (the same U-Net and hooks)
    explorer=ExplorerSpec(restore=False, answer=RESTORATION_ANSWER),
    paper="Zhou et al., Models Genesis, MedIA 2021",
)
