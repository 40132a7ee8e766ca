"""Task heads of the pretexts (Rubik's Siamese head, plane-position head) and their losses and metrics.

Batches are dicts of tensors built by :mod:`napari_ssl.training.data` (keys ``"<pretext>.<name>"``):

- Rubik: ``rubik.cubes`` (B, n_cubes, C, s, s, s), ``rubik.perm`` (B,) int64, ``rubik.rot`` (B, n_cubes, A) 0/1.
- context: ``context.input`` and ``context.target`` (B, C, z, y, x).
- planes: ``planes.images`` (B, V, C, h, w), ``planes.heatmaps`` (B, V, V, h, w) (channel ``j`` of view ``i``:
  its intersection line with view ``j``), ``planes.has_line`` (B, V, V), ``planes.position`` (B, V) in [0, 1]
  and ``planes.position_mask`` (B, V) (1 for slices of the stack).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Features are average-pooled to this grid per spatial axis before the FC layers. Pooling to a single
#: value would discard everything: after instance normalisation every channel has the same mean, and the
#: coarse layout is what tells a rotated cube (or a slice's position) apart.
POOL_GRID = 2


def pool_features(feats: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C * POOL_GRID**dims): average pooling to a coarse grid, flattened."""
    dims = feats.ndim - 2
    pool = F.adaptive_avg_pool3d if dims == 3 else F.adaptive_avg_pool2d
    return pool(feats, POOL_GRID).flatten(1)


