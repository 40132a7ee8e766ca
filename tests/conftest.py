"""Shared fixtures. Real scans live in ../shared/data (beside the checkout); tests that need them skip
with a reason when that folder is absent (a user's fresh clone)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from dicom_series import write_series

os.environ.setdefault("QT_API", "pyqt6")
os.environ.setdefault("NAPARI_SSL_TEST", "1")


def _isolate_home() -> Path:
    """One throw-away home for the whole suite, set before Qt, napari or any child process starts.

    QSettings (the Segment dock's recent models), napari's settings, matplotlib's cache and the docks' default
    output folders (``~/napari-ssl...``) all live under ``HOME`` / ``XDG_*``: pointing them at a temporary folder
    keeps every test, and every process a test starts, out of the user's own home and settings.
    """
    import atexit
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="napari-ssl-tests-home-"))
    os.environ["NAPARI_SSL_TEST_REAL_HOME"] = str(Path.home())
    os.environ["HOME"] = str(home)
    for var, sub in (("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share"),
                     ("XDG_CACHE_HOME", ".cache"), ("XDG_STATE_HOME", ".local/state")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(home / sub)
    os.environ["MPLCONFIGDIR"] = str(home / ".config" / "matplotlib")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return home


TEST_HOME = _isolate_home()

try:  # a worker thread's first optimizer can fail to import torch._dynamo; import it once here
    import torch
    import torch._dynamo

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
except ImportError:  # pragma: no cover - torch is a hard dependency
    pass

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NAPARI_SSL_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real scans (../shared/data); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real scans not found at {SHARED_DATA} (set NAPARI_SSL_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def nnunet_model(tmp_path_factory, shared_data) -> Path:
    """A trained nnU-Net results folder (dataset.json, plans.json, fold_0/checkpoint_final.pth), built once per
    session with nnU-Net's own API (tests/nnunet_folder.py); skipped where nnU-Net is not installed."""
    pytest.importorskip("nnunetv2", reason="nnU-Net v2 is not installed (pip install 'napari-ssl[nnunet]')")
    from nnunet_folder import build_in_child

    root = tmp_path_factory.mktemp("nnunet")
    started = time.perf_counter()
    folder = build_in_child(root, shared_data)
    print(f"\nnnU-Net folder built in {time.perf_counter() - started:.1f} s: {folder}")
    assert (folder / "fold_0" / "checkpoint_final.pth").is_file()
    return folder


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """napari's ``make_napari_viewer`` reads ``item.rep_call`` (napari's own conftest sets it)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def write_dicom_series():
    """Write a Volume as a scanner-style DICOM series (one file per slice and frame, shuffled names)."""
    return write_series
