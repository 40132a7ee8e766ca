"""A scan as an array plus its physical geometry.

Conventions
-----------
Everything is in **array order** ``(z, y, x)``, the order of the numpy axes and of napari's world axes:

- ``array`` has shape ``(z, y, x)``, or ``(t, z, y, x)`` for a time (cine) or channel series.
- ``spacing`` is the voxel size in mm along ``(z, y, x)``.
- ``origin`` is the world position (mm) of voxel ``(0, 0, 0)``.
- ``direction`` is a 3x3 matrix whose column ``j`` is the world direction of array axis ``j``.

World coordinates are the scanner's patient coordinates (DICOM LPS, as SimpleITK and ITK use them)
written in reverse, ``(Z, Y, X)``, so that a viewer layer built from this geometry (napari-ssl's
``_napari.layers``) places every voxel at its patient position: ``world = origin + direction @ (spacing * index)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["Volume", "array_from_sitk", "mm_spacing"]

Vec3 = tuple[float, float, float]


def _vec3(value: Any, name: str) -> Vec3:
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be three finite numbers (z, y, x), got {value!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def mm_spacing(value: Any, name: str = "spacing") -> Vec3:
    """A voxel spacing, checked once for every caller: three positive finite mm values (z, y, x), or one for all
    three axes.

    Raises
    ------
    ValueError
        Naming ``name`` and the value: not 1 or 3 numbers, not finite, or not positive.
    """
    arr = np.asarray(value, dtype=float).reshape(-1) if value is not None else np.zeros(0)
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be 3 positive finite mm values (z, y, x), got {value!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


@dataclass(frozen=True, eq=False)
class Volume:
    """An image array with its physical geometry.

    Parameters
    ----------
    array : numpy.ndarray
        Voxels, shape ``(z, y, x)`` or ``(t, z, y, x)``. A single slice is ``(1, y, x)``: a plane in 3D.
    spacing : tuple of float
        Voxel size in mm, ``(z, y, x)``; all positive.
    origin : tuple of float
        World position in mm of the first voxel, ``(z, y, x)``.
    direction : numpy.ndarray
        3x3 orthonormal matrix; column ``j`` is the world direction of array axis ``j``.
    path : str, optional
        File or folder the volume was read from.
    name : str, optional
        Display name (a layer name); defaults to the file name stem.
    metadata : dict
        Free-form extra information (modality, series description, ...); JSON-friendly values.
    """

    array: np.ndarray
    spacing: Vec3 = (1.0, 1.0, 1.0)
    origin: Vec3 = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    path: str | None = None
    name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim not in (3, 4):
            raise ValueError(
                f"Volume array must be 3D (z, y, x) or 4D (t, z, y, x), got shape {array.shape}"
            )
        if 0 in array.shape:
            raise ValueError(f"Volume array is empty, shape {array.shape}")
        spacing = mm_spacing(self.spacing)
        direction = np.asarray(self.direction, dtype=float)
        if direction.shape != (3, 3) or not np.allclose(
            direction.T @ direction, np.eye(3), atol=1e-4
        ):
            raise ValueError(f"direction must be an orthonormal 3x3 matrix, got {direction.tolist()}")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", _vec3(self.origin, "origin"))
        object.__setattr__(self, "direction", direction)

    # ------------------------------------------------------------------ geometry
    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """The last three axes, ``(z, y, x)``."""
        z, y, x = self.array.shape[-3:]
        return (int(z), int(y), int(x))

    @property
    def is_plane(self) -> bool:
        """True for a single slice (one voxel thick along z): a 2D image placed in 3D."""
        return self.spatial_shape[0] == 1

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix from array index ``(z, y, x, 1)`` to world mm ``(Z, Y, X, 1)``."""
        out = np.eye(4)
        out[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        out[:3, 3] = self.origin
        return out

    def index_to_world(self, index: Any) -> np.ndarray:
        """Map array indices ``(..., 3)`` (z, y, x; fractional allowed) to world mm ``(..., 3)``."""
        idx = np.asarray(index, dtype=float)
        aff = self.affine
        return idx @ aff[:3, :3].T + aff[:3, 3]

    def world_to_index(self, points: Any) -> np.ndarray:
        """Map world mm ``(..., 3)`` to fractional array indices ``(..., 3)``."""
        pts = np.asarray(points, dtype=float) - np.asarray(self.origin)
        inv = np.linalg.inv(self.direction * np.asarray(self.spacing)[None, :])
        return pts @ inv.T

    def world_corners(self) -> np.ndarray:
        """World positions (8, 3) of the corners of the voxel grid (voxel centres)."""
        z, y, x = (s - 1 for s in self.spatial_shape)
        corners = np.array([[a, b, c] for a in (0, z) for b in (0, y) for c in (0, x)], dtype=float)
        return self.index_to_world(corners)

    def same_geometry(self, other: Volume, atol: float = 1e-4) -> bool:
        """True when ``other`` has the same grid: spatial shape, spacing, origin and direction."""
        return (
            self.spatial_shape == other.spatial_shape
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )

    def with_array(self, array: np.ndarray, **changes: Any) -> Volume:
        """A new volume with the same geometry and a new array (and optional other fields)."""
        values = {
            "spacing": self.spacing,
            "origin": self.origin,
            "direction": self.direction,
            "path": self.path,
            "name": self.name,
            "metadata": dict(self.metadata),
        }
        values.update(changes)
        return Volume(array=array, **values)

    # ------------------------------------------------------------------ SimpleITK
    @classmethod
    def from_sitk(
        cls, image: sitk.Image, *, path: str | None = None, name: str | None = None
    ) -> Volume:
        """Convert a 3D SimpleITK image (or a 2D one, as a one-slice plane) to a :class:`Volume`."""

        if image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(
                f"{path or 'image'}: has {image.GetNumberOfComponentsPerPixel()} components per pixel "
                "(RGB or vector image); napari-ssl reads scalar scans only"
            )
        dim = image.GetDimension()
        array = array_from_sitk(image)
        if dim == 2:
            sx, sy = image.GetSpacing()
            ox, oy = image.GetOrigin()
            d = np.asarray(image.GetDirection(), dtype=float).reshape(2, 2)
            dir_xyz = np.eye(3)
            dir_xyz[:2, :2] = d
            spacing_xyz = (sx, sy, 1.0)
            origin_xyz = (ox, oy, 0.0)
            array = array[None]
        elif dim == 3:
            spacing_xyz = image.GetSpacing()
            origin_xyz = image.GetOrigin()
            dir_xyz = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
        else:
            raise ValueError(f"{path or 'image'}: {dim}D images are not supported (2D or 3D only)")
        return cls(
            array=array,
            spacing=tuple(spacing_xyz[::-1]),
            origin=tuple(origin_xyz[::-1]),
            direction=dir_xyz[::-1, ::-1].copy(),
            path=path,
            name=name,
        )

    def to_sitk(self, array: np.ndarray | None = None) -> sitk.Image:
        """A 3D SimpleITK image with this geometry (``array`` defaults to :attr:`array`, 3D only)."""
        import SimpleITK as sitk

        arr = self.array if array is None else np.asarray(array)
        if arr.ndim != 3:
            raise ValueError(f"to_sitk needs a 3D (z, y, x) array, got shape {arr.shape}")
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        image = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        image.SetSpacing(self.spacing[::-1])
        image.SetOrigin(self.origin[::-1])
        image.SetDirection(self.direction[::-1, ::-1].ravel().tolist())
        return image

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.array.shape}, dtype={self.array.dtype}, spacing={self.spacing}, "
            f"origin={tuple(round(o, 3) for o in self.origin)}, path={self.path!r})"
        )



class _SitkBuffer:
    """Keeps a SimpleITK image alive for as long as a numpy array uses its pixel buffer."""

    def __init__(self, image: sitk.Image) -> None:
        import SimpleITK as sitk

        self.image = image
        view = sitk.GetArrayViewFromImage(image)
        interface = dict(view.__array_interface__)
        interface["data"] = (interface["data"][0], False)  # ours alone from now on: writable
        self.__array_interface__ = interface
        self._view = view


def array_from_sitk(image: sitk.Image) -> np.ndarray:
    """The voxels of ``image`` as a writable numpy array ``(z, y, x)`` over its own buffer, without a copy.

    ``sitk.GetArrayFromImage`` copies, so a large scan briefly needs twice its size; here the array keeps the
    image alive instead (it is its ``base``), and the image must not be used for anything else afterwards.
    """
    return np.asarray(_SitkBuffer(image))
