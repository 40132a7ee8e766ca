"""Every napari name this package uses that is not napari's public API, in one place (issue 25).

napari is not pinned, so each use here is a bet on napari's internals: ``tests/_napari/test_napari_private.py`` fails
loudly, naming the use, when a napari release changes it, and ``tests/test_package.py`` fails when a private napari
name appears anywhere else in the package. Each entry says why no public way exists and where napari discusses one.
Nothing here is ever reached through the ``PublicOnlyProxy`` a plugin dock is handed: only on layers this package
built itself, before they join a viewer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["layer_overlays"]


def layer_overlays(layer: Any) -> Mapping[str, Any]:
    """A layer's overlays by name (a ``Labels`` layer's ``"polygon"`` and ``"brush_stroke"``, its editing tools).

    napari keeps every layer overlay in the private evented dict ``Layer._overlays`` and exposes only some as
    properties (``bounding_box``, ``selection_box``...); the Labels editing overlays have none. The Segment dock hides
    them on a new masks layer in the worker thread and shows them one event-loop turn at a time
    (:mod:`~napari_ssl._napari.segment.masks`), so building their visuals never stalls the window. Public overlay access
    is discussed upstream in napari#3755 and was planned with napari#4894 ("eventually expose it to plugins").
    A napari without the dict gives an empty mapping: the overlays are then shown as napari shows them.
    """
    overlays = getattr(layer, "_overlays", None)
    return overlays if isinstance(overlays, Mapping) else {}
