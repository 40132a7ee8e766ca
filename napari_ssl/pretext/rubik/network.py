"""Rubik's cube network (torch): its hooks (:class:`RubikHooks`), the Siamese heads on the 3D encoder's features of
every cube, their losses and metrics.

Batch keys: ``rubik.cubes`` (B, n_cubes, C, s, s, s), ``rubik.perm`` (B,) int64, ``rubik.rot`` (B, n_cubes, A) 0/1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_ssl.models.backbone import LEVELS
from napari_ssl.models.heads import POOL_GRID, pool_features
from napari_ssl.models.hooks import Hooks
from napari_ssl.pretext.rubik.task import permutation_set

__all__ = ["HEADS", "RubikCellHead", "RubikHead", "RubikHooks", "cube_levels", "rubik_losses", "rubik_metrics"]

Batch = Mapping[str, torch.Tensor]
#: the choices of the head field ``head``
HEADS = ("cells", "concat")


def cube_levels(cube_shape: Any) -> int:
    """Encoder depth used on a cube: the deepest level that keeps >= 2 voxels per edge."""
    edge = min(cube_shape)
    level = 0
    while level < LEVELS and edge // 2 ** (level + 1) >= 2:
        level += 1
    return level


class RubikHead(nn.Module):
    """Siamese head of Zhuang et al. (MICCAI 2019): per-cube features, concatenated, two FC heads.

    Input: each cube's encoder features pooled by :func:`pool_features` (``channels`` is their width).
    ``perm`` gives logits over the K permutations (softmax / cross-entropy), ``rot`` one logit per cube and
    rotation axis (sigmoid / binary cross-entropy).

    On its own (head field ``"concat"``, checkpoints from before :class:`RubikCellHead`) it
    learns nothing in a few hundred steps: each of the K classes is one output of an FC layer that sees a
    few examples of it, and each cube's rotation is learned once per slot.
    """

    def __init__(
        self, channels: int, n_cubes: int, n_permutations: int, n_axes: int, hidden: int = 256
    ) -> None:
        super().__init__()
        self.n_cubes, self.n_axes = n_cubes, n_axes
        width = channels * n_cubes
        self.perm = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_permutations)
        )
        self.rot = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_cubes * n_axes)
        )

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``pooled`` (B, n_cubes, channels) -> (perm logits (B, K), rot logits (B, n_cubes, A))."""
        flat = pooled.flatten(1)
        return self.perm(flat), self.rot(flat).view(-1, self.n_cubes, self.n_axes)


class RubikCellHead(RubikHead):
    """:class:`RubikHead` plus a classifier shared by every cube: where did this cube come from, how is it turned.

    ``cells`` maps one cube's pooled features to log-probabilities over its source cell and its orientation
    (the ``2**n_axes`` combinations of the rotation flags) jointly: a cube from one corner of the body turned
    180 degrees looks much like an unturned cube from the opposite corner, so place and turn are told apart
    together. Every cube of every sample trains the same classifier. The permutation logits add, over the
    cells, the log-probability that the cube in the cell came from the cell the permutation says (a
    product of the cubes' opinions); the rotation logits add each flag's log-odds under the cube's
    orientation distribution. The concatenated FC heads of the paper are added on top (joint cues).

    Parameters
    ----------
    permutations : array (K, n_cubes)
        The pretext's permutation set (:func:`napari_ssl.pretext.rubik.task.permutation_set`): row ``k``, entry
        ``i`` is the source cell of the cube in cell ``i``.
    """

    def __init__(
        self, channels: int, n_cubes: int, n_permutations: int, n_axes: int, permutations: Any,
        hidden: int = 256, cell_hidden: int = 128,
    ) -> None:
        super().__init__(channels, n_cubes, n_permutations, n_axes, hidden)
        perms = torch.tensor(np.array(permutations, dtype=np.int64))
        if tuple(perms.shape) != (n_permutations, n_cubes):
            raise ValueError(f"permutations must be ({n_permutations}, {n_cubes}), got {tuple(perms.shape)}")
        self.n_turns = 2**n_axes
        self.cells = nn.Sequential(
            nn.Linear(channels, cell_hidden), nn.ReLU(inplace=True), nn.Linear(cell_hidden, n_cubes * self.n_turns)
        )
        self.register_buffer("source", perms.T.contiguous(), persistent=False)  # (n_cubes, K)
        # bit a of orientation r: flag a set (flag 0 is the most significant bit)
        bits = [[(r >> (n_axes - 1 - a)) & 1 for a in range(n_axes)] for r in range(self.n_turns)]
        self.register_buffer("flag_on", torch.tensor(bits, dtype=torch.bool), persistent=False)  # (R, A)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        perm, rot = super().forward(pooled)
        b = pooled.shape[0]
        joint = torch.log_softmax(self.cells(pooled).float().flatten(2), -1)
        joint = joint.view(b, self.n_cubes, self.n_cubes, self.n_turns)  # (B, cell, source, orientation)
        where = torch.logsumexp(joint, -1)  # (B, cell, source)
        perm = perm.float() + where.gather(2, self.source[None].expand(b, -1, -1)).sum(1)
        turn = torch.logsumexp(joint, 2)  # (B, cell, orientation)
        neg_inf = torch.finfo(turn.dtype).min
        on = torch.where(self.flag_on.T[None, None], turn[:, :, None, :], neg_inf).logsumexp(-1)  # (B, cell, A)
        off = torch.where(~self.flag_on.T[None, None], turn[:, :, None, :], neg_inf).logsumexp(-1)
        return perm, rot.float() + on - off


