"""U-Net backbones from MONAI, in four sizes, with an encoder that can be lifted out for transfer.

The same :class:`UNet` (a MONAI ``BasicUNet``) serves pretraining (context restoration's decoder, the
plane tasks' heatmaps, Rubik's Siamese encoder) and segmentation (fine-tuning): only ``final_conv``
(the 1x1 output convolution) depends on the task, so encoder and decoder weights transfer by name.

Parameter names inside a :class:`UNet` are MONAI's: ``net.conv_0``, ``net.down_1..4`` (encoder),
``net.upcat_4..1`` (decoder), ``net.final_conv`` (task head).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.nets import BasicUNet
from torch import nn

from napari_ssl.models.sizes import LEVELS, BackboneSpec

ENCODER_BLOCKS = ("conv_0", "down_1", "down_2", "down_3", "down_4")
DECODER_BLOCKS = ("upcat_4", "upcat_3", "upcat_2", "upcat_1")
HEAD_BLOCK = "final_conv"
assert len(ENCODER_BLOCKS) - 1 == LEVELS  # number of 2x downsamplings


class UNet(nn.Module):
    """A MONAI ``BasicUNet`` with explicit encoder / decoder halves.

    ``forward(x)`` equals ``BasicUNet.forward``; :meth:`encode` returns the skip features of every level
    (optionally stopping early, for small inputs), :meth:`decode` runs the decoder and the output conv.
    """

    def __init__(self, spec: BackboneSpec, out_channels: int = 1) -> None:
        super().__init__()
        self.spec = spec
        self.out_channels = int(out_channels)
        self.net = BasicUNet(
            spatial_dims=spec.spatial_dims,
            in_channels=spec.in_channels,
            out_channels=self.out_channels,
            features=spec.features,
            norm=("instance", {"affine": True}) if spec.norm == "instance" else spec.norm,
            upsample=spec.upsample,
        )

    def encode(self, x: torch.Tensor, levels: int = LEVELS) -> list[torch.Tensor]:
        """Features ``[x0, x1, ..., x_levels]`` (``x0`` at full resolution, each next one halved)."""
        feats = [self.net.conv_0(x)]
        for name in ENCODER_BLOCKS[1 : levels + 1]:
            feats.append(getattr(self.net, name)(feats[-1]))
        return feats

    def decode(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decoder plus ``final_conv`` from the five encoder features."""
        x0, x1, x2, x3, x4 = feats
        u = self.net.upcat_4(x4, x3)
        u = self.net.upcat_3(u, x2)
        u = self.net.upcat_2(u, x1)
        u = self.net.upcat_1(u, x0)
        return self.net.final_conv(u)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def encoder(self) -> Encoder:
        """The encoder half as its own module, sharing this network's weights."""
        return Encoder(self)

    def channels(self, level: int) -> int:
        """Channels of the encoder feature at ``level`` (0..4)."""
        return self.spec.features[level]


class Encoder(nn.Module):
    """The encoder of a :class:`UNet` lifted out (weights shared): ``forward(x)`` returns all skip features.

    Its ``state_dict`` keys are ``conv_0.*``, ``down_1.*`` ... as in MONAI's ``BasicUNet``.
    """

    def __init__(self, unet: UNet) -> None:
        super().__init__()
        self.spec = unet.spec
        for name in ENCODER_BLOCKS:
            self.add_module(name, getattr(unet.net, name))

    def forward(self, x: torch.Tensor, levels: int = LEVELS) -> list[torch.Tensor]:
        feats = [self.conv_0(x)]
        for name in ENCODER_BLOCKS[1 : levels + 1]:
            feats.append(getattr(self, name)(feats[-1]))
        return feats


def build_unet(spec: BackboneSpec | Mapping[str, Any], out_channels: int) -> UNet:
    """The backbone of ``spec`` with ``out_channels`` outputs (pretraining or segmentation)."""
    if not isinstance(spec, BackboneSpec):
        spec = BackboneSpec.from_dict(spec)
    return UNet(spec, out_channels=out_channels)


def sub_state(
    state: Mapping[str, torch.Tensor], prefix: str, parts: Sequence[str] = ("encoder",)
) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix`` that belong to ``parts``, with the prefix removed.

    ``parts`` picks ``"encoder"``, ``"decoder"`` and/or ``"head"`` blocks of a :class:`UNet`. The result's
    keys are ``net.conv_0...``, ready for ``UNet.load_state_dict(..., strict=False)``.
    """
    blocks: list[str] = []
    for part in parts:
        if part == "encoder":
            blocks += ENCODER_BLOCKS
        elif part == "decoder":
            blocks += DECODER_BLOCKS
        elif part == "head":
            blocks.append(HEAD_BLOCK)
        else:
            raise ValueError(f"parts must be among ('encoder', 'decoder', 'head'), got {part!r}")
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if rest.startswith("net.") and rest.split(".")[1] in blocks:
            out[rest] = value
    return out


def inflate_2d(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """2D U-Net weights made 3D (I3D inflation, Carreira and Zisserman, CVPR 2017): each 2D kernel is repeated
    along z, divided by the depth for convolutions (a volume constant along z gives the 2D network's response on
    every slice) and kept whole for the 2x2 transposed convolutions (each output voxel receives one input)."""
    out = {}
    for key, value in state.items():
        if value.ndim == 4:
            depth = value.shape[-1]
            value = value.unsqueeze(2).repeat(1, 1, depth, 1, 1)
            if "deconv" not in key:
                value = value / depth
        out[key] = value
    return out


def load_parts(
    unet: UNet, state: Mapping[str, torch.Tensor], prefix: str = "", parts: Sequence[str] = ("encoder",)
) -> list[str]:
    """Copy the ``parts`` of a pretrained state into ``unet``; returns the keys loaded.

    Shapes must match (same :class:`BackboneSpec`); a mismatch raises ``ValueError`` naming the key.
    """
    picked = sub_state(state, prefix, parts)
    if not picked:
        raise ValueError(f"no {'/'.join(parts)} weights under prefix {prefix!r} in the pretrained state")
    own = unet.state_dict()
    for key, value in picked.items():
        if key not in own:
            raise ValueError(f"pretrained weight {key!r} has no counterpart in the network")
        if tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(
                f"pretrained weight {key!r} has shape {tuple(value.shape)}, the network expects "
                f"{tuple(own[key].shape)} (different backbone size?)"
            )
    unet.load_state_dict(picked, strict=False)
    return sorted(picked)
