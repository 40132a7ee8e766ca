"""GUI tests fail when this package reaches a private napari attribute through the viewer napari hands a dock."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PACKAGE = str(Path(__file__).resolve().parents[2] / "napari_ssl")


@pytest.fixture(autouse=True)
def _no_private_napari_access(monkeypatch):
    """Every private attribute this package reads or sets through a ``PublicOnlyProxy`` (the viewer of a dock opened
    from the Plugins menu) fails the test: napari warns that such access goes away (0.10). The warning itself can be
    hidden by an ``always`` filter a library puts in front of pytest's, so the proxy's warning hook is watched.
    If napari renames that hook, this fixture fails loudly rather than watching nothing."""
    from napari.utils._proxies import PublicOnlyProxy

    original = PublicOnlyProxy._private_attr_warning
    seen: list[str] = []

    def record(name: str, typ: str) -> None:
        caller = sys._getframe(2)  # record <- the proxy's __getattr__ / __setattr__ <- the code that reached in
        if caller.f_code.co_filename.startswith(PACKAGE):
            seen.append(f"{typ}.{name} in {Path(caller.f_code.co_filename).name}:{caller.f_lineno}")
        original(name, typ)

    monkeypatch.setattr(PublicOnlyProxy, "_private_attr_warning", staticmethod(record))
    yield
    assert not seen, "private napari access through the plugin proxy: " + "; ".join(dict.fromkeys(seen))
