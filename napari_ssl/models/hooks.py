"""The base of a pretext's network hooks (the protocol is in :mod:`napari_ssl.pretext.registry`): each unit's
``network`` module subclasses :class:`Hooks` to add its heads to the :class:`~napari_ssl.models.pretrain.PretrainModel`,
run its forward pass and give its losses and metrics (e.g. :mod:`napari_ssl.pretext.rubik.network`).

A pretext owns its head fields: ``ModelSpec.heads[name]`` holds them, with the defaults of :attr:`Hooks.FIELDS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

__all__ = ["Hooks"]


class Hooks:
    """Defaults of the hook protocol: no head fields, no checks, no heads.

    Attributes
    ----------
    FIELDS : dict
        This pretext's head fields in ``ModelSpec.heads[name]`` and their defaults (a new network's values unless
        :meth:`model_fields` gives others). Values are JSON-ready; lists are read back as tuples.
    LEGACY : dict
        The values of fields a checkpoint written before them lacks: the heads of their time.
    CHOICES : tuple of str
        The fields that choose a head (their defaults changed over versions): a resumed run keeps its checkpoint's.
    FLAT : dict
        ``{key: field}``: where ``meta.json`` written before ``ModelSpec.heads`` kept these fields (one flat dict).
    """

    FIELDS: ClassVar[Mapping[str, Any]] = {}
    LEGACY: ClassVar[Mapping[str, Any]] = {}
    CHOICES: ClassVar[tuple[str, ...]] = ()
    FLAT: ClassVar[Mapping[str, str]] = {}

    def __init__(self, name: str) -> None:
        self.name = name

    def model_fields(self, task: Any, probe: Mapping[str, Any]) -> dict[str, Any]:
        """Head fields this pretext reads from its task object and one sample of the dataset."""
        return {}

    def check(self, spec: Any) -> None:
        """Raise ``ValueError`` for head fields (``spec.heads[self.name]``) this pretext cannot use."""
        return None

    def out_channels(self, spec: Any) -> int | None:
        """Channels of its backbone's output convolution; ``None``: the image channels."""
        return None

    def build(self, model: nn.Module) -> None:
        """Add its heads to ``model``."""
        return None
