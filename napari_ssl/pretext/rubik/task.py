"""Rubik's cube recovery: permute a grid of cubes and rotate some of them by 180 degrees.

Zhuang, Li, Hu, Ma, Yang, Zheng. "Self-supervised Feature Learning for 3D Medical Images by Playing a
Rubik's Cube." MICCAI 2019, LNCS 11767, doi:10.1007/978-3-030-32251-9_46.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from napari_ssl.pretext._base import (
    ParamSpec,
    as_rng,
    check_array,
    check_foreground,
    check_range,
    copy_array,
    flip,
    int_triple,
    is_torch,
    shape_and_spacing,
    stack,
)

__all__ = ["RubikCube", "RubikParams", "permutation_set"]

# Candidate pool for grids of more than 8 cubes, where n! cannot be enumerated (fixed seed: same set everywhere).
_POOL_SIZE = 5000
_POOL_SEED = 20191013
_MAX_PERMUTATIONS = 1000


def _hamming(candidates: np.ndarray, perm: np.ndarray) -> np.ndarray:
    return np.count_nonzero(candidates != perm[None, :], axis=1)


@functools.lru_cache(maxsize=16)
def permutation_set(n_cubes: int, n_permutations: int) -> np.ndarray:
    """The fixed set of ``n_permutations`` permutations of ``n_cubes`` cubes, far apart in Hamming distance.

    Greedy max-of-min selection (Noroozi and Favaro's jigsaw recipe): start from the identity, then
    repeatedly add the candidate whose minimum Hamming distance to the chosen ones is largest (ties go
    to the first in lexicographic order). For up to 8 cubes the candidates are all ``n_cubes!``
    permutations; above that a pool of 5000 permutations drawn with a fixed seed (PCG64, identical on
    every machine) plus the identity. Deterministic and cached.

    Returns
    -------
    numpy.ndarray
        Read-only int array ``(n_permutations, n_cubes)``; row ``k`` lists, for each output position,
        the source cube placed there.
    """
    if n_cubes < 2:
        raise ValueError(f"n_cubes must be >= 2, got {n_cubes}")
    if n_cubes <= 8:
        candidates = np.array(list(itertools.permutations(range(n_cubes))), dtype=np.int16)
    else:
        rng = np.random.default_rng(_POOL_SEED)
        pool = np.argsort(rng.random((_POOL_SIZE, n_cubes)), axis=1).astype(np.int16)
        candidates = np.concatenate([np.arange(n_cubes, dtype=np.int16)[None], pool])
        candidates = np.unique(candidates, axis=0)  # sorted: the identity comes first
    limit = min(len(candidates), _MAX_PERMUTATIONS)
    if not 1 <= n_permutations <= limit:
        raise ValueError(
            f"n_permutations must be between 1 and {limit} for {n_cubes} cubes, got {n_permutations}"
        )
    chosen = [0]
    min_dist = _hamming(candidates, candidates[0])
    for _ in range(n_permutations - 1):
        best = int(np.argmax(min_dist))
        chosen.append(best)
        np.minimum(min_dist, _hamming(candidates, candidates[best]), out=min_dist)
    out = candidates[chosen].astype(np.int64)
    out.flags.writeable = False
    return out


def min_hamming_distance(perms: np.ndarray) -> int:
    """Smallest Hamming distance between two distinct rows of ``perms``."""
    p = np.asarray(perms)
    dist = np.count_nonzero(p[:, None, :] != p[None, :, :], axis=2)
    np.fill_diagonal(dist, p.shape[1] + 1)
    return int(dist.min())


@dataclass(frozen=True)
class RubikParams:
    """Every random choice of one :class:`RubikCube` draw (JSON-friendly tuples).

    Attributes
    ----------
    shape : tuple of int
        Spatial shape ``(z, y, x)`` the params were drawn for.
    grid : int
        Cubes per axis ``n``; there are ``n**3`` cells, numbered in C order over ``(z, y, x)``.
    permutation_index : int
        Class label: row of :func:`permutation_set`.
    permutation : tuple of int
        ``permutation[i]`` is the source cell of the cube placed in cell ``i``.
    rotations : tuple of (bool, bool)
        For the cube placed in cell ``i``: rotated 180 degrees about the horizontal (x) axis, which flips
        z and y, and about the vertical (y) axis, which flips z and x.
    start : tuple of int
        Voxel where the grid begins (the remainder of a shape not divisible by the grid, split evenly).
    cell : tuple of int
        Cell size ``(z, y, x)`` in voxels.
    cube : tuple of int
        Cube size ``(z, y, x)``: ``cell - gap``.
    offsets : tuple of (int, int, int)
        Jitter of each cell's cube inside its cell, each in ``[0, gap]``.
    """

    shape: tuple[int, int, int]
    grid: int
    permutation_index: int
    permutation: tuple[int, ...]
    rotations: tuple[tuple[bool, bool], ...]
    start: tuple[int, int, int]
    cell: tuple[int, int, int]
    cube: tuple[int, int, int]
    offsets: tuple[tuple[int, int, int], ...]

    def box(self, cell: int) -> tuple[slice, slice, slice]:
        """Slices ``(z, y, x)`` of the cube in cell ``cell`` (C order over the grid)."""
        n = self.grid
        g = (cell // (n * n), (cell // n) % n, cell % n)
        lo = [self.start[a] + g[a] * self.cell[a] + self.offsets[cell][a] for a in range(3)]
        return tuple(slice(lo[a], lo[a] + self.cube[a]) for a in range(3))  # type: ignore[return-value]


def _rotation_axes(flags: tuple[bool, bool]) -> tuple[int, ...]:
    about_x, about_y = flags
    if about_x and about_y:  # the two 180-degree turns compose to one about z
        return (-2, -1)
    if about_x:
        return (-3, -2)
    if about_y:
        return (-3, -1)
    return ()


def _covers(params: RubikParams) -> bool:
    """True when the cubes tile the whole volume (no gap, shape divisible by the grid)."""
    return params.cube == params.cell and all(
        c * params.grid == s for c, s in zip(params.cell, params.shape, strict=True)
    )


def _empty_like(x: Any) -> Any:
    if is_torch(x):
        import torch

        return torch.empty_like(x)
    return np.empty_like(x)


class RubikCube:
    """Rubik's cube recovery pretext (Zhuang et al., MICCAI 2019).

    The volume is cut into an ``grid x grid x grid`` grid of cells; each cell holds a cube smaller than
    the cell by ``gap`` voxels, placed at a random offset (jitter) inside it, so neighbouring cubes are
    separated by a random gap and edge continuity cannot give the order away. The cubes are then
    rearranged by one of a fixed set of ``n_permutations`` permutations chosen for maximal minimum
    Hamming distance (:func:`permutation_set`), and each cube is rotated by 180 degrees about the
    horizontal (x) and/or vertical (y) axis with probability ``p_rotate`` each. A 180-degree turn is a
    flip of two axes, so cubes that are not cubic keep their shape. The network predicts the
    permutation index (softmax) and the per-cube rotation flags (multi-label sigmoid).

    Shapes not divisible by the grid are **cropped**: the grid covers ``grid * (size // grid)`` voxels
    per axis, centred, and the few remaining border voxels are left as they are. Gap voxels around the
    cubes are also left in place, so :meth:`apply` moves voxels only between cubes and
    :meth:`invert` is exact for any ``gap``.

    Parameters
    ----------
    grid : int, default 2
        Cubes per axis (2 in the paper: 8 cubes).
    n_permutations : int, default 100
        Size ``K`` of the permutation set (the paper's classification classes).
    gap : int or tuple of int, default 10
        Cell size minus cube size, in voxels, per axis ``(z, y, x)``; the paper uses about 10.
        Each cube is jittered by ``0..gap`` voxels inside its cell. Use 0 for cubes that tile the grid.
    p_rotate : float, default 0.5
        Probability of each 180-degree rotation (about x, about y) for each cube.

    Examples
    --------
    >>> import numpy as np
    >>> task = RubikCube(grid=2, n_permutations=100, gap=2)
    >>> params = task.sample((32, 32, 32), np.random.default_rng(0))
    >>> x = np.random.default_rng(1).random((1, 32, 32, 32), dtype=np.float32)
    >>> y = task.apply(x, params)
    >>> bool((task.invert(y, params) == x).all())
    True
    >>> task.cubes(x, params).shape
    (8, 1, 14, 14, 14)
    """

    name: ClassVar[str] = "rubik"
    PARAMETERS: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("grid", int, 2, 2, 4, "cubes per axis (2: 8 cubes, as in the paper)"),
        ParamSpec("n_permutations", int, 100, 1, _MAX_PERMUTATIONS, "number K of permutation classes"),
        ParamSpec("gap", int, 10, 0, None, "voxels between a cell and its cube (random jitter); paper ~10"),
        ParamSpec("p_rotate", float, 0.5, 0.0, 1.0, "probability of each 180-degree cube rotation"),
    )

    def __init__(
        self,
        grid: int = 2,
        n_permutations: int = 100,
        gap: int | tuple[int, int, int] = 10,
        p_rotate: float = 0.5,
    ) -> None:
        if not isinstance(grid, (int, np.integer)):
            raise ValueError(f"grid must be an int between 2 and 4, got {grid!r}")
        check_range(grid, "grid", 2, 4)
        limit = min(math.factorial(grid**3), _MAX_PERMUTATIONS)
        check_range(n_permutations, "n_permutations", 1, limit)
        self.grid = int(grid)
        self.n_permutations = int(n_permutations)
        self.gap = int_triple(gap, "gap")
        if min(self.gap) < 0:
            raise ValueError(f"gap must be >= 0 voxels, got {gap!r}")
        check_range(p_rotate, "p_rotate", 0.0, 1.0)
        self.p_rotate = float(p_rotate)

    def __repr__(self) -> str:
        return (
            f"RubikCube(grid={self.grid}, n_permutations={self.n_permutations}, gap={self.gap}, "
            f"p_rotate={self.p_rotate})"
        )

    @property
    def permutations(self) -> np.ndarray:
        """The fixed permutation set ``(n_permutations, grid**3)``."""
        return permutation_set(self.grid**3, self.n_permutations)

    # ------------------------------------------------------------------ sample / apply
    def sample(self, shape: Any, rng: Any = None, spacing: Any = None, foreground: Any = None) -> RubikParams:
        """Draw the permutation, rotations and jitter for a volume of spatial shape ``shape``.

        ``shape`` may also be a :class:`~napari_ssl.io.volume.Volume`; ``spacing`` is accepted for a
        uniform signature across pretexts and unused (the grid is in voxels).

        ``foreground`` (optional) is a boolean mask of the spatial shape (e.g. from
        :func:`napari_ssl.io.foreground.foreground_mask`): the grid then covers the bulk of the mask
        (:func:`~napari_ssl.io.foreground.foreground_bbox`, grown where needed to fit ``grid`` cubes of at least
        one voxel), so the cubes sit on the body rather than in the air around it. ``None`` or an empty
        mask: the grid covers the whole volume. The random draws are the same either way, so a seed gives
        the same permutation, rotations and jitter with and without a mask.
        """
        (sz, sy, sx), _ = shape_and_spacing(shape, spacing)
        rng = as_rng(rng)
        n = self.grid
        size = (sz, sy, sx)
        for axis, s in zip("zyx", size, strict=True):
            if s < n:
                raise ValueError(f"shape {size} is smaller than grid={n} along {axis} ({s} < {n} voxels)")
        cell = tuple(s // n for s in size)
        for axis, c, g in zip("zyx", cell, self.gap, strict=True):
            if g >= c:
                raise ValueError(
                    f"gap={g} along {axis} leaves no cube: shape {size} with grid={n} gives cells of {c} "
                    f"voxels, so gap must be < {c}"
                )
        start = tuple((s - n * c) // 2 for s, c in zip(size, cell, strict=True))
        mask = check_foreground(foreground, size)
        if mask is not None:
            start, cell = self._region(mask, size)
        cube = tuple(c - g for c, g in zip(cell, self.gap, strict=True))
        n_cells = n**3
        index = int(rng.integers(0, self.n_permutations))
        perm = tuple(self.permutations[index].tolist())
        flags = rng.random((n_cells, 2)) < self.p_rotate
        jitter = rng.integers(0, np.asarray(self.gap) + 1, size=(n_cells, 3))
        return RubikParams(
            shape=size,
            grid=n,
            permutation_index=index,
            permutation=perm,
            rotations=tuple((a, b) for a, b in flags.tolist()),
            start=start,  # type: ignore[arg-type]
            cell=cell,  # type: ignore[arg-type]
            cube=cube,  # type: ignore[arg-type]
            offsets=tuple((a, b, c) for a, b, c in jitter.tolist()),
        )

    def _region(
        self, mask: np.ndarray, size: tuple[int, int, int]
    ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Grid start and cell size covering the bulk of ``mask``, each cell larger than the gap."""
        from napari_ssl.io.foreground import foreground_bbox

        box = foreground_bbox(mask)
        assert box is not None  # check_foreground returns None for an empty mask
        n = self.grid
        start, cell = [], []
        for lo, hi, s, g in zip(*box, size, self.gap, strict=True):
            need = n * (g + 1)  # every cell must hold a cube of at least one voxel
            extent = max(hi - lo, need)
            lo = min(max(0, (lo + hi - extent) // 2), s - extent)
            c = extent // n
            start.append(lo + (extent - n * c) // 2)
            cell.append(c)
        return (start[0], start[1], start[2]), (cell[0], cell[1], cell[2])

    def apply(self, x: Any, params: RubikParams) -> Any:
        """Rearrange and rotate the cubes of ``x`` (numpy array or torch tensor, last axes ``(z, y, x)``).

        Returns a new array of the same type, shape, dtype and device; ``x`` is not modified. Cell ``i``
        receives the cube of cell ``params.permutation[i]``, rotated as ``params.rotations[i]``.
        """
        check_array(x, params.shape)
        out = _empty_like(x) if _covers(params) else copy_array(x)  # no copy when the cubes tile everything
        for i, src in enumerate(params.permutation):
            out[(..., *params.box(i))] = flip(x[(..., *params.box(src))], _rotation_axes(params.rotations[i]))
        return out

    def invert(self, y: Any, params: RubikParams) -> Any:
        """Undo :meth:`apply`: put every cube back in its cell with its original orientation (exact)."""
        check_array(y, params.shape, name="y")
        out = _empty_like(y) if _covers(params) else copy_array(y)
        for i, src in enumerate(params.permutation):
            out[(..., *params.box(src))] = flip(y[(..., *params.box(i))], _rotation_axes(params.rotations[i]))
        return out

    def cubes(self, x: Any, params: RubikParams) -> Any:
        """The rearranged, rotated cubes for the Siamese network, stacked: ``(grid**3, ..., cz, cy, cx)``.

        Entry ``i`` is the cube :meth:`apply` puts in cell ``i``; ``x`` is the original (uncorrupted) input.
        """
        check_array(x, params.shape)
        return stack(
            [
                flip(x[(..., *params.box(src))], _rotation_axes(params.rotations[i]))
                for i, src in enumerate(params.permutation)
            ]
        )

    # ------------------------------------------------------------------ targets / overlay
    def targets(self, params: RubikParams, x: Any = None) -> dict[str, Any]:
        """``{"permutation": int class index, "rotations": float32 (grid**3, 2)}``.

        ``rotations[i]`` holds the multi-label flags of the cube in cell ``i``: column 0 about the
        horizontal (x) axis, column 1 about the vertical (y) axis. ``x`` is unused.
        """
        return {
            "permutation": params.permutation_index,
            "rotations": np.asarray(params.rotations, dtype=np.float32).reshape(-1, 2),
        }

    def overlay(self, params: RubikParams) -> dict[str, Any]:
        """Geometry for drawing, in voxel coordinates ``(z, y, x)``.

        Keys: ``boxes`` (n_cells, 2, 3) int, start and stop (exclusive) of each cell's cube after
        :meth:`apply`; ``source_boxes`` the box its content came from; ``source`` (n_cells,) the source
        cell; ``grid_index`` (n_cells, 3) each cell's position in the grid; ``rotations`` (n_cells, 2) bool
        (about x, about y); ``permutation_index``; ``shape``.
        """
        n_cells = params.grid**3

        def box_array(cell: int) -> list[list[int]]:
            b = params.box(cell)
            return [[s.start for s in b], [s.stop for s in b]]

        n = params.grid
        return {
            "kind": "rubik",
            "shape": params.shape,
            "boxes": np.array([box_array(i) for i in range(n_cells)], dtype=int),
            "source_boxes": np.array([box_array(s) for s in params.permutation], dtype=int),
            "source": np.array(params.permutation, dtype=int),
            "grid_index": np.array([(i // (n * n), (i // n) % n, i % n) for i in range(n_cells)], dtype=int),
            "rotations": np.array(params.rotations, dtype=bool).reshape(-1, 2),
            "permutation_index": params.permutation_index,
        }
