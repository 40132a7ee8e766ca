"""Geometry of imaging planes in world space: parameters, intersection lines, heatmaps, slice positions.

A plane is a 2D image placed in 3D like a ``(1, H, W)`` :class:`~napari_ssl.io.volume.Volume`: pixel ``(r, c)``
sits at ``origin + r * row_spacing * row + c * col_spacing * col`` (world mm, array order ``(Z, Y, X)``);
its normal is ``row x col`` (the direction of a Volume's first axis). Everything here is numpy, exact in
float64, and independent of how the planes were obtained (sampled from a volume or read from DICOM).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PlanesParams", "intersection", "plane_heatmaps", "planes_from_images", "slice_positions"]

Vec = tuple[float, float, float]
PARALLEL_EPS = 1e-6  # sine of the angle below which two planes count as parallel


@dataclass(frozen=True)
class PlanesParams:
    """A set of imaging planes with known world geometry (JSON-friendly tuples).

    Attributes
    ----------
    origins : tuple of (float, float, float)
        World position (mm, ``(Z, Y, X)``) of pixel ``(0, 0)`` of each plane.
    rows, cols : tuple of (float, float, float)
        Unit world directions of increasing row index and column index of each plane.
    pixel_spacing : tuple of (float, float)
        Row and column spacing (mm) of each plane.
    sizes : tuple of (int, int)
        ``(H, W)`` pixels of each plane.
    stack : tuple of int
        Stack id of each plane (parallel planes of one stack share it), ``-1`` for a single view.
    names : tuple of str
        A label for each plane (view name, ``stack[k]`` or ``oblique k``).
    volume_shape : tuple of int or None
        Spatial shape of the volume the planes were sampled from (``None`` for :meth:`ImagingPlanes.from_images`).
    volume_affine : tuple of 16 floats or None
        That volume's 4x4 index -> world matrix, row-major.
    """

    origins: tuple[Vec, ...]
    rows: tuple[Vec, ...]
    cols: tuple[Vec, ...]
    pixel_spacing: tuple[tuple[float, float], ...]
    sizes: tuple[tuple[int, int], ...]
    stack: tuple[int, ...]
    names: tuple[str, ...]
    volume_shape: tuple[int, int, int] | None = None
    volume_affine: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.origins)
        for field_name in ("rows", "cols", "pixel_spacing", "sizes", "stack", "names"):
            if len(getattr(self, field_name)) != n:
                raise ValueError(f"{field_name} has {len(getattr(self, field_name))} entries for {n} planes")
        for k, (h, w) in enumerate(self.sizes):
            if h < 1 or w < 1:
                raise ValueError(f"plane {k} ({self.names[k]}) has zero width: size {(h, w)} pixels")
        if any(min(ps) <= 0 for ps in self.pixel_spacing):
            raise ValueError(f"pixel_spacing must be > 0 mm, got {self.pixel_spacing}")
        rows = np.asarray(self.rows, dtype=float).reshape(-1, 3)
        cols = np.asarray(self.cols, dtype=float).reshape(-1, 3)
        gram = np.stack([(rows * rows).sum(1) - 1, (cols * cols).sum(1) - 1, (rows * cols).sum(1)], axis=1)
        if n and np.abs(gram).max() > 1e-4:
            k = int(np.abs(gram).max(axis=1).argmax())
            raise ValueError(
                f"plane {k}: rows and cols must be orthonormal, got {self.rows[k]}, {self.cols[k]}"
            )

    # ------------------------------------------------------------------ arrays
    def __len__(self) -> int:
        return len(self.origins)

    @property
    def n_planes(self) -> int:
        """Number of planes."""
        return len(self.origins)

    def arrays(self) -> dict[str, np.ndarray]:
        """float64 arrays: origin, row, col, normal (N, 3); spacing (N, 2); size (N, 2) int."""
        origin = np.asarray(self.origins, dtype=float).reshape(-1, 3)
        row = np.asarray(self.rows, dtype=float).reshape(-1, 3)
        col = np.asarray(self.cols, dtype=float).reshape(-1, 3)
        normal = np.cross(row, col)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        return {
            "origin": origin,
            "row": row,
            "col": col,
            "normal": normal,
            "spacing": np.asarray(self.pixel_spacing, dtype=float).reshape(-1, 2),
            "size": np.asarray(self.sizes, dtype=int).reshape(-1, 2),
        }

    @property
    def affine(self) -> np.ndarray | None:
        """The source volume's 4x4 index -> world matrix, or ``None``."""
        return (
            None if self.volume_affine is None else np.asarray(self.volume_affine, dtype=float).reshape(4, 4)
        )

    def pixel_to_world(self, k: int, rc: Any) -> np.ndarray:
        """World mm ``(..., 3)`` of fractional pixel coordinates ``(..., 2)`` (row, col) on plane ``k``."""
        a = self.arrays()
        rc = np.asarray(rc, dtype=float)
        return (
            a["origin"][k]
            + rc[..., :1] * a["spacing"][k, 0] * a["row"][k]
            + rc[..., 1:2] * a["spacing"][k, 1] * a["col"][k]
        )

    def world_to_pixel(self, k: int, points: Any) -> np.ndarray:
        """Pixel coordinates ``(..., 2)`` (row, col) of world points projected onto plane ``k``."""
        a = self.arrays()
        d = np.asarray(points, dtype=float) - a["origin"][k]
        return np.stack([d @ a["row"][k] / a["spacing"][k, 0], d @ a["col"][k] / a["spacing"][k, 1]], axis=-1)

    def corners(self, k: int) -> np.ndarray:
        """World positions (4, 3) of plane ``k``'s corner pixel centres, in drawing order."""
        h, w = self.sizes[k]
        return self.pixel_to_world(k, [[0, 0], [0, w - 1], [h - 1, w - 1], [h - 1, 0]])


