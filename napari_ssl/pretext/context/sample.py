"""The context restoration training sample (numpy, no torch)."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume

__all__ = ["ContextAdapter"]


class ContextAdapter:
    """Context restoration sample: the patch with swapped sub-patches, and the clean patch."""

    uses_patch = True

    def __init__(self, task: Any) -> None:
        self.task = task

    def __call__(self, volume: Volume, patch: np.ndarray, rng: np.random.Generator,
                 mask: np.ndarray | None = None) -> dict[str, Any]:
        params = self.task.sample(patch.shape[-3:], rng, spacing=volume.spacing, foreground=mask)
        return {
            "context.input": np.ascontiguousarray(self.task.apply(patch, params), dtype=np.float32),
            "context.target": patch,
        }
