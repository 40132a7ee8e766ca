"""Backbone sizes and :class:`BackboneSpec` (pure Python, importable without torch: configs, checkpoints and GUIs
read and validate against them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: number of 2x downsamplings of the U-Net (its encoder blocks less one: :data:`~napari_ssl.models.backbone.ENCODER_BLOCKS`)
LEVELS = 4

#: BasicUNet features per size: five encoder levels plus the last decoder level. "large" is MONAI's default.
SIZES: dict[str, tuple[int, int, int, int, int, int]] = {
    "tiny": (4, 4, 8, 16, 32, 4),
    "small": (8, 8, 16, 32, 64, 8),
    "medium": (16, 16, 32, 64, 128, 16),
    "large": (32, 32, 64, 128, 256, 32),
}


def default_size(device_type: str) -> str:
    """Backbone size that keeps a step around a second: ``small`` on CPU, ``medium`` on MPS, ``large`` on CUDA."""
    return {"cuda": "large", "mps": "medium"}.get(str(device_type).split(":")[0], "small")


@dataclass(frozen=True)
class BackboneSpec:
    """What builds a backbone, recorded in checkpoints so the same network can be rebuilt.

    Parameters
    ----------
    size : str
        ``tiny``, ``small``, ``medium`` or ``large`` (features of :data:`SIZES`).
    spatial_dims : int
        3 for volumes (Rubik, context restoration), 2 for planes.
    in_channels : int
        Input channels (1 for a scan).
    norm : str
        MONAI norm name: ``"instance"`` (default; affine instance norm as in MONAI's BasicUNet, robust to
        the small batches of 3D training), ``"batch"``, ``"group"``...
    upsample : str
        MONAI upsampling (``"deconv"``, ``"pixelshuffle"``, ``"nontrainable"``).
    features : tuple of int
        Filled from ``size``; give it explicitly for a custom width.
    """

    size: str = "small"
    spatial_dims: int = 3
    in_channels: int = 1
    norm: str = "instance"
    upsample: str = "deconv"
    features: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.features:
            if self.size not in SIZES:
                raise ValueError(f"backbone size must be one of {tuple(SIZES)}, got {self.size!r}")
            object.__setattr__(self, "features", SIZES[self.size])
        features = tuple(int(f) for f in self.features)
        if len(features) != 6 or min(features) < 1:
            raise ValueError(f"features must be 6 positive ints (BasicUNet), got {self.features!r}")
        object.__setattr__(self, "features", features)
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = list(self.features)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackboneSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "features" in known:
            known["features"] = tuple(known["features"])
        return cls(**known)

    @property
    def min_size(self) -> int:
        """Smallest input edge the full U-Net accepts (instance norm needs >= 2 voxels at the bottom)."""
        return 2 ** (LEVELS + 1)
