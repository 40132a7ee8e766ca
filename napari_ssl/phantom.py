"""A procedural, deterministic 3D head phantom with tissue classes and a tumor-like lesion.

Generated in code (no download), so the sample data, the demo and the tests work offline. The geometry is
anisotropic on purpose (thicker slices than pixels, as in most clinical MR) so geometry bugs show.
"""

from __future__ import annotations

import numpy as np

from napari_ssl.io.volume import Volume

__all__ = ["PHANTOM_CLASSES", "make_phantom"]

#: label id -> (name, mean intensity, RGBA colour)
PHANTOM_CLASSES: dict[int, tuple[str, float, tuple[float, float, float, float]]] = {
    1: ("scalp", 0.55, (0.85, 0.65, 0.50, 1.0)),
    2: ("skull", 0.15, (0.95, 0.95, 0.85, 1.0)),
    3: ("csf", 0.30, (0.30, 0.55, 0.95, 1.0)),
    4: ("grey_matter", 0.62, (0.55, 0.55, 0.55, 1.0)),
    5: ("white_matter", 0.82, (0.95, 0.95, 0.95, 1.0)),
    6: ("ventricles", 0.28, (0.20, 0.35, 0.85, 1.0)),
    7: ("lesion", 1.00, (0.95, 0.20, 0.15, 1.0)),
}


def _ellipsoid(grid: tuple[np.ndarray, ...], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0  # type: ignore[return-value]


def make_phantom(
    shape: tuple[int, int, int] = (64, 128, 128),
    spacing: tuple[float, float, float] = (2.5, 1.5, 1.5),
    seed: int = 0,
    noise: float = 0.03,
) -> tuple[Volume, Volume]:
    """Build the phantom.

    Parameters
    ----------
    shape : tuple of int
        Array shape (z, y, x); each at least 16.
    spacing : tuple of float
        Voxel size in mm (z, y, x).
    seed : int
        Seed of the noise, the bias field and the lesion's shape; the same seed gives identical arrays.
    noise : float
        Standard deviation of the Gaussian noise, relative to white matter intensity.

    Returns
    -------
    image, labels : Volume
        ``image`` is float32 in [0, ~1.1]; ``labels`` is uint8 with ids of :data:`PHANTOM_CLASSES`.
        Both share one geometry, centred on the world origin.
    """
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be three sizes of at least 16, got {shape}")
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, dtype=float)
    # physical coordinates (mm) centred on the volume centre
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, sp, strict=True)]
    grid = np.meshgrid(*axes, indexing="ij", sparse=True)
    extent = np.array([(n - 1) * s / 2 for n, s in zip(shape, sp, strict=True)])
    head = extent * np.array([0.88, 0.9, 0.78])

    labels = np.zeros(shape, dtype=np.uint8)
    labels[_ellipsoid(grid, (0, 0, 0), tuple(head))] = 1
    labels[_ellipsoid(grid, (0, 0, 0), tuple(head * 0.93))] = 2
    labels[_ellipsoid(grid, (0, 0, 0), tuple(head * 0.85))] = 3
    labels[_ellipsoid(grid, (0, 0, 0), tuple(head * 0.80))] = 4
    labels[_ellipsoid(grid, (0, 0, 0), tuple(head * 0.62))] = 5
    # two ventricles, mirrored
    for side in (-1, 1):
        centre = (head[0] * 0.1, -head[1] * 0.05, side * head[2] * 0.16)
        labels[_ellipsoid(grid, centre, tuple(head * np.array([0.28, 0.30, 0.08])))] = 6
    # a lobulated lesion: union of a few random blobs in one hemisphere
    lesion_centre = np.array([head[0] * 0.25, head[1] * 0.35, head[2] * 0.38]) * rng.uniform(0.9, 1.1, 3)
    base = float(min(head) * 0.2)
    for _ in range(4):
        offset = rng.normal(0, base * 0.45, 3)
        radii = base * rng.uniform(0.6, 1.0, 3)
        labels[_ellipsoid(grid, tuple(lesion_centre + offset), tuple(radii))] = 7

    means = np.zeros(256, dtype=np.float32)
    for idx, (_, mean, _) in PHANTOM_CLASSES.items():
        means[idx] = mean
    image = means[labels]
    # smooth multiplicative bias field, then noise
    bias = 1.0 + 0.08 * sum(np.cos(g / (e + 1e-6) * np.pi * rng.uniform(0.3, 0.7)) for g, e in zip(grid, extent, strict=True))
    image = image * (bias / 1.24)
    image = image + rng.normal(0.0, noise * PHANTOM_CLASSES[5][1], shape)
    image = np.clip(image, 0, None).astype(np.float32)

    origin = tuple(-(n - 1) * s / 2 for n, s in zip(shape, sp, strict=True))
    geometry = {"spacing": tuple(sp), "origin": origin}
    image_vol = Volume(array=image, name="phantom", **geometry, metadata={"modality": "MR (phantom)"})
    label_vol = Volume(
        array=labels,
        name="phantom labels",
        **geometry,
        metadata={"classes": {str(k): v[0] for k, v in PHANTOM_CLASSES.items()}},
    )
    return image_vol, label_vol
