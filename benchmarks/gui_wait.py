"""What the screenshot scripts share: wait for a condition while Qt's event loop turns (a plain script has no
qtbot)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait(condition: Callable[[], bool], timeout: float = 600.0) -> None:
    """Turn the event loop until ``condition()`` holds (``TimeoutError`` after ``timeout`` s), then a few more turns
    so what it made is painted."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the run did not end in time")
        QApplication.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        QApplication.processEvents()
