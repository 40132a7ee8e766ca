"""What reading or writing a scan can go wrong with: the errors and the warning the readers and writers raise.

Its own module, below both :mod:`napari_ssl.io` and :mod:`napari_ssl.io.dicom` (which raise them), so neither imports
the other to name them; :mod:`napari_ssl.io` re-exports them.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["ScanReadError", "ScanWarning", "ScanWriteError"]


class ScanReadError(OSError, ValueError):
    """A path that is not a readable scan: missing, unreadable, empty, corrupt, RGB or unsupported."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __str__(self) -> str:  # OSError would print "[Errno None]"; keep the message plain
        return f"{self.path}: {self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return (type(self), (self.path, self.reason))


class ScanWarning(UserWarning):
    """A scan was read, with something the user should know: a skipped localizer, a filled slice gap."""


class ScanWriteError(ScanReadError):
    """A scan could not be written (bad suffix, unwritable folder, unsupported array)."""
