"""Layers compared the way a plugin dock must compare them.

napari hands a dock opened from the Plugins menu a ``PublicOnlyProxy`` of the viewer, and every attribute or item
access through it returns a *new* proxy object: ``viewer.layers[0] is viewer.layers[0]`` is False there, while it is
True for the real viewer a hand-built dock gets. A proxy compares equal to the object it wraps (the proxy forwards
``==``) and napari layers compare by identity, so equality is the one test that holds on both paths. Every layer
comparison in the docks goes through these functions; none unwraps the proxy. ``type(layer)`` is the proxy's
class, so a layer's kind is read from ``layer.__class__`` (:func:`kind`); ``isinstance`` sees through the proxy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["holds", "kind", "same_layer"]


def kind(layer: Any) -> str:
    """The layer's class name (``"Image"``, ``"Labels"``...): ``type()`` of a proxy is the proxy's own class, while
    ``__class__`` is forwarded to the layer's."""
    return str(layer.__class__.__name__)


def same_layer(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same napari layer, either of them possibly seen through a proxy."""
    if a is None or b is None:
        return a is b
    return bool(a == b)


def holds(layers: Iterable[Any], layer: Any) -> bool:
    """Whether ``layer`` (possibly a proxy) is one of ``layers`` (a viewer's layer list, proxied or not)."""
    return layer is not None and any(same_layer(layer, other) for other in layers)