def intersection(params: PlanesParams, i: int, j: int) -> dict[str, Any]:
    """The intersection line of planes ``i`` and ``j`` clipped to both images (pixel-centre rectangles).

    Returns a dict: ``parallel`` (bool; then no line), ``point`` (3,) and ``direction`` (3,) of the infinite
    line in world mm, ``segment`` (2, 3) world end points of the part inside both images or ``None`` when
    the line misses one of them, and ``pixels_i``/``pixels_j`` (2, 2) the segment in each plane's
    (row, col) pixel coordinates.
    """
    a = params.arrays()
    ni, nj = a["normal"][i], a["normal"][j]
    direction = np.cross(ni, nj)
    sine = float(np.linalg.norm(direction))
    out: dict[str, Any] = {
        "i": i,
        "j": j,
        "parallel": sine < PARALLEL_EPS,
        "point": None,
        "direction": None,
        "segment": None,
        "pixels_i": None,
        "pixels_j": None,
    }
    if out["parallel"]:
        return out
    direction /= sine
    oi, oj = a["origin"][i], a["origin"][j]
    point = np.linalg.solve(np.stack([ni, nj, direction]), np.array([ni @ oi, nj @ oj, direction @ oi]))
    out["point"], out["direction"] = point, direction
    lo, hi = -np.inf, np.inf
    for k in (i, j):
        h, w = a["size"][k]
        for axis, extent in (
            (a["row"][k] * a["spacing"][k, 0], h - 1),
            (a["col"][k] * a["spacing"][k, 1], w - 1),
        ):
            # pixel coordinate along this axis as f0 + f1 * t, kept within [0, extent]
            unit = axis / (axis @ axis)
            f0, f1 = (point - a["origin"][k]) @ unit, direction @ unit
            if abs(f1) < 1e-12:
                if f0 < -1e-9 or f0 > extent + 1e-9:
                    return out
                continue
            t0, t1 = sorted(((0 - f0) / f1, (extent - f0) / f1))
            lo, hi = max(lo, t0), min(hi, t1)
    if lo > hi:
        return out
    segment = point + np.array([lo, hi])[:, None] * direction
    out["segment"] = segment
    out["pixels_i"] = params.world_to_pixel(i, segment)
    out["pixels_j"] = params.world_to_pixel(j, segment)
    return out


