"""Pretext tasks for self-supervised pretraining: Rubik's cube, context restoration, imaging planes.

Each task follows one contract (see ``docs``/DESIGN.md): ``sample(shape, rng) -> params`` (a frozen
dataclass of every random choice), ``apply(x, params)`` (numpy or torch, last axes ``(z, y, x)``, input never
modified), ``targets(params)``, ``overlay(params)`` (plain geometry for drawing) and, where the corruption
is invertible, ``invert(y, params)``. ``PARAMETERS`` on each class lists its constructor parameters as
:class:`ParamSpec` entries, so GUIs build their widgets from one definition.

Importing this package does not import torch; only :meth:`ImagingPlanes.apply` and torch inputs do.
"""

from __future__ import annotations

from typing import Any

from ._base import ParamSpec
from ._plane_geometry import PlanesParams
from .context import ContextParams, ContextRestoration
from .planes import ImagingPlanes
from .rubik import RubikCube, RubikParams, permutation_set

__all__ = [
    "PRETEXTS",
    "ContextParams",
    "ContextRestoration",
    "ImagingPlanes",
    "ParamSpec",
    "PlanesParams",
    "RubikCube",
    "RubikParams",
    "get_pretext",
    "permutation_set",
]

PRETEXTS: dict[str, type] = {"rubik": RubikCube, "context": ContextRestoration, "planes": ImagingPlanes}


def get_pretext(name: str, **kwargs: Any) -> RubikCube | ContextRestoration | ImagingPlanes:
    """A pretext task by name: ``"rubik"``, ``"context"`` or ``"planes"``, built with ``kwargs``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones) or an invalid parameter.
    """
    key = str(name).lower()
    if key not in PRETEXTS:
        raise ValueError(f"unknown pretext {name!r}; choose one of {sorted(PRETEXTS)}")
    return PRETEXTS[key](**kwargs)  # type: ignore[no-any-return]
