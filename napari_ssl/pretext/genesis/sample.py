"""The Models Genesis training sample (numpy, no torch)."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_ssl.pretext.genesis.task import ModelsGenesis

__all__ = ["GenesisAdapter"]


class GenesisAdapter:
    """Models Genesis sample: the corrupted patch (``genesis.input``) and the clean one (``genesis.target``)."""

    uses_patch = True

    def __init__(self, task: ModelsGenesis) -> None:
        self.task = task

    def __call__(self, volume: Any, patch: np.ndarray, rng: np.random.Generator,
                 mask: np.ndarray | None = None) -> dict[str, Any]:
        params = self.task.sample(patch.shape[-3:], rng, foreground=mask)
        return {
            "genesis.input": np.ascontiguousarray(self.task.apply(patch, params), dtype=np.float32),
            "genesis.target": np.ascontiguousarray(patch, dtype=np.float32),
        }
