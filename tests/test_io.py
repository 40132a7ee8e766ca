"""Scan I/O on real data: geometry round trips, DICOM series and cine order, clear errors, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssl import io
from napari_ssl._napari.layers import layer_kwargs, volume_from_layer_data  # no napari import: plain geometry
from napari_ssl.io.volume import Volume

REAL_SCANS = [
    "ct_organs/ct.nii.gz",
    "brain_tumor/image.nrrd",
    "brats/Brats18_2013_11_1/flair.nii.gz",
    "mni152/t1.nii.gz",
]


def _same(a: Volume, b: Volume) -> None:
    assert a.same_geometry(b, atol=1e-4), (a, b)
    np.testing.assert_array_equal(a.array, b.array)


@pytest.mark.parametrize("rel", REAL_SCANS)
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_real_scan_geometry_round_trip(shared_data, tmp_path, rel, suffix):
    """read -> layer kwargs -> Volume -> write -> read keeps spacing, origin, direction and voxels."""
    original = io.read(shared_data / rel)
    ref = sitk.ReadImage(str(shared_data / rel))  # independent reference: SimpleITK's own geometry
    np.testing.assert_allclose(original.spacing, ref.GetSpacing()[::-1])
    np.testing.assert_allclose(original.origin, ref.GetOrigin()[::-1])
    kwargs = layer_kwargs(original)
    rebuilt = volume_from_layer_data(
        original.array, scale=kwargs["scale"], translate=kwargs["translate"], affine=kwargs["affine"]
    )
    out = io.write(rebuilt, tmp_path / f"copy{suffix}")
    again = io.read(out)
    _same(original, again)


def test_anisotropic_brain_spacing(shared_data):
    vol = io.read(shared_data / "brain_tumor/image.nrrd")
    assert vol.spatial_shape == (25, 256, 256)
    np.testing.assert_allclose(vol.spacing, (6.5, 0.78125, 0.78125), atol=1e-6)


def test_brats_case_opens_as_aligned_modalities(shared_data):
    volumes = io.read_all(shared_data / "brats/Brats18_2013_11_1")
    assert sorted(v.name for v in volumes) == ["flair", "seg", "t1", "t1ce", "t2"]
    for v in volumes[1:]:
        assert v.same_geometry(volumes[0])


def test_dicom_series_slice_order_and_spacing(tmp_path, write_dicom_series):
    array = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    vol = Volume(array=array, spacing=(2.5, 0.9, 1.2), origin=(5.0, -3.0, 12.0), direction=q)
    write_dicom_series(tmp_path / "series", vol)
    back = io.read(tmp_path / "series")
    assert back.spatial_shape == (6, 5, 4)
    np.testing.assert_allclose(back.spacing, vol.spacing, atol=1e-4)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)
    np.testing.assert_array_equal(back.array, array)
    assert back.metadata["modality"] == "MR"


def test_dicom_cine_opens_with_time_axis(tmp_path, write_dicom_series):
    array = np.arange(1 * 5 * 4, dtype=np.int16).reshape(1, 5, 4)
    vol = Volume(array=array, spacing=(1.0, 1.5, 1.5), origin=(0.0, 10.0, 20.0))
    write_dicom_series(tmp_path / "cine", vol, frames=3)
    back = io.read(tmp_path / "cine")
    assert back.array.shape == (3, 1, 5, 4)
    for t in range(3):  # frames in trigger-time order
        np.testing.assert_array_equal(back.array[t, 0], array[0] + 1000 * t)
    assert back.is_plane


def test_find_scans_lists_files_and_dicom_folders(shared_data):
    scans = io.find_scans(shared_data / "cardiac_views")
    assert len(scans) == 7 and all(s.is_dir() for s in scans)
    assert shared_data / "ct_organs/ct.nii.gz" in io.find_scans(shared_data / "ct_organs")


# ----------------------------------------------------------------------- bad input
def _rgb_file(tmp_path: Path) -> Path:
    rgb = sitk.Image([8, 8, 4], sitk.sitkVectorUInt8, 3)
    path = tmp_path / "rgb.mha"
    sitk.WriteImage(rgb, str(path))
    return path


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing.nii.gz", "no such file"),
        (lambda d: (d / "empty.nii.gz").touch() or d / "empty.nii.gz", "empty file"),
        (lambda d: (d / "bad.nii.gz").write_bytes(os.urandom(4096)) and d / "bad.nii.gz", "not a readable scan"),
        (lambda d: (d / "bad.nrrd").write_bytes(b"NRRD0004\ntype: what\n\n" + os.urandom(64)) and d / "bad.nrrd", "not a readable scan"),
        (_rgb_file, "RGB"),
        (lambda d: (d / "nothing").mkdir() or d / "nothing", "no DICOM series|no readable scans"),
    ],
)
def test_bad_input_gives_clear_error(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(io.ScanReadError, match=match) as info:
        io.read(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, OSError)


def test_broken_symlink_is_reported(tmp_path):
    link = tmp_path / "link.nii.gz"
    link.symlink_to(tmp_path / "gone.nii.gz")
    with pytest.raises(io.ScanReadError, match="no such file"):
        io.read(link)


def test_write_rejects_bad_targets_and_writes_nothing(tmp_path):
    vol = Volume(array=np.zeros((3, 4, 5), dtype=np.float32))
    with pytest.raises(io.ScanWriteError, match="cannot write .png"):
        io.write(vol, tmp_path / "x.png")
    with pytest.raises(io.ScanWriteError, match="does not exist"):
        io.write(vol, tmp_path / "no" / "x.nii.gz")
    with pytest.raises(io.ScanWriteError, match="only 3D"):
        io.write(Volume(array=np.zeros((2, 3, 4, 5))), tmp_path / "x.nii.gz")
    with pytest.raises(io.ScanWriteError, match="voxel type"):
        io.write(vol.with_array(np.zeros((3, 4, 5), dtype=np.complex64)), tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "mask.nii.gz"
    good = Volume(array=np.ones((3, 4, 5), dtype=np.uint8))
    io.write(good, target)
    before = target.read_bytes()

    def broken(image, path, useCompression=True):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    with pytest.raises(io.ScanWriteError, match="disk full"):
        io.write(good.with_array(np.zeros((3, 4, 5), dtype=np.uint8)), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"]


def test_scan_read_error_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(io.ScanReadError("/x.nii", "empty file")))
    assert str(err) == "/x.nii: empty file"


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_single_oblique_view_round_trips_as_plane(shared_data, tmp_path, suffix):
    view = io.read(shared_data / "cardiac_views/056B/Series0004_trufi_4-chamber")
    assert view.is_plane and not np.allclose(view.direction, np.eye(3))
    back = io.read(io.write(view, tmp_path / f"view{suffix}"))
    _same(view, back)


def test_2d_nifti_is_a_plane(tmp_path):
    image = sitk.GetImageFromArray(np.arange(20 * 30, dtype=np.float32).reshape(20, 30))
    image.SetSpacing((0.5, 0.7))
    image.SetOrigin((3.0, 4.0))
    sitk.WriteImage(image, str(tmp_path / "slice.nii.gz"))
    vol = io.read(tmp_path / "slice.nii.gz")
    assert vol.array.shape == (1, 20, 30) and vol.is_plane
    np.testing.assert_allclose(vol.spacing[1:], (0.7, 0.5))
    np.testing.assert_allclose(vol.index_to_world([0, 2, 3]), (0.0, 4.0 + 2 * 0.7, 3.0 + 3 * 0.5), atol=1e-6)


def test_a_truncated_nii_gz_is_refused_in_one_sentence(tmp_path) -> None:
    """SimpleITK reads a .nii.gz cut short without an error (the missing voxels are garbage): io.read refuses it.
    A complete file passes on the quick look (gzip trailer vs the header's size), without being decompressed twice."""
    import gzip as gz

    from napari_ssl import io as nio
    from napari_ssl.io import ScanReadError, gzip_truncated

    rng = np.random.default_rng(0)
    whole = nio.write(Volume(rng.normal(size=(20, 30, 40)).astype(np.float32), (2.0, 1.0, 1.0)), tmp_path / "a.nii.gz")
    assert gzip_truncated(whole) is None and nio.read(whole).array.shape == (20, 30, 40)
    opened = []
    real_open = gz.open
    with pytest.MonkeyPatch.context() as mp:  # the quick look reads the header only
        mp.setattr(gz, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
        assert gzip_truncated(whole) is None
    assert len(opened) == 1
    data = whole.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) * 6 // 10])
    assert gzip_truncated(cut) and "truncated" in gzip_truncated(cut)
    with pytest.raises(ScanReadError) as err:
        nio.read(cut)
    assert "incomplete" in str(err.value) and "\n" not in str(err.value)
