"""Synthetic scans for tests that need *a* scan, not a real one: a user's fresh clone has no ../shared/data, and
these tests must still run there. No tests here.

:func:`synthetic_ct` is the phantom head (:func:`napari_ssl.phantom.make_phantom`) in Hounsfield units: air at
-1000 around it, so the plan sees a CT (HU below -500) as it does on the real thorax-abdomen CT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_ssl.io.volume import Volume
from napari_ssl.phantom import make_phantom

#: (z, y, x) voxels at 3 mm: 144 x 192 x 192 mm, room for 32^3 patches on the plan's grid
CT_SHAPE = (48, 64, 64)


def synthetic_ct(shape: tuple[int, int, int] = CT_SHAPE, spacing: tuple[float, float, float] = (3.0, 3.0, 3.0),
                 seed: int = 0) -> Volume:
    """The phantom head as an int16 CT: HU = 1000 * phantom intensity - 1000 (air -1000, lesion ~0)."""
    image, _ = make_phantom(shape=shape, spacing=spacing, seed=seed)
    hu = np.round(image.array * 1000.0 - 1000.0).astype(np.int16)
    return image.with_array(hu, name="synthetic ct", metadata={})


def write_ct(folder: Path, name: str = "ct.nii.gz", **kwargs) -> Path:
    """Write :func:`synthetic_ct` (``kwargs``: its arguments) as ``folder/name``; returns the file."""
    from napari_ssl import io

    folder.mkdir(parents=True, exist_ok=True)
    return io.write(synthetic_ct(**kwargs), folder / name)
