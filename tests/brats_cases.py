"""Small BraTS case folders for tests: real cases of ../shared/data/brats cropped around their tumour, written to a
temporary folder (the shared data is only read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_ssl import io

MODALITIES = ("flair", "t1", "t1ce", "t2")
CASES = ("Brats18_2013_11_1", "Brats18_CBICA_ABM_1", "Brats18_CBICA_AME_1", "Brats18_TCIA01_378_1")


def crop_case(source: Path, out: Path, size: int = 32, files: tuple[str, ...] = (*MODALITIES, "seg")) -> Path:
    """``files`` of the case ``source`` cropped to ``size``^3 voxels centred on the tumour, with their geometry
    (origin moved to the crop's first voxel), written to the folder ``out``."""
    seg = io.read(source / "seg.nii.gz")
    centre = np.round(np.argwhere(seg.array > 0).mean(axis=0)).astype(int)
    lo = np.clip(centre - size // 2, 0, np.asarray(seg.array.shape) - size)
    box = tuple(slice(int(a), int(a) + size) for a in lo)
    origin = tuple(float(v) for v in seg.index_to_world(lo))
    out.mkdir(parents=True, exist_ok=True)
    for name in files:
        vol = seg if name == "seg" else io.read(source / f"{name}.nii.gz")
        io.write(vol.with_array(np.ascontiguousarray(vol.array[box]), origin=origin), out / f"{name}.nii.gz")
    return out
