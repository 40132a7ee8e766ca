"""The suite keeps out of the user's home: settings, default output folders and child processes all see the
throw-away home tests/conftest.py sets up before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui


def test_recent_models_are_remembered_in_the_suites_home(qapp, tmp_path) -> None:
    from napari_ssl._napari.segment.info import _settings, recent_models, remember_model

    real = Path(os.environ["NAPARI_SSL_TEST_REAL_HOME"])
    home = Path.home()
    assert home != real and home.name.startswith("napari-ssl-tests-home-")
    store = Path(_settings().fileName())
    assert store.is_relative_to(home) and not store.is_relative_to(real), store
    (tmp_path / "model").mkdir()
    remember_model(str(tmp_path / "model"))
    assert recent_models()[0] == str(tmp_path / "model")


def test_child_processes_see_the_same_home() -> None:
    code = "from pathlib import Path; from qtpy.QtCore import QSettings; print(Path.home()); " \
           "print(QSettings('napari-ssl', 'napari-ssl').fileName())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    home, store = out.stdout.split("\n")[:2]
    assert home == str(Path.home()) and store.startswith(home)
