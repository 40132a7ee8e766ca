"""Anatomy-oriented imaging planes: relative orientation (intersection-line heatmaps) and relative location
(slice position in a stack) of planes with known world geometry.

Zhang et al. "Self-supervised Learning for Medical Image Data with Anatomy-Oriented Imaging Planes."
Medical Image Analysis (2024), arXiv:2403.16499.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from napari_ssl.io.foreground import foreground_bbox
from napari_ssl.pretext._base import (
    ParamSpec,
    as_rng,
    check_array,
    check_choice,
    check_range,
    is_torch,
    shape_and_spacing,
)
from napari_ssl.pretext._base import check_foreground as _foreground
from napari_ssl.pretext.planes.geometry import (
    PlanesParams,
    intersection,
    plane_heatmaps,
    planes_from_images,
    slice_positions,
)
from napari_ssl.pretext.planes.views import (
    add_anatomical,
    add_random,
    add_stack,
    cross,
    new_views,
    rotate_in_plane,
    stack_axis,
)

__all__ = ["ImagingPlanes", "PlanesParams"]

_MAX_SIZE = 2048


def _border_median(x: Any) -> Any:
    """Median of the voxels on the six faces of each volume of ``x`` (C, Z, Y, X) -> (C,)."""
    import torch

    c = x.shape[0]
    faces = [x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]]
    return torch.cat([f.reshape(c, -1) for f in faces], dim=1).median(dim=1).values


def _as_tensor(x: np.ndarray) -> Any:
    """A torch view of a numpy array (a copy only for non-native byte order or non-contiguous memory)."""
    import torch

    arr = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))
    if arr.flags.writeable:
        return torch.from_numpy(arr)
    with warnings.catch_warnings():  # a read-only array (memory map, frozen Volume): only read here
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


class ImagingPlanes:
    """Imaging-planes pretext (Zhang et al., Medical Image Analysis 2024).

    From a 3D volume, :meth:`sample` picks ``n_stack`` parallel slices along one axis (a stack, like a
    cardiac short-axis stack) plus ``n_oblique`` views through the region of interest (like the 2-, 3- and
    4-chamber views); :meth:`apply` resamples them. By default the views are anatomy-oriented, as in the
    paper: each oblique view has a fixed orientation in the volume (the long axis of the stack in the
    view, views evenly turned about it), tilted by up to ``jitter`` degrees and passing through one point
    of the stack's centre line, so where a view cuts another follows from the anatomy; every plane is then
    turned in its own plane by up to ``rotation`` degrees, so the network must read each image's pose from
    the anatomy it shows (with fixed poses, one constant heatmap per view would answer without looking).
    ``views="random"`` gives oblique views at random angles instead; where such a view cuts another image is
    then not visible in that image, so most of its lines cannot be learned. The network learns, for each
    plane, heatmaps of its intersection lines with the other planes (relative orientation) and, for the
    stack slices, their relative position in the stack (relative location). All geometry is in physical
    mm, so anisotropic scans give the right angles. For native multi-view 2D acquisitions (DICOM
    series with position and orientation), :meth:`from_images` builds the same targets.

    Parameters
    ----------
    n_stack : int, default 8
        Parallel slices of the stack, evenly spaced across the region of interest (0 for none; 1 is
        refused, a position within a one-slice stack is undefined).
    n_oblique : int, default 3
        Oblique views (see ``views``).
    size : int or (int, int), default 128
        Plane image size ``(H, W)`` in pixels.
    pixel_spacing : float, default 0
        Plane pixel size in mm; 0 fits the plane to the volume's largest extent.
    sigma : float, default 7.56
        Heatmap width in mm (official code: 6 pixels at 1.26 mm).
    stack_axis : {"z", "y", "x", "random"}, default "z"
        Array axis the stack advances along (its slices are perpendicular to it).
    roi : float, default 0.5
        Region of interest: the central box spanning this fraction of the volume along each axis.
    min_angle : float, default 20
        Minimum angle in degrees between a random oblique plane and any other non-parallel plane.
    views : {"anatomical", "random"}, default "anatomical"
        Oblique views fixed in the anatomy (up to ``jitter``) or at random angles (normal uniform on the
        sphere, random in-plane rotation, centre uniform in the region of interest).
    jitter : float, default 15
        Anatomical views: each oblique view is tilted about a random axis by up to this many degrees.
    rotation : float, default 180
        Anatomical views: each plane (stack slices too) is turned in its plane by a uniform angle in
        ``[-rotation, rotation]`` degrees.

    Notes
    -----
    Unlike the Rubik and context pretexts, :meth:`apply` does not return the input's shape: it returns
    the plane images, ``(..., N, H, W)`` for input ``(..., Z, Y, X)``.

    Examples
    --------
    >>> import numpy as np
    >>> task = ImagingPlanes(n_stack=4, n_oblique=2, size=16)
    >>> params = task.sample((20, 24, 28), np.random.default_rng(0), spacing=(2.0, 1.0, 1.0))
    >>> task.apply(np.ones((2, 20, 24, 28), np.float32), params).shape
    (2, 6, 16, 16)
    >>> task.targets(params)["heatmaps"].shape
    (6, 6, 16, 16)
    """

    name: ClassVar[str] = "planes"
    PARAMETERS: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("n_stack", int, 8, 0, 64, "parallel slices of the stack (0: none)"),
        ParamSpec("n_oblique", int, 3, 0, 16, "oblique views at random angles"),
        ParamSpec("size", int, 128, 2, _MAX_SIZE, "plane image size in pixels"),
        ParamSpec("pixel_spacing", float, 0.0, 0.0, None, "plane pixel size in mm (0: fit the volume)"),
        ParamSpec("sigma", float, 7.56, 1e-3, None, "heatmap width in mm (paper: 6 px at 1.26 mm)"),
        ParamSpec(
            "stack_axis", str, "z", None, None, "axis the stack advances along", ("z", "y", "x", "random")
        ),
        ParamSpec("roi", float, 0.5, 0.01, 1.0, "central fraction of the volume the planes go through"),
        ParamSpec("min_angle", float, 20.0, 0.0, 60.0, "minimum angle (degrees) between random oblique planes"),
        ParamSpec(
            "views", str, "anatomical", None, None, "oblique views: anatomy-oriented (fixed, tilted) or random",
            ("anatomical", "random"),
        ),
        ParamSpec("jitter", float, 15.0, 0.0, 90.0, "random tilt (degrees) of each anatomical view"),
        ParamSpec("rotation", float, 180.0, 0.0, 180.0, "random in-plane rotation (+- degrees) of anatomical views"),
    )

    def __init__(
        self,
        n_stack: int = 8,
        n_oblique: int = 3,
        size: int | tuple[int, int] = 128,
        pixel_spacing: float | None = 0.0,
        sigma: float = 7.56,
        stack_axis: str = "z",
        roi: float = 0.5,
        min_angle: float = 20.0,
        views: str = "anatomical",
        jitter: float = 15.0,
        rotation: float = 180.0,
    ) -> None:
        check_range(n_stack, "n_stack", 0, 64)
        if n_stack == 1:
            raise ValueError("n_stack must be 0 or >= 2 (a position within a one-slice stack is undefined)")
        check_range(n_oblique, "n_oblique", 0, 16)
        if n_stack + n_oblique < 2:
            raise ValueError(f"need at least 2 planes, got n_stack={n_stack} + n_oblique={n_oblique}")
        hw = np.broadcast_to(np.asarray(size), (2,)) if np.ndim(size) == 0 else np.asarray(size)
        if hw.shape != (2,) or not all(float(v).is_integer() for v in hw):
            raise ValueError(f"size must be an int or (H, W) ints, got {size!r}")
        if min(hw) < 2:
            raise ValueError(f"size must be >= 2 pixels (a zero-width plane has no image), got {size!r}")
        if max(hw) > _MAX_SIZE:
            raise ValueError(f"size must be <= {_MAX_SIZE} pixels, got {size!r}")
        ps = 0.0 if pixel_spacing is None else float(pixel_spacing)
        if not (math.isfinite(ps) and ps >= 0):
            raise ValueError(f"pixel_spacing must be >= 0 mm (0: fit the volume), got {pixel_spacing!r}")
        check_range(sigma, "sigma", 1e-3)
        check_choice(stack_axis, "stack_axis", ("z", "y", "x", "random"))
        if not 0 < roi <= 1:
            raise ValueError(f"roi must be in (0, 1], got {roi}")
        check_range(min_angle, "min_angle", 0.0, 60.0)
        check_choice(views, "views", ("anatomical", "random"))
        check_range(jitter, "jitter", 0.0, 90.0)
        check_range(rotation, "rotation", 0.0, 180.0)
        self.n_stack = int(n_stack)
        self.n_oblique = int(n_oblique)
        self.size = (int(hw[0]), int(hw[1]))
        self.pixel_spacing = ps
        self.sigma = float(sigma)
        self.stack_axis = stack_axis
        self.roi = float(roi)
        self.min_angle = float(min_angle)
        self.views = views
        self.jitter = float(jitter)
        self.rotation = float(rotation)

    def __repr__(self) -> str:
        return (
            f"ImagingPlanes(n_stack={self.n_stack}, n_oblique={self.n_oblique}, size={self.size}, "
            f"pixel_spacing={self.pixel_spacing}, sigma={self.sigma}, stack_axis={self.stack_axis!r}, "
            f"roi={self.roi}, min_angle={self.min_angle}, views={self.views!r}, jitter={self.jitter}, "
            f"rotation={self.rotation})"
        )

    # ------------------------------------------------------------------ sample
    def sample(
        self, shape: Any, rng: Any = None, spacing: Any = None, foreground: Any = None
    ) -> PlanesParams:
        """Pick the stack and the oblique planes for a volume.

        Parameters
        ----------
        shape : tuple of int or Volume
            Spatial shape ``(z, y, x)``; or a :class:`~napari_ssl.io.volume.Volume`, whose spacing, origin and
            direction then place the planes in its world (patient) coordinates.
        rng : numpy.random.Generator or int, optional
        spacing : tuple of float, optional
            Voxel size in mm ``(z, y, x)`` for a plain shape (default 1 mm); world is then ``index * spacing``.
        foreground : numpy.ndarray of bool, optional
            Mask of the body (e.g. :func:`napari_ssl.io.foreground.foreground_mask`): the region of interest is
            then ``roi`` of the mask's bounding box, centred on it, instead of ``roi`` of the whole volume.
            The random draws are the same with and without it.
        """
        size, sp = shape_and_spacing(shape, spacing)
        rng = as_rng(rng)
        for axis, s in zip("zyx", size, strict=True):
            if s < 2:
                raise ValueError(
                    f"planes need a 3D volume of at least 2 voxels per axis, got {size} ({axis})"
                )
        affine = np.eye(4)
        affine[:3, :3] = np.diag(sp)
        if hasattr(shape, "affine"):
            affine = np.asarray(shape.affine, dtype=float)
        rot = affine[:3, :3] / np.asarray(sp)[None, :]  # direction
        extent = (np.asarray(size) - 1) * np.asarray(sp)  # mm, in the grid frame (index * spacing)
        centre = extent / 2
        half = self.roi * extent / 2
        mask = _foreground(foreground, size)
        box = None if mask is None else foreground_bbox(mask)
        if box is not None:
            lo = np.asarray(box[0], dtype=float) * np.asarray(sp)
            hi = (np.asarray(box[1], dtype=float) - 1) * np.asarray(sp)
            centre = (lo + hi) / 2
            half = self.roi * (hi - lo) / 2
        ps = self.pixel_spacing or float(extent.max()) / (max(self.size) - 1)
        h, w = self.size

        views = new_views()
        axis, shift = -1, np.zeros(3)
        if self.n_stack or (self.views == "anatomical" and self.n_oblique):  # anatomical views follow the stack
            axis, shift = stack_axis(self, rng), rng.uniform(-1, 1, size=3) * half
        if self.n_stack:
            add_stack(views, self.n_stack, axis, centre, shift, half)
        if self.views == "random":
            normal = np.eye(3)[axis] if self.n_stack else None
            add_random(views, self.n_oblique, normal, self.min_angle, centre, half, rng)
        elif self.n_oblique:
            through = centre + shift  # on the stack's centre line, halfway up
            through[axis] = centre[axis]
            add_anatomical(views, self.n_oblique, axis, through, self.jitter, rng)
        if self.views == "anatomical" and self.rotation:
            rotate_in_plane(views, self.rotation, rng)

        origins, row_w, col_w = [], [], []
        for n, r, c in zip(views["normals"], views["rows"], views["centres"], strict=True):
            col = cross(n, r)  # so that row x col = normal
            corner = c - (h - 1) / 2 * ps * r - (w - 1) / 2 * ps * col
            origins.append(affine[:3, 3] + rot @ corner)
            row_w.append(rot @ r)
            col_w.append(rot @ col)
        return PlanesParams(
            origins=tuple(tuple(float(v) for v in o) for o in origins),
            rows=tuple(tuple(float(v) for v in r) for r in row_w),
            cols=tuple(tuple(float(v) for v in c) for c in col_w),
            pixel_spacing=((ps, ps),) * len(origins),
            sizes=((h, w),) * len(origins),
            stack=tuple(views["stack"]),
            names=tuple(views["names"]),
            volume_shape=size,
            volume_affine=tuple(float(v) for v in affine.ravel()),
        )

    @classmethod
    def from_images(cls, volumes: Sequence[Any], names: Sequence[str] | None = None) -> PlanesParams:
        """Planes of native 2D acquisitions from their own geometry (e.g. cardiac MR views read from DICOM).

        Each :class:`~napari_ssl.io.volume.Volume` gives: a ``(1, H, W)`` plane, one view; a ``(Z, H, W)``
        stack, ``Z`` parallel planes sharing a stack id (slice positions follow their world positions);
        a ``(t, 1, H, W)`` cine or ``(t, Z, H, W)`` series, the geometry of its first frame. The result
        has no source volume, so :meth:`apply` refuses it: the images are the volumes' own arrays.
        """
        return planes_from_images(volumes, names)

    # ------------------------------------------------------------------ apply
    def apply(self, x: Any, params: PlanesParams) -> Any:
        """Resample the planes from ``x`` (numpy or torch, ``(..., Z, Y, X)``): returns ``(..., N, H, W)``.

        Trilinear interpolation with ``torch.nn.functional.grid_sample`` in one batched call over all
        planes and all leading axes, on ``x``'s device; pixels outside the volume take the median of the
        volume's border voxels, its background (air on CT, where a 0 would read as water in HU; 0 on
        skull-stripped, z-scored MR, where the minimum would draw the volume's box edges into every plane,
        a cue to the plane's pose that owes nothing to the anatomy). Same type, dtype
        and device as ``x`` (integer inputs are rounded back); ``x`` is not modified.
        """
        import torch
        import torch.nn.functional as F

        if params.volume_affine is None or params.volume_shape is None:
            raise ValueError("these planes come from images (from_images): there is no volume to resample")
        if len(set(params.sizes)) != 1:
            raise ValueError(f"apply needs planes of one size, got sizes {sorted(set(params.sizes))}")
        check_array(x, params.volume_shape)
        tensor = x if is_torch(x) else _as_tensor(x)
        lead = tuple(tensor.shape[:-3])
        work = tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.to(torch.float32)
        grid = self._grid(params, work.dtype, work.device)
        flat = work.reshape(1, -1, *params.volume_shape)
        out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        outside = (grid.abs() > 1.0).any(dim=-1)  # (1, N, H, W): no voxel of the volume there
        fill = _border_median(flat[0])
        out = torch.where(outside[:, None], fill.reshape(1, -1, 1, 1, 1), out)
        n = params.n_planes
        h, w = params.sizes[0]
        out = out.reshape(*lead, n, h, w)
        if out.dtype != tensor.dtype:
            out = (out.round() if not tensor.dtype.is_floating_point else out).to(tensor.dtype)
        return out if is_torch(x) else out.numpy()

    @staticmethod
    def _grid(params: PlanesParams, dtype: Any, device: Any) -> Any:
        """Normalised sampling grid (1, N, H, W, 3) in grid_sample's (x, y, z) order."""
        import torch

        a = params.arrays()
        affine = params.affine
        assert affine is not None and params.volume_shape is not None
        inv = np.linalg.inv(affine[:3, :3])
        start = (a["origin"] - affine[:3, 3]) @ inv.T  # voxel index of pixel (0, 0), (N, 3)
        step_r = (a["row"] * a["spacing"][:, :1]) @ inv.T
        step_c = (a["col"] * a["spacing"][:, 1:]) @ inv.T
        scale = 2.0 / (np.asarray(params.volume_shape, dtype=float) - 1)
        # normalise: index * 2 / (S - 1) - 1, then reverse (z, y, x) -> (x, y, z)
        # (N, component x/y/z, term): grid = start + r * step_r + c * step_c, normalised to [-1, 1]
        coef = np.stack([start * scale - 1, step_r * scale, step_c * scale], axis=2)[:, ::-1, :]
        coef_t = torch.as_tensor(coef.copy(), dtype=dtype, device=device)
        h, w = params.sizes[0]
        r = torch.arange(h, dtype=dtype, device=device)[None, None, :, None]
        c = torch.arange(w, dtype=dtype, device=device)[None, None, None, :]
        # built component-first (fast contiguous broadcasting), then made (N, H, W, 3) contiguous
        grid = coef_t[..., 0, None, None] + r * coef_t[..., 1, None, None] + c * coef_t[..., 2, None, None]
        grid = grid.permute(0, 2, 3, 1).contiguous()
        return grid[None]

    # ------------------------------------------------------------------ targets / overlay
    def targets(self, params: PlanesParams, x: Any = None) -> dict[str, Any]:
        """What the network predicts for each plane.

        Returns
        -------
        dict
            ``heatmaps``: (N, N, H, W) float32 (a list of (N, H_i, W_i) for planes of different sizes),
            channel ``j`` of plane ``i`` = ``exp(-d^2 / 2 sigma^2)`` of the distance ``d`` (mm) to its
            intersection line with plane ``j``, zero where there is no line; ``has_line`` (N, N) bool
            (False on the diagonal and for parallel planes); ``slice_position`` (N,) float32 in [0, 1]
            for stack slices (0 elsewhere) and ``in_stack`` (N,) bool. ``x`` is unused.
        """
        heat, has_line = plane_heatmaps(params, self.sigma)
        pos, in_stack = slice_positions(params)
        return {"heatmaps": heat, "has_line": has_line, "slice_position": pos, "in_stack": in_stack}

    def overlay(self, params: PlanesParams) -> dict[str, Any]:
        """Plain geometry for drawing.

        Keys: ``planes``, one dict per plane with ``name``, ``stack``, ``corners_world`` (4, 3) and, when
        the planes come from a volume, ``corners_voxel`` (4, 3) in that volume's index coordinates;
        ``lines``, one dict per pair ``i < j`` with ``parallel`` (then no line), ``segment_world`` (2, 3),
        ``segment_voxel`` (2, 3) or ``None``, and ``pixels_i`` / ``pixels_j`` (2, 2) (row, col) on each
        plane; a ``segment`` is ``None`` when the line misses one of the two images.
        """
        affine = params.affine
        inv = None if affine is None else np.linalg.inv(affine)

        def to_voxel(points: np.ndarray | None) -> np.ndarray | None:
            if points is None or inv is None:
                return None
            return points @ inv[:3, :3].T + inv[:3, 3]

        planes = []
        for k in range(params.n_planes):
            corners = params.corners(k)
            planes.append(
                {
                    "name": params.names[k],
                    "stack": params.stack[k],
                    "size": params.sizes[k],
                    "corners_world": corners,
                    "corners_voxel": to_voxel(corners),
                }
            )
        lines = []
        for i in range(params.n_planes):
            for j in range(i + 1, params.n_planes):
                cut = intersection(params, i, j)
                lines.append(
                    {
                        "i": i,
                        "j": j,
                        "parallel": cut["parallel"],
                        "segment_world": cut["segment"],
                        "segment_voxel": to_voxel(cut["segment"]),
                        "pixels_i": cut["pixels_i"],
                        "pixels_j": cut["pixels_j"],
                    }
                )
        return {"kind": "planes", "volume_shape": params.volume_shape, "planes": planes, "lines": lines}
