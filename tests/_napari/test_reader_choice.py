"""File > Open's reader choice: napari's builtins and napari-ssl both claim scan suffixes, so napari asks (or, for
``viewer.open(path)`` without ``plugin=``, uses its builtins, which lose the geometry); ``napari-ssl reader
--default`` makes napari-ssl the reader napari picks without asking."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_ssl import io
from napari_ssl.io.volume import Volume

pytestmark = pytest.mark.gui


@pytest.fixture
def scans(tmp_path) -> dict[str, Path]:
    vol = Volume(np.arange(6 * 8 * 10, dtype=np.int16).reshape(6, 8, 10), spacing=(3.0, 1.5, 0.75),
                 origin=(10.0, -20.0, 30.0))
    out = {}
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        out[suffix] = io.write(vol, tmp_path / f"scan{suffix}")
    return out


def test_napari_asks_and_offers_napari_ssl_until_it_is_the_default(make_napari_viewer, scans) -> None:
    from napari.errors import MultipleReaderError

    from napari_ssl._napari.preferences import (
        clear_default_reader,
        default_reader_patterns,
        make_default_reader,
    )

    viewer = make_napari_viewer()
    for path in scans.values():  # File > Open passes no plugin: napari asks which reader to use
        with pytest.raises(MultipleReaderError, match="napari-ssl"):
            viewer.open(path, plugin=None)
    assert default_reader_patterns() == []
    make_default_reader()
    assert "*.nii.gz" in default_reader_patterns()
    for suffix, path in scans.items():
        (layer,) = viewer.open(path, plugin=None)  # now without asking, and with the geometry
        assert "napari_ssl" in layer.metadata, suffix
        np.testing.assert_allclose(layer.scale, (3.0, 1.5, 0.75))
        np.testing.assert_allclose(layer.data_to_world((0, 0, 0)), (10.0, -20.0, 30.0), atol=1e-4)
    assert "*.nrrd" in clear_default_reader() and default_reader_patterns() == []
    with pytest.raises(MultipleReaderError):
        viewer.open(scans[".nrrd"], plugin=None)


def test_the_reader_command_sets_and_resets_naparis_preference(tmp_path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / ".config")}
    env.pop("NAPARI_CONFIG", None)

    def cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "napari_ssl.cli", "reader", *args], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    assert "opened with napari-ssl without asking: none" in cli()
    said = cli("--default")
    assert "*.nii.gz" in said and str(tmp_path) in said  # saved in this home's napari settings, nowhere else
    assert "without asking: *.nii, *.nii.gz, *.nrrd" in cli()
    assert "asks which reader again" in cli("--reset")
    assert "without asking: none" in cli()
