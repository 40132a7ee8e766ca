"""What the Pretrain dock's child process runs: build the engine's config there, then ``engine.pretrain``.

Qt-free on purpose (the child process imports this module, not napari). Building
:class:`~napari_ssl.engine.PretrainConfig` validates the backbone against the model registry, which imports
MONAI: done in the child, the viewer's process never imports MONAI and its event loop never waits for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TARGET", "PretrainRequest", "pretrain_from_kwargs"]

#: the runner target the dock uses
TARGET = "napari_ssl._napari.pretrain_child:pretrain_from_kwargs"


@dataclass(frozen=True)
class PretrainRequest:
    """The keyword arguments of ``PretrainConfig``, plus ``out`` (the runner names it in ``Stopped``)."""

    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def out(self) -> str | None:
        return self.kwargs.get("out")


def pretrain_from_kwargs(request: PretrainRequest | Mapping[str, Any]) -> Iterator[Any]:
    """``engine.pretrain(PretrainConfig(**kwargs))``; a refused config raises before any training."""
    from napari_ssl.engine import PretrainConfig, pretrain

    kwargs = request.kwargs if isinstance(request, PretrainRequest) else request
    yield from pretrain(PretrainConfig(**dict(kwargs)))
