"""Context restoration: swap pairs of non-overlapping patches; the network restores the original.

Chen, Bentley, Mori, Misawa, Fujiwara, Rueckert. "Self-supervised learning for medical image analysis using
image context restoration." Medical Image Analysis 58 (2019) 101539, doi:10.1016/j.media.2019.101539.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from napari_ssl.pretext._base import (
    ParamSpec,
    as_rng,
    check_array,
    check_choice,
    check_foreground,
    check_range,
    copy_array,
    float_triple,
    inside_fraction,
    masked_pair_draw,
    shape_and_spacing,
)

__all__ = ["ContextParams", "ContextRestoration"]

_ROUNDS = 12  # rounds of random candidates before falling back to the grid
_MAX_BATCH = 256  # candidate pairs per round
_MAX_RANDOM_FILL = 0.25  # above this fraction of the volume in patches, go straight to the grid
#: with a foreground mask, a patch counts as "on the body" when its centre voxel and at least this fraction of
#: its voxels are in the mask
MIN_INSIDE = 0.5


def _overlap(a: tuple[int, ...], b: tuple[int, ...], patch: tuple[int, ...]) -> bool:
    """True when the patches with corners ``a`` and ``b`` share a voxel (partial overlap included)."""
    return abs(a[0] - b[0]) < patch[0] and abs(a[1] - b[1]) < patch[1] and abs(a[2] - b[2]) < patch[2]


def _clash(a: np.ndarray, b: np.ndarray, patch: tuple[int, int, int], pairwise: bool = True) -> np.ndarray:
    """Overlap of same-size patches with corners ``a`` (3, n) and ``b`` (3, m), partial overlap included.

    Returns (n, m) bools, or (n,) for ``a[:, i]`` against ``b[:, i]`` when not ``pairwise``.
    """
    out: np.ndarray | None = None
    for k in range(3):
        d = a[k][:, None] - b[k][None, :] if pairwise else a[k] - b[k]
        near = np.abs(d) < patch[k]
        out = near if out is None else out & near
    assert out is not None
    return out


@dataclass(frozen=True)
class ContextParams:
    """Every random choice of one :class:`ContextRestoration` draw.

    Attributes
    ----------
    shape : tuple of int
        Spatial shape ``(z, y, x)`` the params were drawn for.
    patch : tuple of int
        Patch size ``(z, y, x)`` in voxels (``z == 1`` for 2D patches).
    pairs : tuple of ((int, int, int), (int, int, int))
        Corner (lowest voxel) of the two patches of each swap, in the order they are swapped.

    Raises
    ------
    ValueError
        When a patch leaves the volume or two patches overlap (checked on construction, so hand-made
        params are held to the same rule as sampled ones).
    """

    shape: tuple[int, int, int]
    patch: tuple[int, int, int]
    pairs: tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...]

    def __post_init__(self) -> None:
        if not self.pairs:
            return
        corners = np.asarray(self.pairs, dtype=np.int64)
        if corners.ndim != 3 or corners.shape[1:] != (2, 3):
            raise ValueError(f"pairs must be ((z, y, x), (z, y, x)) corner pairs, got {self.pairs!r}")
        flat = corners.reshape(-1, 3)
        outside = (flat < 0).any(axis=1) | (flat + np.asarray(self.patch) > np.asarray(self.shape)).any(
            axis=1
        )
        if outside.any():
            c = tuple(flat[np.argmax(outside)].tolist())
            raise ValueError(f"a patch of size {self.patch} at {c} leaves the volume of shape {self.shape}")
        clash = _clash(flat.T, flat.T, self.patch)
        np.fill_diagonal(clash, False)
        if clash.any():
            i, j = np.argwhere(clash)[0]
            raise ValueError(
                f"patches at {tuple(flat[i].tolist())} and {tuple(flat[j].tolist())} overlap "
                f"(patch size {self.patch})"
            )

    def slices(self, corner: tuple[int, int, int]) -> tuple[slice, slice, slice]:
        """Slices ``(z, y, x)`` of the patch whose corner is ``corner``."""
        return tuple(slice(c, c + p) for c, p in zip(corner, self.patch, strict=True))  # type: ignore[return-value]


class ContextRestoration:
    """Context restoration pretext (Chen et al., Medical Image Analysis 2019, Algorithm 1).

    ``n_swaps`` times, two patches of the same size are picked at random and swapped. Intensities are
    kept (unlike in-painting) while spatial context is broken; an encoder-decoder learns to restore
    the clean image (L2 loss), so :meth:`targets` gives the clean image.

    No two patches ever overlap, partially or fully, within a pair or across swaps (public versions
    such as TorchIO's ``RandomSwap`` only reject a patch lying wholly inside the other). Positions are
    drawn uniformly and a candidate overlapping any patch already chosen is redrawn; when the volume is
    too crowded for that, the positions come from a randomly shifted grid of patch-sized slots, which
    always succeeds when ``2 * n_swaps`` patches fit in that grid (the limit :meth:`sample` enforces).
    Because the patches are disjoint, undoing the swaps in reverse order (:meth:`invert`) is exact.

    Parameters
    ----------
    n_swaps : int, default 20
        Number ``T`` of swaps. The paper tunes ``T`` and the patch size per dataset; ours are defaults
        for 64-128 voxel patches.
    patch_size : float or tuple of float, default 16
        Patch size ``(z, y, x)`` (one value for all axes), in voxels or mm (see ``unit``).
    unit : {"voxel", "mm"}, default "voxel"
        Unit of ``patch_size``; mm sizes are converted with the spacing given to :meth:`sample`
        (rounded, at least one voxel), so anisotropic scans get physically cubic patches.
    mode : {"3d", "2d"}, default "3d"
        ``"3d"``: box patches. ``"2d"``: flat ``(1, y, x)`` patches, the two patches of a pair always in
        the same z slice (the paper's 2D setting, slice by slice; the z entry of ``patch_size`` is ignored).

    Examples
    --------
    >>> import numpy as np
    >>> task = ContextRestoration(n_swaps=4, patch_size=4)
    >>> params = task.sample((16, 16, 16), np.random.default_rng(0))
    >>> x = np.random.default_rng(1).random((16, 16, 16), dtype=np.float32)
    >>> bool((task.invert(task.apply(x, params), params) == x).all())
    True
    """

    name: ClassVar[str] = "context"
    PARAMETERS: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("n_swaps", int, 20, 0, None, "number T of patch-pair swaps"),
        ParamSpec("patch_size", float, 16.0, 1e-3, None, "patch size (voxels or mm, see unit)"),
        ParamSpec("unit", str, "voxel", None, None, "unit of patch_size", ("voxel", "mm")),
        ParamSpec("mode", str, "3d", None, None, "3D box patches or 2D in-slice patches", ("3d", "2d")),
    )

    def __init__(
        self,
        n_swaps: int = 20,
        patch_size: float | tuple[float, float, float] = 16,
        unit: str = "voxel",
        mode: str = "3d",
    ) -> None:
        if not isinstance(n_swaps, (int, np.integer)):
            raise ValueError(f"n_swaps must be an int >= 0, got {n_swaps!r}")
        check_range(n_swaps, "n_swaps", 0)
        check_choice(unit, "unit", ("voxel", "mm"))
        check_choice(mode, "mode", ("3d", "2d"))
        size = float_triple(patch_size, "patch_size")
        if min(size) <= 0:
            raise ValueError(f"patch_size must be > 0, got {patch_size!r}")
        if unit == "voxel" and not all(float(s).is_integer() for s in size):
            raise ValueError(f"patch_size in voxels must be whole numbers, got {patch_size!r}")
        self.n_swaps = int(n_swaps)
        self.patch_size = size
        self.unit = unit
        self.mode = mode

    def __repr__(self) -> str:
        return (
            f"ContextRestoration(n_swaps={self.n_swaps}, patch_size={self.patch_size}, unit={self.unit!r}, "
            f"mode={self.mode!r})"
        )

    def patch_voxels(self, spacing: Any = None) -> tuple[int, int, int]:
        """Patch size in voxels ``(z, y, x)`` for a scan of the given spacing (mm)."""
        _, sp = shape_and_spacing((1, 1, 1), spacing)
        if self.unit == "mm":
            vox = [max(1, round(s / d)) for s, d in zip(self.patch_size, sp, strict=True)]
        else:
            vox = [int(s) for s in self.patch_size]
        if self.mode == "2d":
            vox[0] = 1
        return (vox[0], vox[1], vox[2])

    # ------------------------------------------------------------------ sample
    def sample(
        self, shape: Any, rng: Any = None, spacing: Any = None, foreground: Any = None
    ) -> ContextParams:
        """Draw ``n_swaps`` pairs of disjoint patches for a volume of spatial shape ``shape``.

        ``shape`` may be a :class:`~napari_ssl.io.volume.Volume` (its spacing is then used); ``spacing``
        (mm, ``(z, y, x)``) matters only for ``unit="mm"``.

        ``foreground`` (optional) is a boolean mask of the spatial shape (e.g. from
        :func:`napari_ssl.io.foreground.foreground_mask`): patches are then drawn among those whose centre voxel
        and at least :data:`MIN_INSIDE` of their voxels lie in the mask, so the swaps happen on the body, not
        in the air. When the mask cannot hold them all, the grid fallback takes the slots most inside the mask
        first. ``None`` or an empty mask: anywhere (the draws are then those of a call without ``foreground``).
        """
        size, sp = shape_and_spacing(shape, spacing)
        rng = as_rng(rng)
        patch = self.patch_voxels(sp)
        for axis, s, p in zip("zyx", size, patch, strict=True):
            if p > s:
                raise ValueError(
                    f"patch_size {patch} voxels is larger than the volume {size} along {axis} ({p} > {s})"
                )
        slots = [s // p for s, p in zip(size, patch, strict=True)]
        if self.mode == "2d":
            capacity = slots[0] * ((slots[1] * slots[2]) // 2)
        else:
            capacity = (slots[0] * slots[1] * slots[2]) // 2
        if self.n_swaps > capacity:
            raise ValueError(
                f"n_swaps={self.n_swaps} needs {2 * self.n_swaps} non-overlapping patches of {patch} voxels "
                f"but a volume of shape {size} has room for {capacity} pairs; n_swaps must be <= {capacity}"
            )
        mask = check_foreground(foreground, size)
        corners = self._draw_random(size, patch, rng, mask)
        if corners is None:
            corners = self._draw_grid(size, patch, slots, rng, mask)
        pairs = tuple((tuple(a), tuple(b)) for a, b in corners.reshape(-1, 2, 3).tolist())
        return ContextParams(shape=size, patch=patch, pairs=pairs)  # type: ignore[arg-type]

    def _draw_random(
        self,
        size: tuple[int, int, int],
        patch: tuple[int, int, int],
        rng: np.random.Generator,
        mask: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """Uniform positions with rejection, in vectorised rounds; ``None`` when the volume is too crowded.

        Each round draws candidate pairs and keeps, in draw order, every pair whose two patches are
        disjoint and overlap no patch kept before; the rest are redrawn. With a ``mask``, candidates are
        drawn among the corners whose patch centre is in the mask and kept only when at least
        :data:`MIN_INSIDE` of the patch is.
        """
        n = self.n_swaps
        room = math.prod(size) if mask is None else int(np.count_nonzero(mask))
        if 2 * n * math.prod(patch) > _MAX_RANDOM_FILL * room:
            return None  # crowded: rejection would mostly fail
        high = np.asarray(size) - np.asarray(patch) + 1
        draw = (
            self._uniform_draw(high, rng)
            if mask is None
            else masked_pair_draw(high, patch, mask, rng, self.mode)
        )
        if draw is None:
            return None
        kept = np.empty((0, 2, 3), dtype=np.int32)
        for _ in range(_ROUNDS):
            missing = n - len(kept)
            if missing == 0:
                break
            m = min(_MAX_BATCH, 2 * missing + 8)
            cand = draw(m)
            flat = cand.reshape(-1, 3).T
            ok = ~_clash(cand[:, 0].T, cand[:, 1].T, patch, pairwise=False)
            if mask is not None:
                ok &= (
                    (inside_fraction(mask, cand.reshape(-1, 3), patch) >= MIN_INSIDE)
                    .reshape(m, 2)
                    .all(axis=1)
                )
            if len(kept):
                ok &= ~_clash(flat, kept.reshape(-1, 3).T, patch).reshape(m, -1).any(axis=1)
            clash = _clash(flat, flat, patch).reshape(m, 2, m, 2).any(axis=(1, 3))
            # greedy in draw order against the pairs taken so far; rows as Python-int bitsets
            bits = np.packbits(clash, axis=1, bitorder="little")
            taken, keep = 0, []
            for j in np.flatnonzero(ok).tolist():
                row = int.from_bytes(bits[j].tobytes(), "little")
                if row & taken:
                    continue
                taken |= 1 << j
                keep.append(j)
                if len(keep) == missing:
                    break
            kept = np.concatenate([kept, cand[keep]])
        if len(kept) < n:
            return None
        return kept.reshape(-1, 3).astype(np.int64)

    def _uniform_draw(self, high: np.ndarray, rng: np.random.Generator) -> Any:
        def draw(m: int) -> np.ndarray:
            cand = rng.integers(0, high, size=(m, 2, 3)).astype(np.int32)
            if self.mode == "2d":
                cand[:, 1, 0] = cand[:, 0, 0]  # both patches of a 2D pair in the same slice
            return cand

        return draw

    def _draw_grid(
        self,
        size: tuple[int, int, int],
        patch: tuple[int, int, int],
        slots: list[int],
        rng: np.random.Generator,
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        p = np.asarray(patch)
        shift = rng.integers(0, np.asarray(size) - np.asarray(slots) * p + 1)
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in slots], indexing="ij"), axis=-1)
        if self.mode == "2d":
            # pair slots within each slice, then pick n_swaps of those pairs
            per_slice = grid.reshape(slots[0], -1, 3)
            order = rng.permuted(np.tile(np.arange(per_slice.shape[1]), (slots[0], 1)), axis=1)
            n_pairs = per_slice.shape[1] // 2
            paired = np.take_along_axis(per_slice, order[..., None], axis=1)[:, : 2 * n_pairs]
            paired = paired.reshape(-1, 2, 3)
            picked = paired[rng.choice(len(paired), size=self.n_swaps, replace=False)].reshape(-1, 3)
        elif mask is not None:  # slots on the body first, in random order
            flat = grid.reshape(-1, 3)
            order = rng.permutation(len(flat))
            off = inside_fraction(mask, shift + flat[order] * p, patch) < MIN_INSIDE
            picked = flat[order[np.argsort(off, kind="stable")][: 2 * self.n_swaps]]
        else:
            flat = grid.reshape(-1, 3)
            picked = flat[rng.choice(len(flat), size=2 * self.n_swaps, replace=False)]
        return shift + picked * p

    # ------------------------------------------------------------------ apply / invert
    @staticmethod
    def _swap(out: Any, params: ContextParams, a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
        sa, sb = (..., *params.slices(a)), (..., *params.slices(b))
        tmp = copy_array(out[sa])
        out[sa] = out[sb]
        out[sb] = tmp

    def apply(self, x: Any, params: ContextParams) -> Any:
        """Swap the patch pairs of ``params`` in order, on a copy of ``x`` (numpy or torch, ``(..., z, y, x)``).

        Returns the same type, shape, dtype and device; ``x`` is not modified.
        """
        check_array(x, params.shape)
        out = copy_array(x)
        # the patches are disjoint (ContextParams checks it), so the sequential swaps of Algorithm 1 equal
        # reading every patch from the untouched input: no temporary copies
        for a, b in params.pairs:
            sa, sb = (..., *params.slices(a)), (..., *params.slices(b))
            out[sa] = x[sb]
            out[sb] = x[sa]
        return out

    def invert(self, y: Any, params: ContextParams) -> Any:
        """Undo :meth:`apply` exactly, swapping the pairs back in reverse order."""
        check_array(y, params.shape, name="y")
        out = copy_array(y)
        for a, b in reversed(params.pairs):
            self._swap(out, params, a, b)
        return out

    # ------------------------------------------------------------------ targets / overlay
    def targets(self, params: ContextParams, x: Any = None) -> dict[str, Any]:
        """What the network predicts: the clean image.

        Returns ``{"image": x, "mask": bool (z, y, x)}``: ``image`` is the uncorrupted input ``x`` as
        given (``None`` when not passed; it is not in the params), ``mask`` marks the swapped voxels
        (useful to weight the loss or to show what moved).
        """
        mask = np.zeros(params.shape, dtype=bool)
        for a, b in params.pairs:
            mask[params.slices(a)] = True
            mask[params.slices(b)] = True
        return {"image": x, "mask": mask}

    def overlay(self, params: ContextParams) -> dict[str, Any]:
        """Geometry for drawing, voxel coordinates ``(z, y, x)``.

        Keys: ``pairs`` (T, 2, 3) int corners of the two patches of each swap, in swap order;
        ``boxes`` (T, 2, 2, 3) int start and stop (exclusive) of each patch; ``patch``; ``shape``.
        Colour pair ``t`` alike to show which patches traded places.
        """
        corners = np.asarray(params.pairs, dtype=int).reshape(-1, 2, 3)
        boxes = np.stack([corners, corners + np.asarray(params.patch)], axis=2)
        return {
            "kind": "context",
            "shape": params.shape,
            "patch": params.patch,
            "pairs": corners,
            "boxes": boxes,
        }
