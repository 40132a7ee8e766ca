"""npe2 contributions in a real viewer: the reader places layers in world mm, the writers keep geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssl import io
from napari_ssl._napari.layers import layer_to_volume
from napari_ssl._napari.reader import napari_get_reader

pytestmark = pytest.mark.gui


@pytest.fixture
def scans(shared_data, tmp_path, write_dicom_series):
    """One small real scan per format (NIfTI, NRRD, MHA, MHD, DICOM folder)."""
    ct = io.read(shared_data / "ct_organs/ct.nii.gz")
    paths = {
        ".nii.gz": shared_data / "ct_organs/ct.nii.gz",
        ".nrrd": shared_data / "brain_tumor/image.nrrd",
        ".mha": io.write(ct, tmp_path / "ct.mha"),
    }
    sitk.WriteImage(ct.to_sitk(), str(tmp_path / "ct.mhd"))
    paths[".mhd"] = tmp_path / "ct.mhd"
    write_dicom_series(tmp_path / "dicom", ct)
    paths["dicom"] = tmp_path / "dicom"
    return paths


@pytest.mark.parametrize("kind", [".nii.gz", ".nrrd", ".mha", ".mhd", "dicom"])
def test_reader_opens_each_format_with_scale(make_napari_viewer, scans, kind):
    viewer = make_napari_viewer()
    path = scans[kind]
    assert napari_get_reader(str(path)) is not None
    layers = viewer.open(path, plugin="napari-ssl")
    assert len(layers) == 1
    expected = io.read(path)
    np.testing.assert_allclose(layers[0].scale, expected.spacing, rtol=1e-4)
    np.testing.assert_allclose(layers[0].data_to_world((0, 0, 0)), expected.origin, atol=1e-3)
    assert layers[0].data.shape == expected.array.shape


def test_reader_declines_what_it_cannot_open(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(tmp_path)) is None  # a folder without scans
    assert napari_get_reader(str(tmp_path / "missing.png")) is None


def test_reader_reports_corrupt_file(make_napari_viewer, tmp_path):
    from napari_ssl._napari.reader import read_layers

    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b" + bytes(200))
    with pytest.raises(io.ScanReadError, match=r"bad\.nii\.gz: not a readable scan"):
        read_layers(str(bad))


def test_brats_case_opens_as_aligned_layers(make_napari_viewer, shared_data):
    viewer = make_napari_viewer()
    layers = viewer.open(shared_data / "brats/Brats18_2013_11_1", plugin="napari-ssl")
    kinds = {layer.name: layer._type_string for layer in layers}
    assert kinds == {"flair": "image", "seg": "labels", "t1": "image", "t1ce": "image", "t2": "image"}
    for layer in layers[1:]:
        np.testing.assert_allclose(layer.affine.affine_matrix, layers[0].affine.affine_matrix)
        np.testing.assert_allclose(layer.scale, layers[0].scale)
    # what the user sees: the labels on top of the images, and one image (not four stacked opaque ones)
    assert viewer.layers[-1].name == "seg" and viewer.layers[-1].visible
    assert [layer.name for layer in viewer.layers if layer._type_string == "image" and layer.visible] == ["flair"]


def test_uid_named_dicom_and_dicomdir_are_claimed(make_napari_viewer, shared_data, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.fileset import FileSet

    src = shared_data / "cardiac_views/056B/Series0005_trufi_short-axis"
    uid_folder = tmp_path / "export"
    uid_folder.mkdir()
    fs = FileSet()
    for i, f in enumerate(sorted(src.iterdir())):
        ds = pydicom.dcmread(f)
        ds.save_as(uid_folder / f"MR.1.3.12.2.1107.5.2.{i + 1}")
        for key, value in (("PatientID", "P1"), ("StudyDate", "20260101"), ("StudyTime", "1200"), ("StudyID", "1"),
                           ("StudyInstanceUID", "1.2.826.0.1.3680043.8.498.9"), ("SeriesNumber", "5"),
                           ("InstanceNumber", str(i + 1)),
                           ("SeriesInstanceUID", "1.2.826.0.1.3680043.8.498.10"),
                           ("SOPClassUID", ds.file_meta.MediaStorageSOPClassUID),
                           ("SOPInstanceUID", ds.file_meta.MediaStorageSOPInstanceUID)):
            if not ds.get(key):
                setattr(ds, key, value)
        fs.add(ds)
    fs.write(tmp_path / "cd")
    viewer = make_napari_viewer()
    for path in (uid_folder, next(uid_folder.iterdir()), tmp_path / "cd", tmp_path / "cd" / "DICOMDIR"):
        assert napari_get_reader(str(path)) is not None, path
    (layer,) = viewer.open(uid_folder, plugin="napari-ssl")
    (again,) = viewer.open(tmp_path / "cd" / "DICOMDIR", plugin="napari-ssl")
    expected = io.read(src)
    for lay in (layer, again):
        assert lay.data.shape == expected.array.shape
        np.testing.assert_allclose(lay.data_to_world((0, 0, 0)), expected.origin, atol=1e-3)
        np.testing.assert_allclose(lay.scale, expected.spacing, rtol=1e-4)


def test_slice_gap_becomes_a_notification(make_napari_viewer, shared_data, tmp_path, monkeypatch):
    import napari_ssl._napari.reader as reader

    src = shared_data / "cardiac_views/056B/Series0005_trufi_short-axis"
    gap = tmp_path / "gap"
    gap.mkdir()
    for i, f in enumerate(sorted(src.iterdir(), key=lambda p: io.read(p).origin)):
        if i != 3:
            (gap / f.name).write_bytes(f.read_bytes())
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", shown.append)
    (data, _, _), = reader.read_layers(gap)
    assert len(shown) == 1 and "missing slice" in shown[0] and "gap" in shown[0]
    assert data.shape[0] == 8  # the missing slice's place is kept


def test_cardiac_views_world_equals_patient_coordinates(make_napari_viewer, shared_data):
    pydicom = pytest.importorskip("pydicom")
    exam = shared_data / "cardiac_views/056B"
    viewer = make_napari_viewer()
    layers = viewer.open(exam / "Series0004_trufi_4-chamber", plugin="napari-ssl")
    assert viewer.dims.ndisplay == 3  # oblique views are shown in 3D, where they have their true pose
    layers += viewer.open(exam / "Series0003_trufi_2-chamber", plugin="napari-ssl")
    for layer, series in zip(layers, ["Series0004_trufi_4-chamber", "Series0003_trufi_2-chamber"], strict=True):
        ds = pydicom.dcmread(next((exam / series).iterdir()), stop_before_pixels=True)
        ipp = np.array(ds.ImagePositionPatient, float)
        iop = np.array(ds.ImageOrientationPatient, float)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        h, w = layer.data.shape[-2:]
        for r, c in [(0, 0), (h - 1, 0), (0, w - 1), (h // 2, w // 3)]:
            lps = ipp + c * dc * iop[:3] + r * dr * iop[3:]
            np.testing.assert_allclose(layer.data_to_world((0, r, c)), lps[::-1], atol=1e-3)


def test_cine_opens_with_time_axis(make_napari_viewer, shared_data):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(shared_data / "cardiac_views/056B/Series0010_cine_sax", plugin="napari-ssl")
    assert layer.data.shape[:2] == (25, 1)
    assert viewer.dims.ndim == 4


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_writers_keep_geometry(make_napari_viewer, shared_data, tmp_path, suffix):
    import napari

    viewer = make_napari_viewer()
    image, labels = viewer.open(shared_data / "brain_tumor", plugin="napari-ssl")[:2]
    assert labels._type_string == "labels"
    before = image.data.copy()
    out_img = tmp_path / f"img{suffix}"
    out_lab = tmp_path / f"lab{suffix}"
    assert napari.save_layers(str(out_img), [image], plugin="napari-ssl") == [str(out_img)]
    assert napari.save_layers(str(out_lab), [labels], plugin="napari-ssl") == [str(out_lab)]
    src = io.read(shared_data / "brain_tumor/image.nrrd")
    for path, data in [(out_img, image.data), (out_lab, labels.data)]:
        back = io.read(path)
        assert back.same_geometry(src)
        np.testing.assert_array_equal(back.array, data)
    np.testing.assert_array_equal(image.data, before)  # the user's layer is untouched
    assert layer_to_volume(labels).same_geometry(src)


def test_4d_nifti_opens_with_a_time_axis_and_rgb_gets_a_sentence(make_napari_viewer, tmp_path):
    from napari_ssl._napari.reader import read_layers

    frames = [sitk.GetImageFromArray(np.full((4, 5, 6), t, dtype=np.int16)) for t in range(3)]
    sitk.WriteImage(sitk.JoinSeries(frames), str(tmp_path / "fmri.nii.gz"))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(tmp_path / "fmri.nii.gz", plugin="napari-ssl")
    assert layer.data.shape == (3, 4, 5, 6) and viewer.dims.ndim == 4
    assert layer.axis_labels[0] == "t"
    sitk.WriteImage(sitk.Image([8, 8, 4], sitk.sitkVectorUInt8, 3), str(tmp_path / "photo.nii.gz"))
    with pytest.raises(io.ScanReadError, match="RGB or vector image"):
        read_layers(tmp_path / "photo.nii.gz")


@pytest.mark.parametrize(("dtype", "value", "written"), [(np.uint8, 3, np.uint8), (np.int64, 200, np.uint16),
                                                         (np.int32, 70_000, np.int32), (np.int64, -3, np.int64)])
def test_masks_layer_is_written_with_narrow_ids_and_never_wraps(tmp_path, dtype, value, written):
    """The Segment dock's Save masks (write_labels_layer) shares the Labels writer's rule: ids that fit uint16 are
    written as uint16 (or narrower as they are); others keep their type, never wrapped."""
    from napari.layers import Labels

    from napari_ssl import io
    from napari_ssl._napari.writer import write_labels_layer

    data = np.zeros((3, 4, 5), dtype)
    data[1, 2, 3] = value
    layer = Labels(data, scale=(2.0, 1.0, 0.5), translate=(5.0, -3.0, 1.0), name="scan masks")
    back = io.read(write_labels_layer(layer, tmp_path / "m.nii.gz"))
    assert back.array.dtype == written and int(back.array[1, 2, 3]) == value
    np.testing.assert_allclose(back.spacing, (2.0, 1.0, 0.5))
    np.testing.assert_allclose(back.origin, (5.0, -3.0, 1.0))