def line_coefficients(params: PlanesParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every ordered pair (i, j), plane j's trace on plane i as ``alpha * r + beta * c + gamma = 0``.

    ``r``, ``c`` are pixel indices on plane i and the left side divided by ``norm`` is the signed in-plane
    distance in mm to the line. Returns ``alpha, beta, gamma, norm`` (N, N); ``norm`` below
    :data:`PARALLEL_EPS` means parallel planes (no line).
    """
    a = params.arrays()
    n = a["normal"]  # (N, 3)
    alpha = (a["row"] @ n.T) * a["spacing"][:, :1]  # [i, j] = n_j . row_i * row spacing_i
    beta = (a["col"] @ n.T) * a["spacing"][:, 1:]
    gamma = np.einsum("jd,ijd->ij", n, a["origin"][:, None, :] - a["origin"][None, :, :])
    norm = np.sqrt((a["row"] @ n.T) ** 2 + (a["col"] @ n.T) ** 2)
    return alpha, beta, gamma, norm


def plane_heatmaps(params: PlanesParams, sigma: float) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
    """Heatmaps ``exp(-d^2 / 2 sigma^2)`` of every plane's intersection lines with every other plane.

    ``d`` is the in-plane distance (mm) from a pixel centre to the line. Returns ``(heatmaps, has_line)``:
    heatmaps (N, N, H, W) float32 when all planes share one size, else a list of N arrays (N, H_i, W_i);
    channel ``j`` of plane ``i`` is its line with plane ``j``, all zeros for ``j == i`` and for parallel
    planes; ``has_line`` (N, N) bool says which channels hold a line.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 mm, got {sigma}")
    alpha, beta, gamma, norm = line_coefficients(params)
    n = params.n_planes
    has_line = norm >= PARALLEL_EPS
    np.fill_diagonal(has_line, False)
    safe = np.where(has_line, norm, 1.0)
    maps = []
    for i in range(n):
        h, w = params.sizes[i]
        r = np.arange(h, dtype=np.float32)[None, :, None]
        c = np.arange(w, dtype=np.float32)[None, None, :]
        coef = np.stack([alpha[i], beta[i], gamma[i]], axis=1) / safe[i][:, None]
        coef = coef.astype(np.float32)[:, :, None, None]
        d = coef[:, 0] * r + coef[:, 1] * c + coef[:, 2]
        heat = np.exp(d * d * np.float32(-0.5 / sigma**2))
        heat[~has_line[i]] = 0.0
        maps.append(heat)
    if len(set(params.sizes)) == 1:
        return np.stack(maps), has_line
    return maps, has_line


def slice_positions(params: PlanesParams) -> tuple[np.ndarray, np.ndarray]:
    """Relative position in [0, 1] of each stack slice within its stack, and the in-stack mask.

    Position = normal . (slice origin), normalised over the stack, the normal oriented from the stack's
    first plane towards its last so positions grow with the slice index of a sorted stack. Planes not in
    a stack get 0 and ``False``.
    """
    a = params.arrays()
    stack = np.asarray(params.stack)
    pos = np.zeros(len(stack), dtype=np.float32)
    for sid in np.unique(stack[stack >= 0]):
        members = np.flatnonzero(stack == sid)
        normal = a["normal"][members[0]]
        p = a["origin"][members] @ normal
        if p[-1] < p[0]:
            p = -p
        span = p.max() - p.min()
        pos[members] = (p - p.min()) / span if span > 0 else 0.0
    return pos, stack >= 0


def planes_from_images(volumes: Sequence[Any], names: Sequence[str] | None = None) -> PlanesParams:
    """Planes of native 2D acquisitions from their own geometry; see :meth:`ImagingPlanes.from_images`."""
    if names is not None and len(names) != len(volumes):
        raise ValueError(f"names has {len(names)} entries for {len(volumes)} volumes")
    origins, rows, cols, spacing, sizes, stack, labels = [], [], [], [], [], [], []
    n_stacks = 0
    for k, vol in enumerate(volumes):
        if not hasattr(vol, "direction"):
            raise ValueError(f"volumes[{k}] must be a napari_ssl Volume, got {type(vol).__name__}")
        depth, h, w = vol.spatial_shape
        label = (
            names[k]
            if names is not None
            else (vol.name or (Path(vol.path).name if vol.path else f"view {k}"))
        )
        sid = -1
        if depth > 1:
            sid, n_stacks = n_stacks, n_stacks + 1
        for z in range(depth):
            origins.append(tuple(float(v) for v in vol.index_to_world((z, 0, 0))))
            rows.append(tuple(float(v) for v in vol.direction[:, 1]))
            cols.append(tuple(float(v) for v in vol.direction[:, 2]))
            spacing.append((float(vol.spacing[1]), float(vol.spacing[2])))
            sizes.append((int(h), int(w)))
            stack.append(sid)
            labels.append(f"{label}[{z}]" if depth > 1 else str(label))
    if len(origins) < 2:
        raise ValueError(f"from_images needs at least 2 planes, got {len(origins)}")
    return PlanesParams(
        origins=tuple(origins),
        rows=tuple(rows),
        cols=tuple(cols),
        pixel_spacing=tuple(spacing),
        sizes=tuple(sizes),
        stack=tuple(stack),
        names=tuple(labels),
    )
