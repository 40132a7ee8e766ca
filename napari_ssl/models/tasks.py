"""Network hooks of the pretexts (see :mod:`napari_ssl.pretext.registry`): the heads each one adds to the
:class:`~napari_ssl.models.pretrain.PretrainModel`, its forward pass, loss and metrics.

:class:`RestorationHooks` serves any pretext that corrupts a 3D patch and asks the whole U-Net to give the clean
patch back (context restoration, Models Genesis): its batch holds ``"<name>.input"`` and ``"<name>.target"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from napari_ssl.models.backbone import LEVELS
from napari_ssl.models.heads import (
    POOL_GRID,
    LineHead,
    PositionHead,
    RubikCellHead,
    RubikHead,
    planes_losses,
    planes_metrics,
    pool_features,
    psnr,
    rubik_losses,
    rubik_metrics,
)

__all__ = ["Hooks", "PlanesHooks", "RestorationHooks", "RubikHooks", "restoration_metrics", "zero_output_layer"]

Batch = Mapping[str, torch.Tensor]


class Hooks:
    """Defaults of the hook protocol: no ModelSpec fields, no checks, no heads."""

    def __init__(self, name: str) -> None:
        self.name = name

    def model_fields(self, task: Any, probe: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def check(self, spec: Any) -> None:
        return None

    def build(self, model: nn.Module) -> None:
        return None


def zero_output_layer(unet: nn.Module) -> None:
    """Zero the U-Net's last convolution, so that a residual output starts as the identity."""
    head = unet.net.final_conv
    head = head.conv if hasattr(head, "conv") else head
    nn.init.zeros_(head.weight)
    if head.bias is not None:
        nn.init.zeros_(head.bias)


def restoration_metrics(name: str, restored: torch.Tensor, corrupted: torch.Tensor,
                        target: torch.Tensor) -> dict[str, float]:
    """PSNR of the restoration, of the corrupted input, and the gain (restored - corrupted), keyed ``name/...``."""
    after, before = psnr(restored, target), psnr(corrupted, target)
    return {
        f"{name}/psnr": float(after.mean()),
        f"{name}/psnr_input": float(before.mean()),
        f"{name}/psnr_gain": float((after - before).mean()),
    }


