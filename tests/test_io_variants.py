"""NIfTI / NRRD / MHA variants: 4D (time or channels), RGB and vector images, voxel types and scaled data."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssl import io
from napari_ssl.io.volume import Volume

SUFFIXES = [".nii.gz", ".nrrd", ".mha"]


@pytest.fixture(scope="module")
def crop() -> Volume:
    """A 6 x 32 x 32 int16 CT crop with an oblique direction and anisotropic spacing: synthetic, so the variants
    are tested on a fresh clone too (no real scan is needed to write and read them back)."""
    from synthetic import synthetic_ct

    vol = synthetic_ct(shape=(24, 48, 48), spacing=(3.0, 0.8, 0.7))
    angle = np.deg2rad(20.0)
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(angle), -np.sin(angle)], [0.0, np.sin(angle), np.cos(angle)]])
    vol = vol.with_array(vol.array[10:16, 8:40, 8:40].copy(), origin=(-31.5, 12.25, -7.5), direction=rotation)
    assert vol.array.dtype == np.int16 and vol.array.min() < -500 < vol.array.max()  # air and tissue
    return vol


def _four_d(crop: Volume, path, n: int = 3) -> sitk.Image:
    image = sitk.JoinSeries([crop.to_sitk(crop.array + 100 * t) for t in range(n)])
    sitk.WriteImage(image, str(path))
    return sitk.ReadImage(str(path))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_4d_opens_with_a_time_axis_or_one_chosen_volume(tmp_path, crop, suffix):
    path = tmp_path / f"series{suffix}"
    ref = _four_d(crop, path)
    vol = io.read(path)
    assert vol.array.shape == (3, *crop.spatial_shape) and vol.metadata["axes"] == "tzyx"
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref))
    np.testing.assert_allclose(vol.spacing, ref.GetSpacing()[:3][::-1], atol=1e-6)
    np.testing.assert_allclose(vol.origin, ref.GetOrigin()[:3][::-1], atol=1e-4)
    assert vol.same_geometry(crop, atol=1e-4)
    second = io.read(path, frame=1)
    assert second.array.shape == crop.spatial_shape and second.same_geometry(crop, atol=1e-4)
    np.testing.assert_array_equal(second.array, crop.array + 100)
    with pytest.raises(io.ScanReadError, match=r"frame 3 out of range: the scan holds 3 volume\(s\) \(0-2\)"):
        io.read(path, frame=3)


def test_frame_of_a_3d_scan(tmp_path, crop):
    path = io.write(crop, tmp_path / "ct.nii.gz")
    assert io.read(path, frame=0).same_geometry(crop, atol=1e-4)
    with pytest.raises(io.ScanReadError, match="frame 1 out of range"):
        io.read(path, frame=1)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("components", [3, 2])
def test_rgb_and_vector_images_get_a_sentence(tmp_path, suffix, components):
    image = sitk.Image([8, 8, 4], sitk.sitkVectorUInt8, components)
    path = tmp_path / f"rgb{suffix}"
    sitk.WriteImage(image, str(path))
    with pytest.raises(io.ScanReadError, match=rf"has {components} components per pixel \(an RGB or vector image"):
        io.read(path)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64])
def test_voxel_types_are_kept(tmp_path, crop, suffix, dtype):
    values = (crop.array - crop.array.min()).astype(dtype)
    path = tmp_path / f"typed{suffix}"
    sitk.WriteImage(crop.to_sitk(values), str(path))
    vol = io.read(path)
    assert vol.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(vol.array, values)


def test_scaled_nifti_values_are_applied(tmp_path, crop):
    path = tmp_path / "scaled.nii"
    raw = crop.array.astype(np.int16)
    sitk.WriteImage(crop.to_sitk(raw), str(path))
    header = bytearray(path.read_bytes())
    header[112:120] = struct.pack("<ff", 0.5, -10.0)  # scl_slope, scl_inter (NIfTI-1 header offsets)
    path.write_bytes(bytes(header))
    vol = io.read(path)
    assert vol.array.dtype.kind == "f"
    np.testing.assert_allclose(vol.array, raw * 0.5 - 10.0)
    assert vol.same_geometry(crop, atol=1e-4)
