"""Pretext tasks for self-supervised pretraining: Rubik's cube, context restoration, imaging planes, Models Genesis.

Every pretext is one unit here, a module or subpackage with a ``SPEC`` (:class:`~.registry.PretextSpec`: task class,
training sample, network hooks, metrics, parameters, explorer views, GUI label and colour), which
:mod:`napari_ssl.pretext.registry` finds on its own: the built-ins :mod:`.rubik`, :mod:`.context`, :mod:`.planes` and
:mod:`.genesis`, each with its ``task``, ``sample``, ``network``, ``answer`` and ``explore`` modules. The engine, the
data pipeline, the network, ``score``, the CLI and the docks find them in the registry.

Each task follows one contract (see ``docs``/DESIGN.md): ``sample(shape, rng) -> params`` (a frozen
dataclass of every random choice), ``apply(x, params)`` (numpy or torch, last axes ``(z, y, x)``, input never
modified), ``targets(params)``, ``overlay(params)`` (plain geometry for drawing) and, where the corruption
is invertible, ``invert(y, params)``. ``PARAMETERS`` on each class lists its constructor parameters as
:class:`ParamSpec` entries, so GUIs build their widgets from one definition.

Importing this package does not import torch; only :meth:`ImagingPlanes.apply` and torch inputs do.
"""

from __future__ import annotations

from typing import Any

from . import registry
from ._base import ParamSpec
from .context import ContextParams, ContextRestoration
from .genesis import GenesisParams, ModelsGenesis
from .planes import ImagingPlanes, PlanesParams
from .registry import PretextSpec
from .rubik import RubikCube, RubikParams, permutation_set

__all__ = [
    "PRETEXTS",
    "ContextParams",
    "ContextRestoration",
    "GenesisParams",
    "ImagingPlanes",
    "ModelsGenesis",
    "ParamSpec",
    "PlanesParams",
    "PretextSpec",
    "RubikCube",
    "RubikParams",
    "get_pretext",
    "permutation_set",
    "registry",
]


def __getattr__(name: str) -> Any:
    if name == "PRETEXTS":  # {name: task class} of every registered pretext, as registered now
        return {spec.name: spec.task_class() for spec in registry.specs()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_pretext(name: str, **kwargs: Any) -> Any:
    """A registered pretext task by name (``"rubik"``, ``"context"``, ``"planes"``, ``"genesis"``, ...), built
    with ``kwargs``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones) or an invalid parameter.
    """
    return registry.get(name).task_class()(**kwargs)
