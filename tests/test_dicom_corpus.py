"""DICOM as it comes from scanners and PACS, generated here from the shared CT (never committed).

Each case opens with the geometry SimpleITK itself reads (ImageSeriesReader on GDCM's sorted file list, or
ReadImage for one file), or gives its sentence: UID-named files, ``.IMA``/``.DCM``/bare data sets, mixed
series with a localizer and derived images, enhanced multi-frame, compressed transfer syntaxes, a missing
slice, uneven spacing and a DICOMDIR.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssl import io
from napari_ssl.io.volume import Volume

pydicom = pytest.importorskip("pydicom")

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
ROOT_UID = "1.2.826.0.1.3680043.8.498."


@pytest.fixture(scope="module")
def ct(shared_data) -> Volume:
    """A 10-slice crop of the shared abdominal CT, tilted 20 degrees so the geometry is not trivial."""
    vol = io.read(shared_data / "ct_organs/ct.nii.gz")
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return Volume(
        array=vol.array[10:20, 20:68, 30:78].astype(np.int16),
        spacing=(2.5, 0.8, 0.7),
        origin=(-120.0, 35.0, -60.0),
        direction=rot,
        name="ct",
    )


def write_series(
    folder: Path,
    vol: Volume,
    *,
    uid: str = ROOT_UID + "1",
    description: str = "CT abdomen",
    number: int = 2,
    names=lambda k: f"CT.{ROOT_UID}1.{k + 1}",
    image_type: str = "ORIGINAL\\PRIMARY\\AXIAL",
    compressor: str | None = None,
    skip: tuple[int, ...] = (),
) -> list[Path]:
    """``vol`` as one file per slice, written by GDCM the way a scanner names and tags them."""
    folder.mkdir(parents=True, exist_ok=True)
    image = vol.to_sitk()
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    if compressor:
        writer.SetUseCompression(True)
        writer.SetCompressor(compressor)
    out = []
    for z in range(vol.spatial_shape[0]):
        if z in skip:
            continue
        sl = image[:, :, z]
        tags = {
            "0008|0016": CT_STORAGE,
            "0008|0018": f"{uid}.{z + 1}",
            "0008|0060": "CT",
            "0008|0008": image_type,
            "0008|103e": description,
            "0020|000d": ROOT_UID + "9",
            "0020|000e": uid,
            "0020|0011": str(number),
            "0020|0013": str(z + 1),
            "0020|0037": "\\".join(f"{v:.10f}" for v in (*d[0:9:3], *d[1:9:3])),
            "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, z))),
            "0028|0030": f"{vol.spacing[1]}\\{vol.spacing[2]}",
            "0018|0050": str(vol.spacing[0]),
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        path = folder / names(z)
        writer.SetFileName(str(path))
        writer.Execute(sl)
        out.append(path)
    return out


def sitk_series(folder: Path) -> sitk.Image:
    """SimpleITK's own reading of the (single) series in ``folder``."""
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    return sitk.ReadImage(files)


def assert_matches_sitk(vol: Volume, image: sitk.Image) -> None:
    ref = Volume.from_sitk(image)
    assert vol.same_geometry(ref, atol=1e-3), (vol, ref)
    np.testing.assert_array_equal(vol.array, ref.array)


def read_quietly(path: Path, **kw) -> Volume:
    with warnings.catch_warnings():
        warnings.simplefilter("error", io.ScanWarning)  # a clean series gives no warning
        return io.read(path, **kw)


