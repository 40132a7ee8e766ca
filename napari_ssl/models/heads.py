"""Pieces the pretexts' heads share: pooling encoder features to a coarse grid, and the PSNR of a restoration.

Each pretext's own heads, losses and metrics live in its unit (``napari_ssl/pretext/<name>/network.py``, e.g.
:mod:`napari_ssl.pretext.rubik.network`); batches are dicts of tensors keyed ``"<pretext>.<name>"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["POOL_GRID", "pool_features", "psnr"]

#: Features are average-pooled to this grid per spatial axis before the FC layers. Pooling to a single
#: value would discard everything: after instance normalisation every channel has the same mean, and the
#: coarse layout is what tells a rotated cube (or a slice's position) apart.
POOL_GRID = 2


def pool_features(feats: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C * POOL_GRID**dims): average pooling to a coarse grid, flattened."""
    dims = feats.ndim - 2
    pool = F.adaptive_avg_pool3d if dims == 3 else F.adaptive_avg_pool2d
    return pool(feats, POOL_GRID).flatten(1)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per sample, with the reference's own intensity range as the peak."""
    dims = tuple(range(1, ref.ndim))
    mse = ((x.float() - ref.float()) ** 2).mean(dims).clamp_min(1e-12)
    rng = (ref.amax(dims) - ref.amin(dims)).float().clamp_min(1e-6)
    return 10 * torch.log10(rng**2 / mse)
