"""A viewer hook, apart from the reader: show oblique imaging planes in 3D, where they have their true pose.

napari's 2D view drops a layer's out-of-plane rotation, and a plane seen edge-on (a cardiac 2-chamber view
whose columns run head-foot) cannot be drawn at all: the 2D canvas fails on its singular transform. The reader
returns layer data and never touches the viewer; this hook, installed on the open viewers by the plugin
(npe2 ``on_activate``, and again whenever napari-ssl reads), switches the view to 3D with a notification.

napari runs its own layer-inserted callbacks, which draw the new layer in 2D, before any plugin's. So the hook
acts on ``inserting`` (before the layer is in the list) when a reader said oblique planes are on their way
(:func:`expect_oblique_planes`), and on ``inserted`` for planes added any other way (``viewer.add_image`` with
a napari-ssl layer's kwargs, a widget's output).
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari

__all__ = ["activate", "expect_oblique_planes", "install", "install_current", "is_oblique_plane"]

_HOOKED: weakref.WeakSet[Any] = weakref.WeakSet()
#: until when (time.monotonic) the next inserted layers are announced as oblique planes
_EXPECTED = {"until": 0.0}
_EXPECT_SECONDS = 10.0


def is_oblique_plane(layer: Any) -> bool:
    """A napari-ssl layer one slice thick whose plane is not one of the viewer's axis planes."""
    meta = getattr(layer, "metadata", {}) or {}
    if not isinstance(meta.get("napari_ssl"), dict) or getattr(layer, "multiscale", False):
        return False
    shape = np.shape(layer.data)
    if len(shape) < 3 or shape[-3] != 1:
        return False
    return is_oblique(np.asarray(layer.affine.affine_matrix, dtype=float)[-4:-1, -4:-1])


def is_oblique(rotation: np.ndarray) -> bool:
    """True when a 3x3 rotation (columns: array axes in world) is not a permutation of the world axes."""
    norms = np.linalg.norm(rotation, axis=0)
    if np.any(norms <= 0):
        return False
    return not np.allclose(np.sort(np.abs(rotation / norms), axis=0)[-1], 1.0, atol=1e-3)


def expect_oblique_planes() -> None:
    """Announce that the layers about to be inserted hold oblique planes (called by the reader, which knows
    before napari inserts them); the next insertion in a hooked 2D viewer switches it to 3D first."""
    _EXPECTED["until"] = time.monotonic() + _EXPECT_SECONDS


def _to_3d(viewer: Any, name: str) -> None:
    from napari.utils.notifications import show_info

    viewer.dims.ndisplay = 3
    show_info(f"napari-ssl: switched to the 3D view to show {name!r}, an oblique imaging plane, at its true position")


def install(viewer: napari.Viewer) -> None:
    """Watch ``viewer`` for oblique planes as they are inserted (idempotent)."""
    if viewer in _HOOKED:
        return
    _HOOKED.add(viewer)
    ref = weakref.ref(viewer)

    def before_insert(event: Any) -> None:
        target = ref()
        if target is None or target.dims.ndisplay == 3 or time.monotonic() > _EXPECTED["until"]:
            return
        _EXPECTED["until"] = 0.0
        pending.append(True)
        _canvas_updates(target, False)  # no 2D paint of the plane while napari inserts it

    def check(event: Any = None) -> None:
        target = ref()
        if target is None:
            return
        planes = [layer for layer in target.layers if is_oblique_plane(layer)]
        if planes and target.dims.ndisplay != 3:
            _to_3d(target, planes[-1].name)
            face.append(planes[-1])
        if getattr(event, "type", "") == "inserted":  # napari is done with the layer (and its reset_view)
            if face:
                _face_on(target, face[-1])
                face.clear()
            if pending:
                pending.clear()
                _canvas_updates(target, True)

    pending: list[bool] = []
    face: list[Any] = []
    viewer.layers.events.inserting.connect(before_insert)
    # napari updates the dims range while it inserts a layer, before it builds the layer's canvas visual
    # (which fails in 2D for a plane seen edge-on); plugin callbacks on ``inserted`` only run after that
    viewer.dims.events.range.connect(check)
    viewer.layers.events.inserted.connect(check)


def _face_on(viewer: Any, layer: Any) -> None:
    """Turn the 3D camera to look at ``layer``'s plane face-on, as a 2D viewer shows the image (row 0 at the top,
    column 0 on the left): looking against the plane's normal, up along its rows' reverse direction."""
    rotation = np.asarray(layer.affine.affine_matrix, dtype=float)[-4:-1, -4:-1]
    rotation = rotation / np.linalg.norm(rotation, axis=0)
    view, up = -rotation[:, 0], -rotation[:, 1]
    viewer.camera.set_view_direction(tuple(float(v) for v in view), tuple(float(u) for u in up))


def _canvas_updates(viewer: Any, enabled: bool) -> None:
    """Pause or resume the canvas's repaints (found through Qt's public widget tree: the only canvas, else the
    active window's; with several viewers and none active, nothing is paused, which only costs a 2D paint)."""
    from napari_ssl._napari.gl_context import viewer_canvas

    canvas = viewer_canvas()
    if canvas is not None:
        canvas.setUpdatesEnabled(enabled)


def install_current() -> None:
    """Install the hook on the current viewer (no-op when there is none): the one being read into, or, at the
    plugin's activation, the one that opened it."""
    import napari

    viewer = napari.current_viewer()
    if viewer is not None:
        install(viewer)


def activate(context: Any = None) -> None:
    """npe2 ``on_activate``: hook the viewers that are open when the plugin is first used."""
    install_current()