# ----------------------------------------------------------------------- names and syntaxes
@pytest.mark.parametrize(
    "names",
    [
        lambda k: f"CT.1.3.12.2.1107.5.1.4.{k + 1}",  # UID names: the last dot-part is no suffix
        lambda k: f"1.2.840.113619.2.55.{k + 1}.IMA",
        lambda k: f"IMG{k:04d}.DCM",
        lambda k: f"{k:08d}",
    ],
    ids=["uid", "ima", "DCM", "nosuffix"],
)
def test_files_recognised_by_content_whatever_their_names(tmp_path, ct, names):
    folder = tmp_path / "series"
    files = write_series(folder, ct, names=names)
    assert all(io.is_dicom_file(f) and io.is_scan_file(f) for f in files)
    assert io.find_scans(tmp_path) == [folder]
    assert io.holds_scans(tmp_path)
    vol = read_quietly(folder)
    assert_matches_sitk(vol, sitk_series(folder))
    assert vol.same_geometry(ct, atol=1e-3)
    assert vol.name == "CT_abdomen"


def test_bare_data_set_without_preamble(tmp_path, ct):
    folder = tmp_path / "bare"
    for f in write_series(folder, ct):
        ds = pydicom.dcmread(f)
        ds.preamble = None
        del ds.file_meta
        ds.save_as(f, implicit_vr=True, little_endian=True)
        assert f.read_bytes()[128:132] != b"DICM"
    assert io.is_dicom_dir(folder)
    vol = read_quietly(folder)
    assert vol.same_geometry(ct, atol=1e-3)
    np.testing.assert_array_equal(vol.array, ct.array)


def test_non_dicom_files_are_not_claimed(tmp_path):
    (tmp_path / "notes.1.2.txt").write_text("1.2.840 is not a scan")
    (tmp_path / "CT.1.3.12").write_bytes(bytes(300))
    assert not io.is_dicom_file(tmp_path / "CT.1.3.12")
    assert io.find_scans(tmp_path) == []
    assert not io.holds_scans(tmp_path)


@pytest.mark.parametrize("compressor", ["JPEG", "JPEG2000", "RLE"])
def test_compressed_transfer_syntaxes(tmp_path, ct, compressor):
    folder = tmp_path / compressor
    if compressor == "RLE":  # GDCM's writer has no RLE encoder; pydicom's is pure numpy
        files = write_series(folder, ct)
        for f in files:
            ds = pydicom.dcmread(f)
            ds.compress(pydicom.uid.RLELossless)
            ds.save_as(f)
    else:
        files = write_series(folder, ct, compressor=compressor)
    syntax = pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert syntax.is_compressed, syntax.name
    vol = read_quietly(folder)
    assert_matches_sitk(vol, sitk_series(folder))
    np.testing.assert_array_equal(vol.array, ct.array)  # all three are lossless


# ----------------------------------------------------------------------- series
def test_mixed_series_one_volume_each_localizer_and_derived_skipped(tmp_path, ct):
    folder = tmp_path / "exam"
    write_series(folder, ct, uid=ROOT_UID + "1", description="CT abdomen", number=2)
    small = ct.with_array(ct.array[:, ::2, ::2].copy(), spacing=(2.5, 1.6, 1.4))
    write_series(folder, small, uid=ROOT_UID + "2", description="CT soft tissue", number=3,
                 names=lambda k: f"CT.{ROOT_UID}2.{k + 1}")
    write_series(folder, ct.with_array(ct.array[:1].copy()), uid=ROOT_UID + "3", description="Topogram",
                 number=1, image_type="ORIGINAL\\PRIMARY\\LOCALIZER", names=lambda k: f"CT.{ROOT_UID}3.{k + 1}")
    write_series(folder, ct.with_array(ct.array[:3].copy()), uid=ROOT_UID + "4", description="MPR coronal",
                 number=4, image_type="DERIVED\\SECONDARY\\MPR", names=lambda k: f"CT.{ROOT_UID}4.{k + 1}")
    with pytest.warns(io.ScanWarning) as record:
        volumes = io.read_all(folder)
    messages = " | ".join(str(w.message) for w in record)
    assert "skipped localizer series 'Topogram'" in messages
    assert "skipped derived series 'MPR coronal'" in messages
    assert [v.name for v in volumes] == ["CT_abdomen", "CT_soft_tissue"]
    assert volumes[0].same_geometry(ct, atol=1e-3)
    assert volumes[1].same_geometry(small, atol=1e-3)
    np.testing.assert_array_equal(volumes[1].array, small.array)
    with pytest.raises(io.ScanReadError, match="holds 2 DICOM series; open them with read_all"):
        io.read(folder)


