"""Networks: MONAI U-Net backbones (:mod:`.backbone`), pretext heads (:mod:`.heads`), the combined
pretraining network (:mod:`.pretrain`); backbone sizes in :mod:`.sizes`.

Importing the package is light: the names below load torch and MONAI on first use (PEP 562), so a config or
a GUI can import :mod:`napari_ssl.models.sizes` without them.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BackboneSpec": "sizes",
    "Encoder": "backbone",
    "UNet": "backbone",
    "build_unet": "backbone",
    "load_parts": "backbone",
    "sub_state": "backbone",
    "PREFIX_2D": "pretrain",
    "PREFIX_3D": "pretrain",
    "ModelSpec": "pretrain",
    "PretrainModel": "pretrain",
    "backbone_prefixes": "pretrain",
    "has_decoder": "pretrain",
    "SIZES": "sizes",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
