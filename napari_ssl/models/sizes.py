"""Backbone sizes (pure Python, importable without torch: configs and GUIs validate against it)."""

from __future__ import annotations

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
