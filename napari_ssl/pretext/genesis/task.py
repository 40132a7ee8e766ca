"""The Models Genesis task: corrupt a 3D patch (non-linear intensity curve, local pixel shuffling, in- or
out-painting); the whole U-Net restores the original.

Zhou, Sodha, Pang, Gotway, Liang. "Models Genesis." Medical Image Analysis 67 (2021) 101840,
doi:10.1016/j.media.2020.101840 (MICCAI 2019 first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from napari_ssl.pretext._base import (
    ParamSpec,
    as_rng,
    check_array,
    check_foreground,
    check_range,
    is_torch,
    shape_and_spacing,
)

__all__ = ["INNER", "OUTER", "GenesisParams", "ModelsGenesis", "bezier_map"]

#: in-painting boxes span 1/6 .. 1/3 of each axis, out-painting (kept) boxes 3/7 .. 4/7 (the authors' code)
INNER = (1 / 6, 1 / 3)
OUTER = (3 / 7, 4 / 7)
_CURVE_POINTS = 1000
Box = tuple[int, int, int, int, int, int]


def bezier_map(points: tuple[float, float, float, float], n: int = _CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The monotone intensity map of a cubic Bezier curve through (0, 0), ``(x1, y1)``, ``(x2, y2)``, (1, 1).

    Returns ``(xs, ys)``, both sorted (as the authors' code sorts them), so ``np.interp(u, xs, ys)`` maps [0, 1]
    onto [0, 1], non-decreasing, with 0 -> 0 and 1 -> 1; ``np.interp(v, ys, xs)`` inverts it.
    """
    x1, y1, x2, y2 = points
    t = np.linspace(0.0, 1.0, n)
    b1, b2, b3 = 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
    return np.sort(b1 * x1 + b2 * x2 + b3), np.sort(b1 * y1 + b2 * y2 + b3)


@dataclass(frozen=True)
class GenesisParams:
    """Every random choice of one :class:`ModelsGenesis` draw (applied in this order).

    Attributes
    ----------
    shape : (int, int, int)
        Spatial shape the params were sampled for.
    block : (int, int, int) or None
        Local pixel shuffling: block size; ``None`` for no shuffling.
    blocks : tuple of (int, int, int)
        Corners of the shuffled blocks (disjoint: cells of a grid of ``block``-sized cells).
    curve : (x1, y1, x2, y2) or None
        Control points of the intensity curve (:func:`bezier_map`); ``None`` for no intensity transform.
    curve_flip : bool
        The curve is applied decreasing (``1 - curve``: bright becomes dark).
    paint : {"none", "in", "out"}
        In-painting (``boxes`` filled with noise) or out-painting (noise everywhere but ``boxes``); never both.
    boxes : tuple of (z0, y0, x0, z1, y1, x1)
        The painting boxes, start inclusive and stop exclusive.
    noise_seed : int
        Seed of the shuffling permutations and of the painting noise.
    """

    shape: tuple[int, int, int]
    block: tuple[int, int, int] | None = None
    blocks: tuple[tuple[int, int, int], ...] = ()
    curve: tuple[float, float, float, float] | None = None
    curve_flip: bool = False
    paint: str = "none"
    boxes: tuple[Box, ...] = ()
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if self.paint not in ("none", "in", "out"):
            raise ValueError(f"paint must be 'none', 'in' or 'out', got {self.paint!r}")
        if (self.paint == "none") != (not self.boxes):
            raise ValueError(f"paint {self.paint!r} with {len(self.boxes)} boxes: painting needs boxes, none none")
        for box in self.boxes:
            if any(not 0 <= box[k] < box[k + 3] <= self.shape[k] for k in range(3)):
                raise ValueError(f"box {box} is empty or outside the shape {self.shape}")
        if self.block is None and self.blocks:
            raise ValueError("shuffled blocks given without a block size")
        for corner in self.blocks:
            if self.block is not None and any(
                not 0 <= corner[k] <= self.shape[k] - self.block[k] for k in range(3)
            ):
                raise ValueError(f"block at {corner} of size {self.block} is outside the shape {self.shape}")
        if self.curve is not None and any(not 0.0 <= c <= 1.0 for c in self.curve):
            raise ValueError(f"curve control points must lie in [0, 1], got {self.curve}")

    @property
    def invertible(self) -> bool:
        """Only the intensity curve can be undone (shuffling and painting destroy voxels)."""
        return self.block is None and self.paint == "none"


