"""A viewer hook, independent of the reader: show oblique imaging planes in 3D, where they have their pose.

napari's 2D view drops a layer's out-of-plane rotation, and a plane perpendicular to the screen cannot be drawn
at all, so a single-slice view in an oblique plane (a cardiac 2-chamber view, say) is only true in 3D. The
reader returns layer data and leaves the viewer alone; this hook, installed on the open viewers by the plugin
(:func:`activate`, npe2's ``on_activate``, and again each time napari-ssl reads), watches layers as they are inserted and switches
the view to 3D, with a notification, when napari-ssl placed an oblique plane.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari

__all__ = ["activate", "install", "install_current", "is_oblique_plane"]

_HOOKED: weakref.WeakSet[Any] = weakref.WeakSet()


def is_oblique_plane(layer: Any) -> bool:
    """A napari-ssl layer one slice thick whose plane is not one of the viewer's axis planes."""
    meta = getattr(layer, "metadata", {}) or {}
    if not isinstance(meta.get("napari_ssl"), dict) or getattr(layer, "multiscale", False):
        return False
    shape = np.shape(layer.data)
    if len(shape) < 3 or shape[-3] != 1:
        return False
    rotation = np.asarray(layer.affine.affine_matrix, dtype=float)[-4:-1, -4:-1]
    norms = np.linalg.norm(rotation, axis=0)
    if np.any(norms <= 0):
        return False
    return not np.allclose(np.sort(np.abs(rotation / norms), axis=0)[-1], 1.0, atol=1e-3)


def install(viewer: napari.Viewer) -> None:
    """Watch ``viewer`` for inserted oblique planes (idempotent)."""
    if viewer in _HOOKED:
        return
    _HOOKED.add(viewer)
    ref = weakref.ref(viewer)

    def on_inserted(event: Any) -> None:
        target = ref()
        if target is None or target.dims.ndisplay == 3 or not is_oblique_plane(event.value):
            return
        from napari.utils.notifications import show_info

        target.dims.ndisplay = 3
        show_info(
            f"napari-ssl: switched to the 3D view to show {event.value.name!r}, an oblique imaging plane, "
            "at its true position"
        )

    viewer.layers.events.inserted.connect(on_inserted)


def install_current() -> None:
    """Install the hook on every open viewer (no-op when there is none)."""
    import napari

    for viewer in list(napari.Viewer._instances):
        install(viewer)


def activate(context: Any = None) -> None:
    """npe2 ``on_activate``: hook the viewers that are open when the plugin is first used."""
    install_current()
