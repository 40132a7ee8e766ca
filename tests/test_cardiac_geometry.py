"""The real cardiac exam: every view's voxels sit at their DICOM patient coordinates.

The reference is computed independently with pydicom from ImagePositionPatient (IPP),
ImageOrientationPatient (IOP) and PixelSpacing: P(r, c) = IPP + c * dc * row_dir + r * dr * col_dir.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from napari_ssl import io  # noqa: E402


def dicom_world(path: Path, row: float, col: float) -> np.ndarray:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    dr, dc = (float(v) for v in ds.PixelSpacing)  # row spacing, column spacing
    lps = ipp + col * dc * iop[:3] + row * dr * iop[3:]
    return lps[::-1]  # napari-ssl world order is (Z, Y, X)


@pytest.fixture(scope="module")
def exam(shared_data):
    return shared_data / "cardiac_views" / "056B"


@pytest.mark.parametrize(
    "series", ["Series0003_trufi_2-chamber", "Series0004_trufi_4-chamber", "Series0008_cine_lvot"]
)
def test_single_views_world_positions(exam, series):
    vol = io.read(exam / series)
    first = sorted((exam / series).iterdir())[0]
    h, w = vol.spatial_shape[1:]
    for row, col in [(0, 0), (h - 1, 0), (0, w - 1), (h // 3, w // 2), (h - 1, w - 1)]:
        np.testing.assert_allclose(vol.index_to_world([0, row, col]), dicom_world(first, row, col), atol=1e-3)


def test_short_axis_stack_slices(exam):
    folder = exam / "Series0005_trufi_short-axis"
    vol = io.read(folder)
    assert vol.spatial_shape[0] == 8
    assert vol.spacing[0] == pytest.approx(12.0, abs=0.05)
    # every DICOM slice appears once, at its own position, with its own pixels
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        target = dicom_world(f, 0, 0)
        z = vol.world_to_index(target)
        assert np.allclose(z[1:], 0, atol=1e-3)
        assert abs(z[0] - round(z[0])) < 1e-3
        np.testing.assert_array_equal(vol.array[round(z[0])], ds.pixel_array)


def test_cine_is_time_axis(exam):
    vol = io.read(exam / "Series0006_cine_4ch")
    assert vol.array.shape[:2] == (25, 1)
    assert vol.metadata["axes"] == "tzyx"


def test_exam_folder_opens_every_series(exam):
    volumes = io.read_all(exam)
    assert len(volumes) == 7
    assert sum(v.is_plane for v in volumes) == 6  # the 8-slice localizer stack is the one volume
