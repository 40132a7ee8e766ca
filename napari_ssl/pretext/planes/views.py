"""Where the imaging-planes pretext puts its planes in a volume: a stack of parallel slices, then oblique views,
anatomy-oriented (fixed in the volume up to a tilt) or at random angles; then each plane's in-plane rotation.

All vectors are in the volume's grid frame (mm along the array axes ``z, y, x``); :class:`ImagingPlanes` maps them
to world coordinates. Each function appends to ``views``: lists ``normals``, ``rows``, ``centres``, ``names`` and
``stack`` (0 for stack slices, -1 for oblique views).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_AXES = {"z": 0, "y": 1, "x": 2}
_MAX_TRIES = 1000
_EYE = np.eye(3)


def unit(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(float(v @ v))


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of two 3-vectors (numpy's general ``cross`` costs ~10x more for one pair)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def tilt(rng: np.random.Generator, degrees: float) -> np.ndarray:
    """A random rotation matrix: axis uniform on the sphere, angle uniform in [0, ``degrees``]."""
    k = unit(rng.normal(size=3))
    angle = math.radians(degrees) * float(rng.uniform())
    skew = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * skew + (1 - math.cos(angle)) * (skew @ skew)


def new_views() -> dict[str, list[Any]]:
    return {"normals": [], "rows": [], "centres": [], "names": [], "stack": []}


def _add(views: dict[str, list[Any]], normal: np.ndarray, row: np.ndarray, centre: np.ndarray, name: str,
         stack: int) -> None:
    for key, value in zip(("normals", "rows", "centres", "names", "stack"), (normal, row, centre, name, stack),
                          strict=True):
        views[key].append(value)


def stack_axis(task: Any, rng: np.random.Generator) -> int:
    axis = task.stack_axis if task.stack_axis != "random" else "zyx"[int(rng.integers(0, 3))]
    return _AXES[axis]


def add_stack(views: dict[str, list[Any]], n: int, axis: int, centre: np.ndarray, shift: np.ndarray,
              half: np.ndarray) -> None:
    """``n`` slices perpendicular to ``axis``, evenly spaced across the region of interest."""
    others = [k for k in range(3) if k != axis]
    for k, t in enumerate(np.linspace(-half[axis], half[axis], n)):
        c = centre + shift
        c[axis] = centre[axis] + t
        _add(views, _EYE[axis], _EYE[others[0]], c, f"stack[{k}]", 0)


def add_anatomical(views: dict[str, list[Any]], n: int, axis: int, through: np.ndarray, jitter: float,
                   rng: np.random.Generator) -> None:
    """``n`` views containing the stack's long axis (``axis``) through ``through``, turned about it by
    ``180 (k + 1/2) / n`` degrees (like the 2-, 3- and 4-chamber views about the heart's long axis), each tilted
    by up to ``jitter`` degrees; the long axis runs down the image."""
    others = [k for k in range(3) if k != axis]
    for k in range(n):
        phi = math.pi * (k + 0.5) / n
        turn = tilt(rng, jitter)
        normal = turn @ (math.cos(phi) * _EYE[others[0]] + math.sin(phi) * _EYE[others[1]])
        _add(views, normal, turn @ _EYE[axis], through.copy(), f"oblique {k}", -1)


def add_random(views: dict[str, list[Any]], n: int, stack_normal: np.ndarray | None, min_angle: float,
               centre: np.ndarray, half: np.ndarray, rng: np.random.Generator) -> None:
    """``n`` views: normal uniform on the sphere, at least ``min_angle`` degrees from the stack normal and from each
    other (so every pair intersects), random in-plane rotation, centre uniform in the region of interest."""
    min_sine = math.sin(math.radians(min_angle))
    for k in range(n):
        for _ in range(_MAX_TRIES):
            normal = unit(rng.normal(size=3))
            taken = views["normals"][-k:] if k else []
            if stack_normal is not None:
                taken = [stack_normal, *taken]
            if all(math.sqrt(float(v @ v)) >= min_sine for v in (cross(normal, m) for m in taken)):
                break
        else:  # pragma: no cover - min_angle <= 60 with <= 16 planes always fits
            raise ValueError(f"could not place {n} oblique planes min_angle={min_angle} apart")
        helper = _EYE[int(np.argmin(np.abs(normal)))]
        u0 = unit(cross(normal, helper))
        v0 = cross(normal, u0)
        theta = rng.uniform(0, 2 * np.pi)
        row = math.cos(theta) * u0 + math.sin(theta) * v0
        _add(views, normal, row, centre + rng.uniform(-1, 1, size=3) * half, f"oblique {k}", -1)


def rotate_in_plane(views: dict[str, list[Any]], degrees: float, rng: np.random.Generator) -> None:
    """Turn every plane in its own plane by a uniform angle in ``[-degrees, degrees]``."""
    for k, (normal, row) in enumerate(zip(views["normals"], views["rows"], strict=True)):
        theta = math.radians(degrees) * float(rng.uniform(-1, 1))
        views["rows"][k] = math.cos(theta) * row + math.sin(theta) * cross(normal, row)