def rubik_losses(
    perm_logits: torch.Tensor,
    rot_logits: torch.Tensor,
    perm: torch.Tensor,
    rot: torch.Tensor,
    alpha: float = 0.5,
) -> dict[str, torch.Tensor]:
    """``{"rubik": alpha * perm + (1 - alpha) * rot, "rubik/perm": ..., "rubik/rot": ...}``."""
    l_perm = F.cross_entropy(perm_logits.float(), perm.long())
    l_rot = F.binary_cross_entropy_with_logits(rot_logits.float(), rot.float())
    return {"rubik": alpha * l_perm + (1 - alpha) * l_rot, "rubik/perm": l_perm, "rubik/rot": l_rot}


def rubik_metrics(
    perm_logits: torch.Tensor, rot_logits: torch.Tensor, perm: torch.Tensor, rot: torch.Tensor
) -> dict[str, float]:
    """Permutation top-1 accuracy and per-flag rotation accuracy."""
    top1 = (perm_logits.argmax(-1) == perm.long()).float().mean()
    rot_acc = ((rot_logits > 0).float() == rot.float()).float().mean()
    return {"rubik/perm_top1": float(top1), "rubik/rot_acc": float(rot_acc)}


class RubikHooks(Hooks):
    """Rubik's cube: a Siamese head on the 3D encoder's features of every cube (head field ``head``: ``"cells"``, the
    shared cube classifier plus the paper's FC heads (:class:`RubikCellHead`), or ``"concat"``, the FC heads alone
    (:class:`RubikHead`), as in checkpoints from before the shared classifier).

    Head fields: ``cube_shape`` (one cube's spatial shape after cropping: it picks the encoder depth,
    :func:`cube_levels`), ``n_cubes``, ``n_permutations`` (K), ``n_axes`` (rotation axes per cube), ``alpha`` (weight
    of the permutation loss, ``1 - alpha`` for rotation) and ``head``."""

    FIELDS: ClassVar[Mapping[str, Any]] = {"cube_shape": (), "n_cubes": 8, "n_permutations": 100, "n_axes": 2,
                                           "alpha": 0.5, "head": "cells"}
    LEGACY: ClassVar[Mapping[str, Any]] = {"head": "concat"}  # checkpoints from before the shared cube classifier
    CHOICES: ClassVar[tuple[str, ...]] = ("head",)
    FLAT: ClassVar[Mapping[str, str]] = {"cube_shape": "cube_shape", "n_cubes": "n_cubes",
                                         "n_permutations": "n_permutations", "n_axes": "n_axes", "alpha": "alpha",
                                         "rubik_head": "head"}

    def model_fields(self, task: Any, probe: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "cube_shape": tuple(int(s) for s in probe[f"{self.name}.cubes"].shape[-3:]),
            "n_cubes": int(task.grid) ** 3,
            "n_permutations": int(task.n_permutations),
        }

    def check(self, spec: Any) -> None:
        f = spec.heads[self.name]
        if len(f["cube_shape"]) != 3 or min(f["cube_shape"]) < 2:
            raise ValueError(f"{self.name} needs cube_shape of 3 edges >= 2 voxels, got {f['cube_shape']!r}")
        if f["head"] not in HEADS:
            raise ValueError(f"{self.name} head must be one of {HEADS}, got {f['head']!r}")
        if not 0.0 <= f["alpha"] <= 1.0:
            raise ValueError(f"{self.name} alpha must be in [0, 1], got {f['alpha']}")

    def build(self, model: nn.Module) -> None:
        f = model.spec.heads[self.name]
        channels = model.backbone3d.channels(cube_levels(f["cube_shape"])) * POOL_GRID**3
        if f["head"] == "concat":  # checkpoints from before the shared cube classifier
            model.rubik_head = RubikHead(channels, f["n_cubes"], f["n_permutations"], f["n_axes"])
            return
        model.rubik_head = RubikCellHead(channels, f["n_cubes"], f["n_permutations"], f["n_axes"],
                                         permutation_set(f["n_cubes"], f["n_permutations"]))

    def forward(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        cubes = batch[f"{self.name}.cubes"]
        b, n = cubes.shape[:2]
        feats = model.backbone3d.encode(cubes.flatten(0, 1), levels=cube_levels(model.spec.heads[self.name]["cube_shape"]))[-1]
        pooled = pool_features(feats).view(b, n, -1)
        perm, rot = model.rubik_head(pooled)
        return {f"{self.name}.perm": perm, f"{self.name}.rot": rot}

    def losses(self, model: nn.Module, out: Batch, batch: Batch) -> dict[str, torch.Tensor]:
        n = self.name
        return rubik_losses(out[f"{n}.perm"], out[f"{n}.rot"], batch[f"{n}.perm"], batch[f"{n}.rot"],
                            model.spec.heads[n]["alpha"])

    def metrics(self, out: Batch, batch: Batch) -> dict[str, float]:
        n = self.name
        return rubik_metrics(out[f"{n}.perm"], out[f"{n}.rot"], batch[f"{n}.perm"], batch[f"{n}.rot"])
