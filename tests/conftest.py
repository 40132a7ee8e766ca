"""Shared fixtures. Real scans live in ../shared/data (beside the checkout); tests that need them skip
with a reason when that folder is absent (a user's fresh clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_API", "pyqt6")
os.environ.setdefault("NAPARI_SSL_TEST", "1")

try:  # a worker thread's first optimizer can fail to import torch._dynamo; import it once here
    import torch
    import torch._dynamo  # noqa: F401

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


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
