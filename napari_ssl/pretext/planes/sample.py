"""The imaging-planes training sample: planes resampled from the whole volume and their targets."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume

__all__ = ["PlanesAdapter"]


class PlanesAdapter:
    """Imaging-planes sample: planes resampled from the whole volume (not the patch), their line heatmaps
    (N, N, h, w), relative slice positions and masks."""

    uses_patch = False

    def __init__(self, task: Any) -> None:
        self.task = task

    def __call__(self, volume: Volume, patch: np.ndarray, rng: np.random.Generator,
                 mask: np.ndarray | None = None) -> dict[str, Any]:
        params = self.task.sample(volume.spatial_shape, rng, spacing=volume.spacing, foreground=mask)
        images = self.task.apply(np.asarray(volume.array, dtype=np.float32), params)
        targets = self.task.targets(params)
        return {
            "planes.images": np.ascontiguousarray(images[:, None], dtype=np.float32),
            "planes.heatmaps": np.asarray(targets["heatmaps"], dtype=np.float32),
            "planes.has_line": np.asarray(targets["has_line"], dtype=bool),
            "planes.position": np.asarray(targets["slice_position"], dtype=np.float32),
            "planes.position_mask": np.asarray(targets["in_stack"], dtype=np.float32),
        }
