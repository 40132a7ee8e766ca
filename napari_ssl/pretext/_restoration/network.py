"""The restoration network (torch), shared by every pretext that corrupts a 3D patch and asks the whole U-Net to give
the clean patch back (context restoration, Models Genesis): its batch holds ``"<name>.input"`` and
``"<name>.target"``; L2 loss; PSNR metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from napari_ssl.models.heads import psnr
from napari_ssl.models.hooks import Hooks

__all__ = ["RestorationHooks", "restoration_metrics", "zero_output_layer"]

Batch = Mapping[str, torch.Tensor]


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


class RestorationHooks(Hooks):
    """Restore the clean 3D patch with the whole U-Net; with the head field ``residual`` the network predicts the
    correction added to its input, from a zero output layer: it starts as the identity (PSNR gain 0, not the -50 dB
    of a random decoder) and learns only the repair. Checkpoints from before the residual head restore directly."""

    FIELDS: ClassVar[Mapping[str, Any]] = {"residual": True}
    LEGACY: ClassVar[Mapping[str, Any]] = {"residual": False}  # checkpoints from before the residual head
    CHOICES: ClassVar[tuple[str, ...]] = ("residual",)
    FLAT: ClassVar[Mapping[str, str]] = {"context_residual": "residual"}

    def build(self, model: nn.Module) -> None:
        if model.spec.heads[self.name]["residual"]:
            zero_output_layer(model.backbone3d)

    def forward(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch[f"{self.name}.input"]
        y = model.backbone3d(x)
        return {f"{self.name}.restored": x + y if model.spec.heads[self.name]["residual"] else y}

    def losses(self, model: nn.Module, out: Batch, batch: Batch) -> dict[str, torch.Tensor]:
        """L2 restoration loss (Chen et al. 2019; Zhou et al. 2021)."""
        restored, target = out[f"{self.name}.restored"], batch[f"{self.name}.target"]
        return {self.name: F.mse_loss(restored.float(), target.float())}

    def metrics(self, out: Batch, batch: Batch) -> dict[str, float]:
        n = self.name
        return restoration_metrics(n, out[f"{n}.restored"], batch[f"{n}.input"], batch[f"{n}.target"])
