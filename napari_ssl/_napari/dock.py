"""What every napari-ssl job dock does in its life, written once: the Pretrain, Fine-tune and Segment docks derive
from :class:`JobDock`."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QWidget

from napari_ssl._napari.widgets import tab_with_siblings_later

__all__ = ["JobDock"]


class JobDock(QWidget):
    """A dock that runs jobs through a :class:`~napari_ssl._napari.relay.Relay` (``relay``, None when idle).

    The first time it is shown it joins the other napari-ssl docks as a tab (napari stacks plugin docks one below the
    other, which grows the window past a laptop screen); closing it calls :meth:`shutdown`, which stops the running
    job and leaves no process behind (a dock adds its own clean-up by overriding it and calling this one).
    """

    relay: Any = None
    _tabbed = False

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not self._tabbed:
            self._tabbed = True
            tab_with_siblings_later(self)

    def closeEvent(self, event: Any) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop the running job, if any (its child saves what it can within a bounded wait)."""
        if self.relay is not None:
            self.relay.shutdown()
