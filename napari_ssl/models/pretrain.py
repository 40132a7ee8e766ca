"""The pretraining network: shared backbones plus the heads of the pretexts, combined with weighted losses.

Every pretext comes from :mod:`napari_ssl.pretext.registry`; its ``backbone`` says which network it uses and its
network hooks (:mod:`napari_ssl.models.tasks` for the built-ins) add its heads, run its forward pass and give its
losses and metrics.

- The 3D pretexts share one 3D :class:`~napari_ssl.models.backbone.UNet` (``backbone3d``): Rubik's Siamese head
  reads its encoder on every cube, the restoration pretexts (context, Models Genesis) use the whole U-Net.
- The 2D pretexts (imaging planes) use a 2D U-Net (``backbone2d``). (A 2D network cannot share weights with a
  3D one; in a combined run the 3D pretexts share their encoder and the planes train the 2D one.)

Weight names are stable (``backbone3d.net.conv_0...``, ``backbone2d.net...``, ``rubik_head...``,
``position_head...``, ``line_head...``), so fine-tuning lifts the encoder (and decoder) out by prefix with
:func:`~napari_ssl.models.backbone.load_parts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from napari_ssl.models.backbone import LEVELS, BackboneSpec, UNet
from napari_ssl.pretext import registry

PREFIX_3D = "backbone3d."
PREFIX_2D = "backbone2d."
RUBIK_HEADS = ("cells", "concat")
PLANES_HEADS = ("conv", "linear")


@dataclass(frozen=True)
class ModelSpec:
    """Everything that shapes the pretraining network (stored in ``meta.json`` as ``model``).

    Parameters
    ----------
    pretexts : tuple of str
        Registered pretext names (:func:`napari_ssl.pretext.registry.names`).
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
        The restoration pretexts (context restoration, Models Genesis) predict the correction added to their input,
        from a zero output layer: the network starts as the identity (PSNR gain 0, not the -50 dB of a random decoder) and learns only the repair.
    rubik_head : str
        ``"cells"`` (default): :class:`~napari_ssl.models.heads.RubikCellHead`, a classifier shared by every cube
        (source cell and orientation) added to the paper's concatenated FC heads; ``"concat"``: the FC heads
        alone (:class:`~napari_ssl.models.heads.RubikHead`), as in checkpoints from before the shared classifier.
    planes_head : str
        ``"conv"`` (default): the planes' line heatmaps come from a :class:`~napari_ssl.models.heads.LineHead`
        (conv 3x3, instance norm, leaky ReLU, conv 1x1) on the 2D U-Net's last decoder level, in place of its 1x1
        output convolution; ``"linear"``: that 1x1 convolution, as in checkpoints from before the line head.
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
    rubik_head: str = "cells"
    planes_head: str = "conv"

    #: the fields that choose a head (their defaults changed over versions; a resumed run keeps its checkpoint's)
    HEAD_FIELDS: ClassVar[tuple[str, ...]] = ("context_residual", "rubik_head", "planes_head")

    def __post_init__(self) -> None:
        pretexts = tuple(self.pretexts)
        known = registry.names()
        if not pretexts or any(p not in known for p in pretexts) or len(set(pretexts)) != len(pretexts):
            raise ValueError(f"pretexts must be distinct names among {known}, got {self.pretexts!r}")
        object.__setattr__(self, "pretexts", pretexts)
        object.__setattr__(self, "cube_shape", tuple(int(c) for c in self.cube_shape))
        if self.rubik_head not in RUBIK_HEADS:
            raise ValueError(f"rubik_head must be one of {RUBIK_HEADS}, got {self.rubik_head!r}")
        if self.planes_head not in PLANES_HEADS:
            raise ValueError(f"planes_head must be one of {PLANES_HEADS}, got {self.planes_head!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        for hooks in self.hooks().values():
            hooks.check(self)

    def hooks(self) -> dict[str, Any]:
        """The network hooks of each pretext (see :mod:`napari_ssl.pretext.registry`)."""
        return {name: registry.get(name).network() for name in self.pretexts}

    @property
    def backbones(self) -> set[str]:
        """The backbones the pretexts use: ``"3d-encoder"``, ``"3d"`` (whole U-Net), ``"2d"``."""
        return {registry.get(name).backbone for name in self.pretexts}

    @property
    def spec3d(self) -> BackboneSpec | None:
        if self.backbones & {"3d", "3d-encoder"}:
            return BackboneSpec(size=self.backbone, spatial_dims=3, in_channels=self.in_channels)
        return None

    @property
    def spec2d(self) -> BackboneSpec | None:
        if "2d" in self.backbones:
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
        known.setdefault("rubik_head", "concat")  # checkpoints from before the shared cube classifier
        known.setdefault("planes_head", "linear")  # checkpoints from before the line head
        known["pretexts"] = tuple(known["pretexts"])
        known["cube_shape"] = tuple(known.get("cube_shape", ()))
        return cls(**known)


class PretrainModel(nn.Module):
    """Backbones and heads for the pretexts of ``spec``; ``forward(batch)`` returns every head's output."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self._hooks = spec.hooks()
        if spec.spec3d is not None:
            self.backbone3d = UNet(spec.spec3d, out_channels=spec.in_channels)
        if spec.spec2d is not None:
            self.backbone2d = UNet(spec.spec2d, out_channels=spec.n_views)
        for hooks in self._hooks.values():
            hooks.build(self)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for hooks in self._hooks.values():
            out.update(hooks.forward(self, batch))
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
        for hooks in self._hooks.values():
            losses.update(hooks.losses(self, out, batch))
        losses["loss"] = sum(weights.get(p, 1.0) * losses[p] for p in self.spec.pretexts)  # type: ignore[assignment]
        return losses

    def metrics(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """The pretext metrics of one held-out batch (keys ``"<pretext>/<metric>"``)."""
        out = {k: v.detach() for k, v in out.items()}
        metrics: dict[str, float] = {}
        for hooks in self._hooks.values():
            metrics.update(hooks.metrics(out, batch))
        return metrics

    def unused_parameters_possible(self) -> bool:
        """True when some parameters get no gradient (encoder-only pretexts leave the 3D decoder unused)."""
        return "3d-encoder" in self.spec.backbones and "3d" not in self.spec.backbones


def backbone_prefixes(pretexts: Sequence[str]) -> dict[str, str]:
    """Where each backbone's weights live in a pretraining checkpoint: ``{"3d": "backbone3d.", ...}``."""
    used = {registry.get(name).backbone for name in pretexts}
    out = {}
    if used & {"3d", "3d-encoder"}:
        out["3d"] = PREFIX_3D
    if "2d" in used:
        out["2d"] = PREFIX_2D
    return out


def has_decoder(pretexts: Sequence[str], backbone: str = "3d") -> bool:
    """True when a pretext of ``pretexts`` trained the whole ``backbone`` U-Net and its decoder is worth transferring
    (:attr:`~napari_ssl.pretext.registry.PretextSpec.transfer_decoder`)."""
    specs = [registry.get(name) for name in pretexts if name in registry.names()]
    return any(spec.backbone == backbone and spec.transfer_decoder for spec in specs)
