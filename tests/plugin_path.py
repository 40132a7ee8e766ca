"""Docks reached the way a user reaches them (*Plugins > napari SSL > NAME*)."""

from __future__ import annotations

PLUGIN = "napari-ssl"


def open_dock(viewer, name: str):
    """The dock ``name`` as the Plugins menu opens it: through npe2 and napari, which hand the widget a
    ``PublicOnlyProxy`` of the viewer (a dock built by hand with the real viewer hides the bugs of that path)."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    assert type(widget.viewer).__name__ == "PublicOnlyProxy", "napari no longer hands plugin docks a proxy viewer"
    return widget