def test_enhanced_multiframe(tmp_path, ct):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence

    image = ct.to_sitk()
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_MR
    meta.MediaStorageSOPInstanceUID = ROOT_UID + "5.1"
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.preamble = meta, b"\0" * 128
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_MR, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ROOT_UID + "9", ROOT_UID + "5"
    ds.Modality, ds.SeriesDescription, ds.ImageType = "MR", "enhanced 3D", ["ORIGINAL", "PRIMARY", "M", "NONE"]
    nz, ny, nx = ct.spatial_shape
    ds.Rows, ds.Columns, ds.NumberOfFrames = ny, nx, nz
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    measures = Dataset()
    measures.PixelSpacing = [ct.spacing[1], ct.spacing[2]]
    measures.SliceThickness = measures.SpacingBetweenSlices = ct.spacing[0]
    orientation = Dataset()
    orientation.ImageOrientationPatient = [*d[:, 0], *d[:, 1]]
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Sequence([measures]), Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for z in range(nz):
        position, frame = Dataset(), Dataset()
        position.ImagePositionPatient = list(image.TransformIndexToPhysicalPoint((0, 0, z)))
        frame.PlanePositionSequence = Sequence([position])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = ct.array.tobytes()
    folder = tmp_path / "enhanced"
    folder.mkdir()
    path = folder / f"MR.{ROOT_UID}5.1"
    ds.save_as(path, enforce_file_format=True)
    assert io.find_scans(tmp_path) == [folder]
    for vol in (read_quietly(folder), read_quietly(path)):
        assert_matches_sitk(vol, sitk.ReadImage(str(path)))
        assert vol.same_geometry(ct, atol=1e-3)
    assert read_quietly(folder).name == "enhanced_3D"


def test_missing_slice_warns_and_keeps_true_positions(tmp_path, ct):
    folder = tmp_path / "gap"
    write_series(folder, ct, skip=(4,))
    with pytest.warns(io.ScanWarning, match=r"1 missing slice\(s\) in a 2\.5 mm series: gap\(s\) ") as rec:
        vol = io.read(folder)
    lo, hi = (float(v) for v in re.search(r"(-?[\d.]+) to (-?[\d.]+) mm", str(rec[0].message)).groups())
    assert hi - lo == pytest.approx(2 * ct.spacing[0], abs=0.02)  # the gap is named by its two neighbours
    assert vol.same_geometry(ct, atol=1e-3)  # full grid, true spacing (not the 2.78 mm average)
    kept = [z for z in range(10) if z != 4]
    np.testing.assert_array_equal(vol.array[kept], ct.array[kept])
    expected = np.rint((ct.array[3].astype(np.float32) + ct.array[5]) / 2)
    np.testing.assert_allclose(vol.array[4], expected, atol=1)  # halfway: rounding may go either way


def test_uneven_spacing_is_resampled_with_a_warning(tmp_path, ct):
    folder = tmp_path / "uneven"
    files = write_series(folder, ct)
    normal = np.cross(*np.asarray(pydicom.dcmread(files[0]).ImageOrientationPatient, float).reshape(2, 3))
    for z, f in enumerate(files[6:], start=6):  # the last four slices 1.25 mm further apart each
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = list(np.asarray(ds.ImagePositionPatient, float) + 1.25 * (z - 5) * normal)
        ds.save_as(f)
    with pytest.warns(io.ScanWarning, match=r"uneven slice spacing \(2\.5 to 3\.75 mm"):
        vol = io.read(folder)
    np.testing.assert_allclose(vol.spacing[0], 2.5, atol=0.05)
    span = ct.spacing[0] * 9 + 1.25 * 4
    np.testing.assert_allclose(vol.spacing[0] * (vol.spatial_shape[0] - 1), span, atol=1e-3)
    np.testing.assert_array_equal(vol.array[:6], ct.array[:6])
    np.testing.assert_array_equal(vol.array[-1], ct.array[-1])  # the last slice at its true position


