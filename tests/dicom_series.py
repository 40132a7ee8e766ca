"""A Volume written as a scanner-style DICOM series with SimpleITK (one file per slice and frame, shuffled names, the
geometry in the position / orientation tags): the tests' and benchmarks' DICOM input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_ssl.io.volume import Volume


def write_series(folder: Path, volume: Volume, frames: int = 1, shuffle: bool = True, modality: str = "MR") -> None:
    """Write ``volume`` (3D) as a DICOM series, one file per slice (and per frame), the file names in a shuffled
    order unless ``shuffle`` is false; ``modality`` goes in the Modality tag."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")  # scanner-style file names without a suffix
    image = volume.to_sitk(volume.array.astype(np.int16))
    direction = image.GetDirection()
    rng = np.random.default_rng(0)
    n = volume.spatial_shape[0] * frames
    order = rng.permutation(n) if shuffle else np.arange(n)
    series_uid = "1.2.826.0.1.3680043.2.1125.1.77"
    k = 0
    for t in range(frames):
        for z in range(volume.spatial_shape[0]):
            sl = image[:, :, z] + t * 1000  # frames differ so their order is checked
            tags = {
                "0008|0060": modality,
                "0020|000e": series_uid,
                "0020|000d": "1.2.826.0.1.3680043.2.1125.1.78",
                "0020|0037": "\\".join(f"{v:.10f}" for v in (*direction[0:9:3], *direction[1:9:3])),
                "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, z))),
                "0020|0013": str(t * volume.spatial_shape[0] + z + 1),
                "0018|1060": str(40.0 * t),
                "0028|0030": f"{volume.spacing[1]}\\{volume.spacing[2]}",
                "0018|0050": str(volume.spacing[0]),
                "0008|103e": "test series",
                "0008|0018": f"1.2.826.0.1.3680043.2.1125.2.{k}",
            }
            for key, value in tags.items():
                sl.SetMetaData(key, value)
            writer.SetFileName(str(folder / f"IM{order[k]:04d}"))
            writer.Execute(sl)
            k += 1