class ModelsGenesis:
    """Models Genesis pretext (Zhou et al., Medical Image Analysis 2021).

    Each transform is drawn with its own probability, in the authors' order: local pixel shuffling (voxels permuted
    inside small blocks), a non-linear intensity transform (a monotone cubic Bezier curve, increasing or, half of
    the time, decreasing), then either in-painting (up to ``n_boxes`` boxes of 1/6-1/3 of each axis filled with
    uniform noise) or out-painting (noise everywhere except up to ``n_boxes`` boxes of 3/7-4/7 of each axis).
    The network restores the original (L2 loss), so :meth:`targets` gives the clean image.

    Intensities are mapped to [0, 1] by the input's own minimum and maximum before the transforms and back
    after, so the corrupted patch keeps the input's units (the authors' code needs inputs in [0, 1]). The
    shuffled blocks are the cells of a randomly shifted grid of one random block size per draw (each edge
    ``2 .. max_block`` of the axis), a random ``shuffle_fraction`` of them shuffled: disjoint blocks, vectorised
    (the authors' code loops over 10,000 overlapping windows). With a foreground mask the painting boxes are
    centred on the body.

    Parameters
    ----------
    p_shuffle, p_intensity, p_paint : float, default 0.5, 0.9, 0.9
        Probabilities of local shuffling, of the intensity curve and of painting.
    p_inpaint : float, default 0.2
        Painting is in-painting with this probability, else out-painting.
    n_boxes : int, default 5
        At most this many painting boxes (at least one).
    max_block : float, default 0.1
        Largest shuffling block edge, as a fraction of the axis (at least 2 voxels).
    shuffle_fraction : float, default 0.5
        Fraction of the grid's blocks shuffled.

    Examples
    --------
    >>> import numpy as np
    >>> task = ModelsGenesis(p_shuffle=0, p_paint=0, p_intensity=1)
    >>> params = task.sample((16, 16, 16), 0)
    >>> x = np.random.default_rng(1).random((16, 16, 16))
    >>> bool(np.allclose(task.invert(task.apply(x, params), params), x, atol=1e-3))
    True
    """

    name: ClassVar[str] = "genesis"
    PARAMETERS: ClassVar[tuple[ParamSpec, ...]] = (
        ParamSpec("p_shuffle", float, 0.5, 0.0, 1.0, "probability of local pixel shuffling"),
        ParamSpec("p_intensity", float, 0.9, 0.0, 1.0, "probability of the non-linear intensity curve"),
        ParamSpec("p_paint", float, 0.9, 0.0, 1.0, "probability of in- or out-painting"),
        ParamSpec("p_inpaint", float, 0.2, 0.0, 1.0, "share of painting that is in-painting (else out)"),
        ParamSpec("n_boxes", int, 5, 1, 50, "at most this many painting boxes"),
        ParamSpec("max_block", float, 0.1, 0.0, 0.5, "largest shuffling block edge, fraction of the axis"),
        ParamSpec("shuffle_fraction", float, 0.5, 0.0, 1.0, "fraction of the blocks shuffled"),
    )

    def __init__(self, p_shuffle: float = 0.5, p_intensity: float = 0.9, p_paint: float = 0.9,
                 p_inpaint: float = 0.2, n_boxes: int = 5, max_block: float = 0.1,
                 shuffle_fraction: float = 0.5) -> None:
        for spec in self.PARAMETERS:
            value = locals()[spec.name]
            if spec.type is int and (not isinstance(value, (int, np.integer)) or isinstance(value, bool)):
                raise ValueError(f"{spec.name} must be an int, got {value!r}")
            if not np.isfinite(float(value)):
                raise ValueError(f"{spec.name} must be finite, got {value!r}")
            check_range(value, spec.name, spec.min, spec.max)
        self.p_shuffle, self.p_intensity, self.p_paint = float(p_shuffle), float(p_intensity), float(p_paint)
        self.p_inpaint, self.n_boxes = float(p_inpaint), int(n_boxes)
        self.max_block, self.shuffle_fraction = float(max_block), float(shuffle_fraction)

    def __repr__(self) -> str:
        args = ", ".join(f"{s.name}={getattr(self, s.name)!r}" for s in self.PARAMETERS)
        return f"ModelsGenesis({args})"

    # ------------------------------------------------------------------ sample
    def sample(self, shape: Any, rng: Any = None, spacing: Any = None, foreground: Any = None) -> GenesisParams:
        """Draw every choice for a volume of spatial shape ``shape`` (a :class:`~napari_ssl.io.volume.Volume` too).

        ``foreground`` (a bool mask of ``shape``) centres the painting boxes on it; ``spacing`` is accepted for
        the common signature and unused (the boxes are fractions of the patch).
        """
        dims, _ = shape_and_spacing(shape, spacing)
        rng = as_rng(rng)
        mask = check_foreground(foreground, dims)
        block: tuple[int, int, int] | None = None
        blocks: tuple[tuple[int, int, int], ...] = ()
        if rng.random() < self.p_shuffle and min(dims) >= 2:
            top = [max(2, min(d, round(d * self.max_block))) for d in dims]
            block = tuple(int(rng.integers(2, t + 1)) for t in top)  # type: ignore[assignment]
            assert block is not None
            offset = [int(rng.integers(0, b)) if d >= 2 * b else 0 for d, b in zip(dims, block, strict=True)]
            axes = [np.arange(o, d - b + 1, b) for o, d, b in zip(offset, dims, block, strict=True)]
            cells = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
            keep = rng.random(len(cells)) < self.shuffle_fraction
            blocks = tuple(tuple(int(v) for v in c) for c in cells[keep])  # type: ignore[misc]
        curve, flip = None, False
        if rng.random() < self.p_intensity:
            curve = tuple(float(v) for v in rng.random(4))
            flip = bool(rng.random() < 0.5)
        paint, boxes = "none", ()
        if rng.random() < self.p_paint:
            paint = "in" if rng.random() < self.p_inpaint else "out"
            lo, hi = INNER if paint == "in" else OUTER
            centres = np.argwhere(mask) if mask is not None else None
            boxes = tuple(self._box(dims, lo, hi, rng, centres)
                          for _ in range(int(rng.integers(1, self.n_boxes + 1))))
        return GenesisParams(shape=dims, block=block, blocks=blocks, curve=curve, curve_flip=flip,  # type: ignore[arg-type]
                             paint=paint, boxes=boxes, noise_seed=int(rng.integers(0, 2**31 - 1)))

    @staticmethod
    def _box(dims: tuple[int, int, int], lo: float, hi: float, rng: np.random.Generator,
             centres: np.ndarray | None) -> Box:
        size = [int(np.clip(round(rng.uniform(lo, hi) * d), 1, d)) for d in dims]
        if centres is not None:
            centre = centres[int(rng.integers(len(centres)))]
            start = [int(np.clip(c - s // 2, 0, d - s)) for c, s, d in zip(centre, size, dims, strict=True)]
        else:
            start = [int(rng.integers(0, d - s + 1)) for s, d in zip(size, dims, strict=True)]
        return (start[0], start[1], start[2], start[0] + size[0], start[1] + size[1], start[2] + size[2])

    # ------------------------------------------------------------------ apply / invert
    @staticmethod
    def _curve(params: GenesisParams) -> tuple[np.ndarray, np.ndarray]:
        assert params.curve is not None
        return bezier_map(params.curve)

    def apply(self, x: Any, params: GenesisParams) -> Any:
        """The corrupted copy of ``x`` (numpy or torch, ``(..., z, y, x)``; same type, dtype, device).

        Every leading channel gets the same corruption; ``x`` is not modified.
        """
        check_array(x, params.shape)
        arr = x.detach().cpu().numpy() if is_torch(x) else np.asarray(x)
        lo, hi = float(arr.min()), float(arr.max())
        # [0, 1], the transforms' working range, in float64 so that untouched voxels come back bit for bit
        u = (arr.astype(np.float64) - lo) * (1.0 / (hi - lo) if hi > lo else 0.0)
        if params.block is not None and params.blocks:
            u = _shuffle(u, params)
        if params.curve is not None:
            u = _lookup(u, self._curve(params), params.curve_flip)
        if params.paint != "none":
            noise_rng = np.random.default_rng([params.noise_seed, 1])
            if params.paint == "in":  # noise in the boxes only
                for b in params.boxes:
                    box = (..., slice(b[0], b[3]), slice(b[1], b[4]), slice(b[2], b[5]))
                    u[box] = noise_rng.random((b[3] - b[0], b[4] - b[1], b[5] - b[2]))
            else:  # noise everywhere but the boxes
                keep = np.zeros(params.shape, dtype=bool)
                for b in params.boxes:
                    keep[b[0]:b[3], b[1]:b[4], b[2]:b[5]] = True
                u = np.where(keep, u, noise_rng.random(params.shape))
        out = u * (hi - lo) + lo
        out = (np.rint(out) if arr.dtype.kind in "iub" else out).astype(arr.dtype, copy=False)
        if is_torch(x):
            import torch

            return torch.from_numpy(np.ascontiguousarray(out)).to(device=x.device, dtype=x.dtype)
        return out

    def invert(self, y: Any, params: GenesisParams) -> Any:
        """Undo the intensity curve of :meth:`apply` (exact up to the curve's flat stretches).

        Raises
        ------
        ValueError
            When the params also shuffle or paint: those transforms destroy voxels and cannot be undone.
        """
        if not params.invertible:
            raise ValueError(
                "Models Genesis can only invert its intensity curve; these params also "
                f"{'shuffle blocks' if params.block is not None else ''}"
                f"{' and ' if params.block is not None and params.paint != 'none' else ''}"
                f"{params.paint + '-paint' if params.paint != 'none' else ''}, which destroy voxels"
            )
        check_array(y, params.shape, name="y")
        if params.curve is None:
            return y.clone() if is_torch(y) else np.array(y, copy=True)
        arr = y.detach().cpu().numpy() if is_torch(y) else np.asarray(y)
        lo, hi = float(arr.min()), float(arr.max())  # the curve keeps both ends: same range as the input
        v = (arr.astype(np.float64) - lo) / (hi - lo) if hi > lo else np.zeros(arr.shape)
        xs, ys = self._curve(params)
        u = np.interp(1.0 - v if params.curve_flip else v, ys, xs)
        out = (lo + (hi - lo) * u).astype(arr.dtype, copy=False)
        if is_torch(y):
            import torch

            return torch.from_numpy(np.ascontiguousarray(out)).to(device=y.device, dtype=y.dtype)
        return out

    # ------------------------------------------------------------------ targets / overlay
    def targets(self, params: GenesisParams, x: Any = None) -> dict[str, Any]:
        """What the network predicts: the clean image ``x`` as given (``None`` when not passed), and ``mask``,
        the voxels replaced by noise or shuffled (bool ``(z, y, x)``)."""
        mask = np.zeros(params.shape, dtype=bool)
        if params.block is not None:
            for c in params.blocks:
                mask[tuple(slice(a, a + b) for a, b in zip(c, params.block, strict=True))] = True
        painted = np.zeros(params.shape, dtype=bool)
        for b in params.boxes:
            painted[b[0]:b[3], b[1]:b[4], b[2]:b[5]] = True
        if params.paint != "none":
            mask |= painted if params.paint == "in" else ~painted
        return {"image": x, "mask": mask}

    def overlay(self, params: GenesisParams) -> dict[str, Any]:
        """Geometry for drawing, voxel coordinates: ``boxes`` (n, 2, 3) start / stop (exclusive) of the painting
        boxes (``paint`` says whether they were filled with noise or kept), ``blocks`` (m, 2, 3) the shuffled
        blocks, ``curve`` (2, 50) samples of the intensity map (or ``None``)."""
        boxes = np.asarray(params.boxes, dtype=int).reshape(-1, 2, 3)
        corners = np.asarray(params.blocks, dtype=int).reshape(-1, 3)
        block = np.asarray(params.block or (0, 0, 0), dtype=int)
        curve = None
        if params.curve is not None:
            xs, ys = self._curve(params)
            u = np.linspace(0, 1, 50)
            v = np.interp(u, xs, ys)
            curve = np.stack([u, 1 - v if params.curve_flip else v])
        return {"kind": "genesis", "shape": params.shape, "paint": params.paint, "boxes": boxes,
                "blocks": np.stack([corners, corners + block], axis=1), "curve": curve}

    def describe(self, params: GenesisParams) -> str:
        """One line on what this draw does (the explorer's summary)."""
        parts = []
        if params.block is not None:
            parts.append(f"{len(params.blocks)} blocks of {'x'.join(map(str, params.block))} voxels shuffled")
        if params.curve is not None:
            parts.append(f"intensity curve ({'decreasing' if params.curve_flip else 'increasing'})")
        if params.paint == "in":
            parts.append(f"in-painting: noise in the {len(params.boxes)} outlined boxes")
        elif params.paint == "out":
            parts.append(f"out-painting: noise outside the {len(params.boxes)} outlined boxes")
        return "; ".join(parts) or "no corruption in this draw (the network sees the original)"


def _lookup(u: np.ndarray, curve: tuple[np.ndarray, np.ndarray], flip: bool, n: int = 4096) -> np.ndarray:
    """``np.interp(u, *curve)`` (``1 -`` it when ``flip``) for ``u`` in [0, 1], through a uniform table of ``n``
    entries: arithmetic instead of a binary search per voxel."""
    table = np.interp(np.linspace(0.0, 1.0, n), *curve)
    if flip:
        table = 1.0 - table
    t = np.clip(u, 0.0, 1.0) * (n - 1)
    i = np.minimum(t.astype(np.int32), n - 2)
    t -= i
    return table[i] + t * (table[i + 1] - table[i])  # type: ignore[no-any-return]


def _shuffle(u: np.ndarray, params: GenesisParams) -> np.ndarray:
    """Permute the voxels inside each block of ``params.blocks`` (one permutation per block, the same in every
    leading channel). The blocks are cells of one grid: the grid's box is cut into cells by reshaping (no index
    arrays), the chosen cells' voxels are permuted, and the box is written back into a copy of ``u``."""
    assert params.block is not None
    b = np.asarray(params.block)
    corners = np.asarray(params.blocks, dtype=np.int64).reshape(-1, 3)
    lo, hi = corners.min(0), corners.max(0) + b
    n = (hi - lo) // b
    k = u.ndim - 3
    lead = u.shape[:k]
    box = (..., *(slice(int(a), int(c)) for a, c in zip(lo, hi, strict=True)))
    cells = u[box].reshape(*lead, n[0], b[0], n[1], b[1], n[2], b[2])
    order = [*range(k), k, k + 2, k + 4, k + 1, k + 3, k + 5]
    cells = cells.transpose(order).reshape(*lead, int(n.prod()), int(b.prod()))
    rows = np.ravel_multi_index(tuple(((corners - lo) // b).T), tuple(int(v) for v in n))
    perm = np.random.default_rng([params.noise_seed, 0]).random((len(rows), int(b.prod()))).argsort(axis=1)
    picked = cells[..., rows, :]
    cells[..., rows, :] = np.take_along_axis(picked, np.broadcast_to(perm, picked.shape), axis=-1)
    back = cells.reshape(*lead, n[0], n[1], n[2], b[0], b[1], b[2]).transpose(
        [*range(k), k, k + 3, k + 1, k + 4, k + 2, k + 5])
    out = u.copy()
    out[box] = back.reshape(*lead, *(n * b))
    return out
