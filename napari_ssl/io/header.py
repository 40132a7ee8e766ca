"""A scan file's grid from its header alone: shape, spacing and direction, without decoding a voxel.

:func:`read_header` answers in the conventions of :func:`napari_ssl.io.read` (array order ``(z, y, x)``, the 3x3
direction whose column ``j`` is the world direction of array axis ``j``): the header of a NIfTI, NRRD or MetaImage
file gives the grid the decoded :class:`~napari_ssl.io.volume.Volume` has. A 4D file (time points or channels)
answers its spatial part and its number of frames; a 2D image a one-slice plane ``(1, y, x)``, as the reader makes
it. A header a decoded read would refuse (no voxels, a direction that is not orthonormal) raises here too.

On the shared data's NIfTI and NRRD files (2 cores, page cache warm; ``benchmarks/bench_fingerprint.py``): 0.8 ms a
header, 17 ms a decode (medians).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from napari_ssl.io.errors import ScanReadError

__all__ = ["ScanHeader", "read_header"]


@dataclass(frozen=True)
class ScanHeader:
    """A scan file's grid as its header tells it, in array order ``(z, y, x)``.

    Parameters
    ----------
    shape : (int, int, int)
        The spatial shape; a 2D image is ``(1, y, x)``.
    spacing : (float, float, float)
        The voxel size in mm.
    direction : tuple of float
        The 3x3 direction, row by row; column ``j`` is the world direction of array axis ``j``.
    frames : int
        Volumes the file holds: 1, or the length of a 4D file's time / channel axis.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]
    frames: int = 1

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)


def read_header(path: str | os.PathLike[str]) -> ScanHeader:
    """The grid of the scan file ``path`` from its header (SimpleITK's ``ReadImageInformation``; no voxel decoded).

    Raises
    ------
    ScanReadError
        The header cannot be read (no scan, corrupt, empty), or the image is not scalar or not 2D to 4D.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ScanReadError(path, "no readable scan header (corrupt or unsupported format)") from None
    components = reader.GetNumberOfComponents()
    if components != 1:
        raise ScanReadError(path, f"has {components} components per pixel; napari-ssl reads scalar scans only")
    dim = reader.GetDimension()
    size, spacing = list(reader.GetSize()), list(reader.GetSpacing())
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(dim, dim)
    frames = 1
    if dim == 2:  # a plane in 3D, as Volume.from_sitk makes it
        size, spacing = [*size, 1], [*spacing, 1.0]
        full = np.eye(3)
        full[:2, :2] = direction
        direction = full
    elif dim == 4:  # (t, z, y, x): the spatial 3x3 block, as the reader takes it
        frames = int(size[3])
        size, spacing, direction = size[:3], spacing[:3], direction[:3, :3]
    elif dim != 3:
        raise ScanReadError(path, f"{dim}D images are not supported (2D, 3D, or 3D with a time/channel axis)")
    if min(size) < 1:
        raise ScanReadError(path, "image has no voxels")
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise ScanReadError(path, f"direction must be an orthonormal 3x3 matrix, got {direction.tolist()}")
    zyx = direction[::-1, ::-1]
    return ScanHeader(shape=(int(size[2]), int(size[1]), int(size[0])),
                      spacing=(float(spacing[2]), float(spacing[1]), float(spacing[0])),
                      direction=tuple(float(v) for v in zyx.reshape(-1)), frames=frames)