class RubikHooks(Hooks):
    """Rubik's cube: a Siamese head on the 3D encoder's features of every cube (``spec.rubik_head``: the shared cube
    classifier plus the paper's FC heads, or the FC heads alone for old checkpoints)."""

    def model_fields(self, task: Any, probe: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "cube_shape": tuple(int(s) for s in probe[f"{self.name}.cubes"].shape[-3:]),
            "n_cubes": int(task.grid) ** 3,
            "n_permutations": int(task.n_permutations),
        }

    def check(self, spec: Any) -> None:
        if len(spec.cube_shape) != 3 or min(spec.cube_shape) < 2:
            raise ValueError(f"rubik needs cube_shape of 3 edges >= 2 voxels, got {spec.cube_shape!r}")

    def build(self, model: nn.Module) -> None:
        spec = model.spec
        channels = model.backbone3d.channels(spec.rubik_levels) * POOL_GRID**3
        if spec.rubik_head == "concat":  # checkpoints from before the shared cube classifier
            model.rubik_head = RubikHead(channels, spec.n_cubes, spec.n_permutations, spec.n_axes)
            return
        from napari_ssl.pretext.rubik import permutation_set

        model.rubik_head = RubikCellHead(channels, spec.n_cubes, spec.n_permutations, spec.n_axes,
                                         permutation_set(spec.n_cubes, spec.n_permutations))

    def forward(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        cubes = batch[f"{self.name}.cubes"]
        b, n = cubes.shape[:2]
        feats = model.backbone3d.encode(cubes.flatten(0, 1), levels=model.spec.rubik_levels)[-1]
        pooled = pool_features(feats).view(b, n, -1)
        perm, rot = model.rubik_head(pooled)
        return {f"{self.name}.perm": perm, f"{self.name}.rot": rot}

    def losses(self, model: nn.Module, out: Batch, batch: Batch) -> dict[str, torch.Tensor]:
        n = self.name
        return rubik_losses(out[f"{n}.perm"], out[f"{n}.rot"], batch[f"{n}.perm"], batch[f"{n}.rot"],
                            model.spec.alpha)

    def metrics(self, out: Batch, batch: Batch) -> dict[str, float]:
        n = self.name
        return rubik_metrics(out[f"{n}.perm"], out[f"{n}.rot"], batch[f"{n}.perm"], batch[f"{n}.rot"])


class RestorationHooks(Hooks):
    """Restore the clean 3D patch with the whole U-Net; with ``spec.context_residual`` the network predicts the
    correction added to its input, from a zero output layer (it starts as the identity: PSNR gain 0)."""

    def build(self, model: nn.Module) -> None:
        if model.spec.context_residual:
            zero_output_layer(model.backbone3d)

    def forward(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch[f"{self.name}.input"]
        y = model.backbone3d(x)
        return {f"{self.name}.restored": x + y if model.spec.context_residual else y}

    def losses(self, model: nn.Module, out: Batch, batch: Batch) -> dict[str, torch.Tensor]:
        """L2 restoration loss (Chen et al. 2019; Zhou et al. 2021)."""
        restored, target = out[f"{self.name}.restored"], batch[f"{self.name}.target"]
        return {self.name: F.mse_loss(restored.float(), target.float())}

    def metrics(self, out: Batch, batch: Batch) -> dict[str, float]:
        n = self.name
        return restoration_metrics(n, out[f"{n}.restored"], batch[f"{n}.input"], batch[f"{n}.target"])


class PlanesHooks(Hooks):
    """Imaging planes: line heatmaps from the 2D U-Net's decoder (``spec.planes_head``: a :class:`LineHead` in place
    of the U-Net's 1x1 output convolution, or that convolution alone for old checkpoints), slice position from its
    bottleneck."""

    def model_fields(self, task: Any, probe: Mapping[str, Any]) -> dict[str, Any]:
        return {"n_views": int(probe[f"{self.name}.images"].shape[0])}

    def check(self, spec: Any) -> None:
        if spec.n_views < 2:
            raise ValueError(f"planes needs n_views >= 2, got {spec.n_views}")

    def build(self, model: nn.Module) -> None:
        model.position_head = PositionHead(model.backbone2d.channels(LEVELS))
        if model.spec.planes_head == "conv":  # the line head reads the last decoder level in place of final_conv
            model.backbone2d.net.final_conv = nn.Identity()
            model.line_head = LineHead(model.backbone2d.spec.features[-1], model.spec.n_views)

    def forward(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch[f"{self.name}.images"]
        b, v = images.shape[:2]
        feats = model.backbone2d.encode(images.flatten(0, 1))
        heat = model.backbone2d.decode(feats)
        if model.spec.planes_head == "conv":
            heat = model.line_head(heat)
        return {
            f"{self.name}.heatmaps": heat.view(b, v, *heat.shape[1:]),
            f"{self.name}.position": model.position_head(feats[-1]).view(b, v),
        }

    def _args(self, out: Batch, batch: Batch) -> tuple[torch.Tensor, ...]:
        n = self.name
        return (out[f"{n}.heatmaps"], out[f"{n}.position"], batch[f"{n}.heatmaps"], batch[f"{n}.position"],
                batch[f"{n}.position_mask"])

    def losses(self, model: nn.Module, out: Batch, batch: Batch) -> dict[str, torch.Tensor]:
        return planes_losses(*self._args(out, batch))

    def metrics(self, out: Batch, batch: Batch) -> dict[str, float]:
        return planes_metrics(*self._args(out, batch), batch.get(f"{self.name}.has_line"))
