"""The Rubik's cube training sample: the body cut into permuted, rotated cubes (numpy; torch only to resample)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume

__all__ = ["RubikAdapter", "resize"]


class RubikAdapter:
    """Rubik's cube sample: the permuted, rotated cubes of the body and their targets.

    As in the paper, the grid cuts the whole object, not a random patch of it: the box of the volume's foreground
    mask (the whole volume without one), a random 85-100 % of it per axis, resampled to the run's patch shape,
    is cut into the cubes. Each cube is then one recognisable part of the body (the top front left of the
    head...), which is what tells its place and its turn. Cubes cut from a random patch carry neither: a
    linear probe on them predicts the permutation and the rotations of held-out BraTS cases at chance.
    """

    uses_patch = False  # it reads the whole volume and its mask
    #: each axis of the cut box, as a fraction of the foreground box's (random, per sample)
    SCALE = (0.85, 1.0)

    def __init__(self, task: Any) -> None:
        self.task = task
        self.patch_shape: tuple[int, int, int] = (48, 48, 48)  # set by PretextDataset to the run's patch
        self._regions: dict[int, tuple[Volume, np.ndarray]] = {}

    def region(self, volume: Volume, mask: np.ndarray | None) -> np.ndarray:
        """The volume's foreground box (the whole volume without a mask), at most 1.5 times the patch per axis
        (cached: no larger than the volume itself)."""
        cached = self._regions.get(id(volume))
        if cached is not None and cached[0] is volume:
            return cached[1]
        from napari_ssl.io.foreground import foreground_bbox

        array = np.asarray(volume.array, dtype=np.float32)
        box = None if mask is None else foreground_bbox(mask)
        if box is not None:
            array = array[tuple(slice(lo, hi) for lo, hi in zip(*box, strict=True))]
        shape = tuple(min(s, p + p // 2) for s, p in zip(array.shape, self.patch_shape, strict=True))
        region = resize(array, shape)
        self._regions[id(volume)] = (volume, region)
        return region

    def __call__(self, volume: Volume, patch: np.ndarray, rng: np.random.Generator,
                 mask: np.ndarray | None = None) -> dict[str, Any]:
        region = self.region(volume, mask)
        size = np.asarray(region.shape)
        extent = np.maximum(1, np.round(size * rng.uniform(*self.SCALE, 3))).astype(int)
        corner = (rng.random(3) * (size - extent + 1)).astype(int)
        box = tuple(slice(int(c), int(c + e)) for c, e in zip(corner, extent, strict=True))
        cut = resize(np.ascontiguousarray(region[box]), self.patch_shape)[None]  # (1, z, y, x)
        params = self.task.sample(self.patch_shape, rng)
        targets = self.task.targets(params)
        return {
            "rubik.cubes": np.ascontiguousarray(self.task.cubes(cut, params), dtype=np.float32),
            "rubik.perm": np.int64(targets["permutation"]),
            "rubik.rot": np.asarray(targets["rotations"], dtype=np.float32),
        }


def resize(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A 3D ``array`` resampled to ``shape`` over the same extent: box averages where it shrinks, linear where it
    grows (float32)."""
    shape = tuple(int(s) for s in shape)
    if tuple(array.shape) == shape:
        return np.asarray(array, dtype=np.float32)
    import torch
    import torch.nn.functional as F

    arr = np.ascontiguousarray(array, dtype=np.float32)
    if not arr.flags.writeable:  # a memory-mapped prepared scan is read-only; torch wants a writable buffer
        arr = arr.copy()
    x = torch.from_numpy(arr)[None, None]
    if all(s <= a for s, a in zip(shape, array.shape, strict=True)):
        x = F.adaptive_avg_pool3d(x, shape)
    else:
        x = F.interpolate(x, size=shape, mode="trilinear", align_corners=False)
    return x[0, 0].numpy()