def test_dicomdir(tmp_path, ct):
    from pydicom.fileset import FileSet

    staging = tmp_path / "staging"
    files = write_series(staging, ct)
    fs = FileSet()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PatientID, ds.PatientName, ds.StudyDate, ds.StudyTime, ds.StudyID = "P1", "Anon", "20260101", "1200", "1"
        ds.AccessionNumber = ds.AccessionNumber if "AccessionNumber" in ds else ""
        fs.add(ds)
    cd = tmp_path / "cd"
    fs.write(cd)
    dicomdir = cd / "DICOMDIR"
    assert dicomdir.is_file()
    assert io.is_scan_file(dicomdir)
    scans = io.find_scans(cd)
    assert len(scans) == 1 and scans[0].is_dir() and scans[0] != cd
    vol = read_quietly(dicomdir)
    assert_matches_sitk(vol, sitk_series(scans[0]))
    assert vol.same_geometry(ct, atol=1e-3)
    (again,) = io.read_all(dicomdir)
    assert again.same_geometry(vol)
    assert read_quietly(cd).same_geometry(vol)  # the CD's root folder: its one series


def test_folder_pretraining_finds_uid_named_series(tmp_path, ct):
    """The issue's report: folder pretraining said "folder holds no readable scans" for a PACS export."""
    from napari_ssl.training.data import load_volumes

    write_series(tmp_path / "export" / "1.2.840.113619.2.55.3", ct, names=lambda k: f"1.2.840.113619.2.55.3.{k + 1}")
    (vol,) = load_volumes([tmp_path / "export"], cache=False)
    assert vol.spatial_shape == ct.spatial_shape
    assert vol.same_geometry(ct, atol=1e-3)


def test_non_image_dicom_beside_a_series_is_skipped_with_a_notice(tmp_path, ct):
    from pydicom.dataset import Dataset, FileMetaDataset

    folder = tmp_path / "series"
    write_series(folder, ct)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # an enhanced structured report: no pixels
    meta.MediaStorageSOPInstanceUID = ROOT_UID + "8.1"
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.preamble = meta, b"\0" * 128
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, ROOT_UID + "8.1", "SR"
    ds.save_as(folder / f"SR.{ROOT_UID}8.1", enforce_file_format=True)
    with pytest.warns(io.ScanWarning, match=r"skipped 1 DICOM file\(s\) that hold no readable image \(e\.g\. SR\."):
        vol = io.read(folder)
    assert vol.same_geometry(ct, atol=1e-3)


def test_gantry_tilt_is_named_not_hidden(tmp_path, ct):
    folder = tmp_path / "tilt"
    files = write_series(folder, ct)
    iop = np.asarray(pydicom.dcmread(files[0]).ImageOrientationPatient, float)
    for z, f in enumerate(files):  # each slice 0.5 mm further along its rows: a sheared stack
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = list(np.asarray(ds.ImagePositionPatient, float) + 0.5 * z * iop[:3])
        ds.save_as(f)
    with pytest.warns(io.ScanWarning, match=r"slices shift 4\.50 mm sideways across the series \(gantry tilt"):
        vol = io.read(folder)
    assert vol.metadata["sheared_mm"] == pytest.approx(4.5, abs=1e-3)


def test_zarr_stores_are_not_searched(tmp_path):
    store = tmp_path / "image.zarr"
    (store / "0").mkdir(parents=True)
    (store / ".zgroup").write_text("{}")
    (store / "0" / "0.0.0").write_bytes(b"DICM" * 40)  # a chunk: never opened as a scan
    assert io.find_scans(tmp_path) == []
    assert not io.holds_scans(tmp_path) and not io.holds_scans(store)
