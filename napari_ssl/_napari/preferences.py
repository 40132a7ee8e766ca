"""napari-ssl as napari's reader for scans: File > Open and drag and drop without the *Choose reader* dialog.

napari's builtins and napari-ssl both claim ``.nii.gz``, ``.nrrd``, ``.mha`` and more, so napari asks which reader
to use on every open (and ``viewer.open(path)`` without ``plugin=`` tries the builtins first, which open a
``.nrrd`` without its geometry and fail on ``.nii.gz``). napari's own answer is a preference, ``extension2reader``
(*Preferences > Plugins > File extension readers*, or *Remember my choice* in the dialog). These functions set or
clear it for the scan suffixes in one step, on the user's request only (``napari-ssl reader --default``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SCAN_PATTERNS", "clear_default_reader", "default_reader_patterns", "make_default_reader", "napari_settings",
]

PLUGIN = "napari-ssl"
#: the suffixes napari-ssl reads with their geometry (the manifest's patterns less the catch-all for DICOM files)
SCAN_PATTERNS = ("*.nii", "*.nii.gz", "*.nrrd", "*.nhdr", "*.mha", "*.mhd", "*.dcm")


def napari_settings() -> Any:
    """napari's settings (the user's, saved in ``settings.config_path``)."""
    from napari.settings import get_settings

    return get_settings()


def _settings(settings: Any = None) -> Any:
    return napari_settings() if settings is None else settings


def default_reader_patterns(settings: Any = None) -> list[str]:
    """The scan suffixes napari opens with napari-ssl without asking."""
    mapping = _settings(settings).plugins.extension2reader
    return [p for p in SCAN_PATTERNS if mapping.get(p) == PLUGIN]


def make_default_reader(settings: Any = None) -> list[str]:
    """Make napari-ssl napari's reader for every scan suffix (saved in napari's settings); returns the suffixes."""
    settings = _settings(settings)
    mapping = dict(settings.plugins.extension2reader)
    mapping.update(dict.fromkeys(SCAN_PATTERNS, PLUGIN))
    settings.plugins.extension2reader = mapping
    settings.save()
    return list(SCAN_PATTERNS)


def clear_default_reader(settings: Any = None) -> list[str]:
    """Forget napari-ssl as the reader of the suffixes it was set for; napari asks again. Returns those suffixes."""
    settings = _settings(settings)
    mapping = dict(settings.plugins.extension2reader)
    cleared = [p for p, plugin in mapping.items() if plugin == PLUGIN]
    settings.plugins.extension2reader = {p: v for p, v in mapping.items() if v != PLUGIN}
    settings.save()
    return cleared