class RubikHead(nn.Module):
    """Siamese head of Zhuang et al. (MICCAI 2019): per-cube features, concatenated, two FC heads.

    Input: each cube's encoder features pooled by :func:`pool_features` (``channels`` is their width).
    ``perm`` gives logits over the K permutations (softmax / cross-entropy), ``rot`` one logit per cube and
    rotation axis (sigmoid / binary cross-entropy).

    On its own (``ModelSpec.rubik_head == "concat"``, checkpoints from before :class:`RubikCellHead`) it
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
        The pretext's permutation set (:func:`napari_ssl.pretext.rubik.permutation_set`): row ``k``, entry
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


class LineHead(nn.Module):
    """Line heatmaps of the plane tasks from the 2D U-Net's last decoder features: conv 3x3 -> instance norm ->
    leaky ReLU -> conv 1x1 to one map per view.

    It replaces the U-Net's 1x1 output convolution (``ModelSpec.planes_head == "conv"``): that one maps the last
    decoder level (8 features on the CPU's ``small`` backbone) linearly to the ``n_views`` maps (11 by default), so
    at most 8 independent line patterns, shared by the stack slices (three lines through the centre, turned with
    the anatomy) and the oblique views (a band per stack slice, the long axis). On BraTS FLAIR, batch 8, 300 CPU
    steps, seed 0: angle error 26.3 degrees with this head, 33.0 with the 1x1 convolution (stack slices' lines:
    32.8 against 42.6, chance 45).
    """

    def __init__(self, channels: int, n_views: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.InstanceNorm2d(hidden, affine=True),
            nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(hidden, n_views, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)  # type: ignore[no-any-return]


class PositionHead(nn.Module):
    """Global head of the plane tasks (relative slice position): pool -> FC -> ReLU -> FC -> 1.

    ``channels`` is the bottleneck width; features are pooled by :func:`pool_features` (a 2x2 grid).
    """

    def __init__(self, channels: int, hidden: int = 128) -> None:
        super().__init__()
        width = channels * POOL_GRID**2
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        return self.mlp(pool_features(bottleneck)).squeeze(-1)


# ---------------------------------------------------------------- losses
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


def planes_losses(
    heatmaps: torch.Tensor,
    positions: torch.Tensor,
    target_heatmaps: torch.Tensor,
    target_positions: torch.Tensor,
    mask: torch.Tensor,
    heatmap_weight: float = 1.0,
    position_weight: float = 1.0,
    line_weight: float = 10.0,
) -> dict[str, torch.Tensor]:
    """MSE of the line heatmaps plus masked MSE of the slice positions (weights 1 and 1 as in Zhang et al.).

    Each heatmap pixel's squared error is weighted ``1 + line_weight * target``: a line covers a few percent of
    its map, so a plain MSE is nearly minimal for a map that is the same everywhere and teaches little (on
    BraTS FLAIR, 1000 CPU steps: angle error 40 degrees plain, 26 with the default 10; chance is 45).
    """
    target = target_heatmaps.float()
    l_heat = ((heatmaps.float() - target) ** 2 * (1 + line_weight * target)).mean()
    m = mask.float()
    l_pos = ((positions.float() - target_positions.float()) ** 2 * m).sum() / m.sum().clamp_min(1.0)
    return {
        "planes": heatmap_weight * l_heat + position_weight * l_pos,
        "planes/heatmap": l_heat,
        "planes/position": l_pos,
    }


# ---------------------------------------------------------------- metrics
def rubik_metrics(
    perm_logits: torch.Tensor, rot_logits: torch.Tensor, perm: torch.Tensor, rot: torch.Tensor
) -> dict[str, float]:
    """Permutation top-1 accuracy and per-flag rotation accuracy."""
    top1 = (perm_logits.argmax(-1) == perm.long()).float().mean()
    rot_acc = ((rot_logits > 0).float() == rot.float()).float().mean()
    return {"rubik/perm_top1": float(top1), "rubik/rot_acc": float(rot_acc)}


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per sample, with the reference's own intensity range as the peak."""
    dims = tuple(range(1, ref.ndim))
    mse = ((x.float() - ref.float()) ** 2).mean(dims).clamp_min(1e-12)
    rng = (ref.amax(dims) - ref.amin(dims)).float().clamp_min(1e-6)
    return 10 * torch.log10(rng**2 / mse)


def context_metrics(
    restored: torch.Tensor, corrupted: torch.Tensor, target: torch.Tensor
) -> dict[str, float]:
    """PSNR of the restoration, of the corrupted input, and the gain (restored - corrupted)."""
    after, before = psnr(restored, target), psnr(corrupted, target)
    return {
        "context/psnr": float(after.mean()),
        "context/psnr_input": float(before.mean()),
        "context/psnr_gain": float((after - before).mean()),
    }


def heatmap_angles(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Orientation (radians, modulo pi) of the line in each heatmap (..., h, w) and its total mass.

    The principal axis of the heatmap's second moments (weights: the positive part of the map) gives the
    line direction; it needs no threshold and works the same on predictions and targets.
    """
    h, w = heatmaps.shape[-2:]
    wts = heatmaps.float().clamp_min(0)
    ys = torch.arange(h, dtype=torch.float32, device=heatmaps.device).view(h, 1)
    xs = torch.arange(w, dtype=torch.float32, device=heatmaps.device).view(1, w)
    mass = wts.sum((-2, -1)).clamp_min(1e-8)
    my = (wts * ys).sum((-2, -1)) / mass
    mx = (wts * xs).sum((-2, -1)) / mass
    dy = ys - my[..., None, None]
    dx = xs - mx[..., None, None]
    syy = (wts * dy * dy).sum((-2, -1)) / mass
    sxx = (wts * dx * dx).sum((-2, -1)) / mass
    sxy = (wts * dx * dy).sum((-2, -1)) / mass
    angle = 0.5 * torch.atan2(2 * sxy, sxx - syy)
    return angle, wts.sum((-2, -1))


def planes_metrics(
    heatmaps: torch.Tensor,
    positions: torch.Tensor,
    target_heatmaps: torch.Tensor,
    target_positions: torch.Tensor,
    mask: torch.Tensor,
    has_line: torch.Tensor | None = None,
) -> dict[str, float]:
    """Line-angle error (degrees, over target maps whose line crosses the image) and slice-position MAE."""
    pred_angle, _ = heatmap_angles(heatmaps)
    true_angle, _ = heatmap_angles(target_heatmaps)
    visible = target_heatmaps.float().amax((-2, -1)) > 0.5
    has_line = visible if has_line is None else visible & has_line.bool()
    diff = torch.remainder(pred_angle - true_angle, math.pi)
    diff = torch.minimum(diff, math.pi - diff)
    out: dict[str, float] = {}
    if bool(has_line.any()):
        out["planes/angle_error_deg"] = float(torch.rad2deg(diff[has_line]).mean())
    m = mask.float()
    if float(m.sum()) > 0:
        out["planes/position_mae"] = float(
            ((positions.float() - target_positions.float()).abs() * m).sum() / m.sum()
        )
    return out
