"""The pretraining network: shared backbones plus one head per pretext, combined with weighted losses.

- ``rubik`` and ``context`` share one 3D :class:`~napari_ssl.models.backbone.UNet` (``backbone3d``): Rubik's
  Siamese head reads its encoder on every cube, context restoration uses the whole U-Net.
- ``planes`` uses a 2D U-Net (``backbone2d``) on the resampled planes: heatmaps from its decoder, slice
  position from its bottleneck. (A 2D network cannot share weights with a 3D one; in a combined run the
  3D pretexts share their encoder and the planes train the 2D one.)

Weight names are stable (``backbone3d.net.conv_0...``, ``backbone2d.net...``, ``rubik_head...``,
``position_head...``), so fine-tuning lifts the encoder (and decoder) out by prefix with
:func:`~napari_ssl.models.backbone.load_parts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from napari_ssl.models.backbone import LEVELS, BackboneSpec, UNet
from napari_ssl.models.heads import (
    POOL_GRID,
    PositionHead,
    RubikHead,
    context_losses,
    context_metrics,
    planes_losses,
    planes_metrics,
    pool_features,
    rubik_losses,
    rubik_metrics,
)

PRETEXTS = ("rubik", "context", "planes")
PREFIX_3D = "backbone3d."
PREFIX_2D = "backbone2d."


@dataclass(frozen=True)
class ModelSpec:
    """Everything that shapes the pretraining network (stored in ``meta.json`` as ``model``).

    Parameters
    ----------
    pretexts : tuple of str
        Subset of ``("rubik", "context", "planes")``.
    backbone : str
        Size of both backbones (``tiny`` ... ``large``).
    in_channels : int
        Image channels.
    cube_shape : tuple of int
        Rubik: spatial shape of one cube (after cropping), to pick the encoder depth.
    n_cubes, n_permutations, n_axes : int
        Rubik: cubes per sample, permutation classes K, rotation axes per cube.
    n_views : int
        Planes: views per sample; each view gets ``n_views`` heatmap channels (channel ``j``: its line
        with view ``j``; zero for itself and for parallel views).
    alpha : float
        Rubik: weight of the permutation loss (``1 - alpha`` for rotation).
    context_residual : bool
        Context restoration predicts the correction added to its input, from a zero output layer: the network
        starts as the identity (PSNR gain 0, not the -50 dB of a random decoder) and learns only the repair.
    """

    pretexts: tuple[str, ...]
    backbone: str = "small"
    in_channels: int = 1
    cube_shape: tuple[int, ...] = ()
    n_cubes: int = 8
    n_permutations: int = 100
    n_axes: int = 2
    n_views: int = 3
    alpha: float = 0.5
    context_residual: bool = True

    def __post_init__(self) -> None:
        pretexts = tuple(self.pretexts)
        if not pretexts or any(p not in PRETEXTS for p in pretexts) or len(set(pretexts)) != len(pretexts):
            raise ValueError(f"pretexts must be distinct names among {PRETEXTS}, got {self.pretexts!r}")
        object.__setattr__(self, "pretexts", pretexts)
        object.__setattr__(self, "cube_shape", tuple(int(c) for c in self.cube_shape))
        if "rubik" in pretexts and (len(self.cube_shape) != 3 or min(self.cube_shape) < 2):
            raise ValueError(f"rubik needs cube_shape of 3 edges >= 2 voxels, got {self.cube_shape!r}")
        if "planes" in pretexts and self.n_views < 2:
            raise ValueError(f"planes needs n_views >= 2, got {self.n_views}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")

    @property
    def spec3d(self) -> BackboneSpec | None:
        if {"rubik", "context"} & set(self.pretexts):
            return BackboneSpec(size=self.backbone, spatial_dims=3, in_channels=self.in_channels)
        return None

    @property
    def spec2d(self) -> BackboneSpec | None:
        if "planes" in self.pretexts:
            return BackboneSpec(size=self.backbone, spatial_dims=2, in_channels=self.in_channels)
        return None

    @property
    def rubik_levels(self) -> int:
        """Encoder depth used on a cube: the deepest level that keeps >= 2 voxels per edge."""
        edge = min(self.cube_shape)
        level = 0
        while level < LEVELS and edge // 2 ** (level + 1) >= 2:
            level += 1
        return level

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pretexts"] = list(self.pretexts)
        out["cube_shape"] = list(self.cube_shape)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known.setdefault("context_residual", False)  # checkpoints from before the residual head
        known["pretexts"] = tuple(known["pretexts"])
        known["cube_shape"] = tuple(known.get("cube_shape", ()))
        return cls(**known)


class PretrainModel(nn.Module):
    """Backbones and heads for the pretexts of ``spec``; ``forward(batch)`` returns every head's output."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        if spec.spec3d is not None:
            self.backbone3d = UNet(spec.spec3d, out_channels=spec.in_channels)
            if "context" in spec.pretexts and spec.context_residual:  # start as the identity
                head = self.backbone3d.net.final_conv
                head = head.conv if hasattr(head, "conv") else head
                nn.init.zeros_(head.weight)
                if head.bias is not None:
                    nn.init.zeros_(head.bias)
        if "rubik" in spec.pretexts:
            channels = self.backbone3d.channels(spec.rubik_levels) * POOL_GRID**3
            self.rubik_head = RubikHead(channels, spec.n_cubes, spec.n_permutations, spec.n_axes)
        if spec.spec2d is not None:
            self.backbone2d = UNet(spec.spec2d, out_channels=spec.n_views)
            self.position_head = PositionHead(self.backbone2d.channels(LEVELS))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if "rubik" in self.spec.pretexts:
            cubes = batch["rubik.cubes"]
            b, n = cubes.shape[:2]
            feats = self.backbone3d.encode(cubes.flatten(0, 1), levels=self.spec.rubik_levels)[-1]
            pooled = pool_features(feats).view(b, n, -1)
            out["rubik.perm"], out["rubik.rot"] = self.rubik_head(pooled)
        if "context" in self.spec.pretexts:
            x = batch["context.input"]
            correction = self.backbone3d(x)
            out["context.restored"] = x + correction if self.spec.context_residual else correction
        if "planes" in self.spec.pretexts:
            images = batch["planes.images"]
            b, v = images.shape[:2]
            feats = self.backbone2d.encode(images.flatten(0, 1))
            heat = self.backbone2d.decode(feats)
            out["planes.heatmaps"] = heat.view(b, v, *heat.shape[1:])
            out["planes.position"] = self.position_head(feats[-1]).view(b, v)
        return out

    def losses(
        self,
        out: Mapping[str, torch.Tensor],
        batch: Mapping[str, torch.Tensor],
        weights: Mapping[str, float] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each pretext's loss (and its parts) plus ``"loss"``, the weighted sum."""
        weights = dict(weights or {})
        losses: dict[str, torch.Tensor] = {}
        if "rubik" in self.spec.pretexts:
            losses.update(
                rubik_losses(
                    out["rubik.perm"],
                    out["rubik.rot"],
                    batch["rubik.perm"],
                    batch["rubik.rot"],
                    self.spec.alpha,
                )
            )
        if "context" in self.spec.pretexts:
            losses.update(context_losses(out["context.restored"], batch["context.target"]))
        if "planes" in self.spec.pretexts:
            losses.update(
                planes_losses(
                    out["planes.heatmaps"],
                    out["planes.position"],
                    batch["planes.heatmaps"],
                    batch["planes.position"],
                    batch["planes.position_mask"],
                )
            )
        losses["loss"] = sum(weights.get(p, 1.0) * losses[p] for p in self.spec.pretexts)  # type: ignore[assignment]
        return losses

    def metrics(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """The pretext metrics of one held-out batch (see :mod:`napari_ssl.models.heads`)."""
        out = {k: v.detach() for k, v in out.items()}
        metrics: dict[str, float] = {}
        if "rubik" in self.spec.pretexts:
            metrics.update(
                rubik_metrics(out["rubik.perm"], out["rubik.rot"], batch["rubik.perm"], batch["rubik.rot"])
            )
        if "context" in self.spec.pretexts:
            metrics.update(
                context_metrics(out["context.restored"], batch["context.input"], batch["context.target"])
            )
        if "planes" in self.spec.pretexts:
            metrics.update(
                planes_metrics(
                    out["planes.heatmaps"],
                    out["planes.position"],
                    batch["planes.heatmaps"],
                    batch["planes.position"],
                    batch["planes.position_mask"],
                    batch.get("planes.has_line"),
                )
            )
        return metrics

    def unused_parameters_possible(self) -> bool:
        """True when some parameters get no gradient (Rubik alone leaves the 3D decoder unused)."""
        return "rubik" in self.spec.pretexts and "context" not in self.spec.pretexts


def backbone_prefixes(pretexts: Sequence[str]) -> dict[str, str]:
    """Where each backbone's weights live in a pretraining checkpoint: ``{"3d": "backbone3d.", ...}``."""
    out = {}
    if {"rubik", "context"} & set(pretexts):
        out["3d"] = PREFIX_3D
    if "planes" in pretexts:
        out["2d"] = PREFIX_2D
    return out
