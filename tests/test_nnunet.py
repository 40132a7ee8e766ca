"""nnU-Net v2 model folders behind the segmenter contract (napari_ssl.inference.formats.nnunet).

The model is a real nnU-Net results folder, built once per session with nnU-Net's own API (tests/nnunet_folder.py:
fingerprint, planner, preprocessing and two training iterations of nnU-Net's stock trainer on the shared abdominal
CT). Our masks are compared with nnU-Net's own ``nnUNetPredictor`` on the same scan files: the shared CT (a flipped
direction matrix), the same scan resampled onto an oblique grid, stored with permuted and flipped axes, and written
as a DICOM series.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssl import io
from napari_ssl.inference.segmenter import (
    SegmenterError,
    SegmentProgress,
    SegmentResult,
    TrustRequired,
    describe_segmenter,
    open_segmenter,
    predict_iter,
)
from napari_ssl.inference.sliding import SegmentationCancelled
from napari_ssl.io.volume import Volume

pytest.importorskip("nnunetv2", reason="nnU-Net v2 is not installed (pip install 'napari-ssl[nnunet]')")

pytestmark = pytest.mark.slow


def _cli() -> str:
    beside = Path(sys.executable).with_name("napari-ssl")
    return str(beside) if beside.is_file() else "napari-ssl"


@pytest.fixture(scope="session")
def reference(nnunet_model):
    """nnU-Net's own predictor on the folder, as ``nnUNetv2_predict -device cpu --disable_tta`` sets it up."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(nnunet_model), use_folds=(0,),
                                                   checkpoint_name="checkpoint_final.pth")
    return predictor


@pytest.fixture(scope="session")
def ours(nnunet_model):
    return open_segmenter(nnunet_model, device="cpu", trust=True, threads=2)


def _reference_on_file(predictor, scan: Path, out: Path) -> Volume:
    """nnU-Net reads the file itself (its plans' SimpleITKIO) and writes the mask with the file's geometry."""
    predictor.predict_from_files_sequential([[str(scan)]], [str(out / "reference")])
    return io.read(out / "reference.nii.gz")


def _reference_on_series(predictor, folder: Path) -> Volume:
    """A DICOM series read by SimpleITK's ImageSeriesReader and given to nnU-Net as it gives its own reader's
    arrays (predict_single_npy_array: (c, z, y, x) and the spacing reversed)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    array = sitk.GetArrayFromImage(image)[None].astype(np.float32)
    labels = predictor.predict_single_npy_array(array, {"spacing": list(image.GetSpacing())[::-1]})
    return Volume.from_sitk(image).with_array(np.asarray(labels, np.uint8))


# ---------------------------------------------------------------- scans
def _oblique(ct: sitk.Image) -> sitk.Image:
    """The CT resampled onto a grid rotated 20 degrees about two axes, 2.5 x 3 x 3.5 mm (nnU-Net resamples it to
    the plans' 3 mm)."""
    rotation = sitk.VersorTransform((0.3, 0.2, 0.0), np.deg2rad(20))
    direction = np.asarray(rotation.GetMatrix()).reshape(3, 3) @ np.asarray(ct.GetDirection()).reshape(3, 3)
    spacing = (2.5, 3.0, 3.5)
    size = [int(n * s / t) for n, s, t in zip(ct.GetSize(), ct.GetSpacing(), spacing, strict=True)]
    centre = ct.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in ct.GetSize()])
    origin = np.asarray(centre) - direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2)
    return sitk.Resample(ct, size, sitk.Transform(), sitk.sitkLinear, origin.tolist(), spacing,
                         direction.ravel().tolist(), -1000.0, sitk.sitkInt16)


@pytest.fixture(scope="session")
def scans(shared_data, tmp_path_factory) -> dict[str, Path]:
    """The shared CT file and copies of it: oblique, axes permuted and flipped (NRRD), a DICOM series."""
    root = tmp_path_factory.mktemp("nnunet-scans")
    ct_path = shared_data / "ct_organs" / "ct.nii.gz"
    ct = sitk.ReadImage(str(ct_path))
    assert not np.allclose(np.reshape(ct.GetDirection(), (3, 3)), np.eye(3))  # a non-identity direction
    oblique = _oblique(ct)
    sitk.WriteImage(oblique, str(root / "oblique.nii.gz"))
    permuted = sitk.Flip(sitk.PermuteAxes(ct, [2, 0, 1]), [True, False, True])
    sitk.WriteImage(permuted, str(root / "permuted_flipped.nrrd"))
    from dicom_series import write_series

    write_series(root / "dicom", io.read(root / "oblique.nii.gz"), shuffle=True, modality="CT")
    return {"shared": ct_path, "oblique": root / "oblique.nii.gz",
            "permuted_flipped": root / "permuted_flipped.nrrd", "dicom": root / "dicom"}


# ---------------------------------------------------------------- describe, trust, bad folders
def test_describe_reads_the_folder_without_torch_or_nnunet(nnunet_model) -> None:
    code = ("import sys, json; from napari_ssl.inference.segmenter import describe_segmenter as d; "
            f"i = d({str(nnunet_model.parent)!r}); "
            "print(json.dumps([i.format, i.path, i.channel_names, [c.modality for c in i.channels], i.names, "
            "i.spacing, i.needs_trust, dict(i.details), 'torch' in sys.modules, 'nnunetv2' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    fmt, path, channels, modalities, names, spacing, trust, details, torch_loaded, nnunet_loaded = json.loads(
        out.stdout)
    assert fmt == "nnunet" and path == str(nnunet_model)  # the dataset folder above resolves to its one model
    assert channels == ["CT"] and modalities == ["CT"]
    assert names == {"0": "background", "1": "liver", "2": "spleen", "3": "kidney"}
    assert spacing == [3.0, 3.0, 3.0] and trust is True
    assert details["folds"] == "0" and details["configuration"] == "3d_fullres"
    assert details["trainer"] == "nnUNetTrainer" and details["checkpoint"] == "checkpoint_final.pth"
    assert not torch_loaded and not nnunet_loaded


def test_opening_without_trust_is_refused_with_the_reason(nnunet_model, monkeypatch) -> None:
    import torch

    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(TrustRequired) as err:
        open_segmenter(nnunet_model, device="cpu")
    message = str(err.value)
    assert "pickle" in message and "--trust" in message and "\n" not in message
    assert "pickle" in err.value.reason and not loads  # nothing was unpickled


def test_a_folder_without_folds_names_what_was_looked_for(nnunet_model, tmp_path) -> None:
    bare = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    bare.mkdir()
    for name in ("dataset.json", "plans.json"):
        shutil.copy(nnunet_model / name, bare / name)
    (bare / "fold_0").mkdir()  # a fold that never finished: no checkpoint
    with pytest.raises(SegmenterError) as err:
        describe_segmenter(bare)
    message = str(err.value)
    assert "without a trained fold" in message and "fold_N/checkpoint_final.pth" in message and "\n" not in message


def test_region_based_labels_and_mr_channels_are_described(nnunet_model, tmp_path) -> None:
    """BraTS-style region training: each region's output value is its regions_class_order entry."""
    folder = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(nnunet_model, folder)
    dataset = json.loads((folder / "dataset.json").read_text())
    dataset["channel_names"] = {"0": "FLAIR", "1": "T1w", "2": "noNorm"}
    dataset["labels"] = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing": 3}
    dataset["regions_class_order"] = [1, 2, 3]
    (folder / "dataset.json").write_text(json.dumps(dataset))
    info = describe_segmenter(folder)
    assert [(c.name, c.modality) for c in info.channels] == [("FLAIR", "MR"), ("T1w", "MR"), ("noNorm", None)]
    assert info.names == {0: "background", 1: "whole tumor", 2: "tumor core", 3: "enhancing"}
    assert "region-based" in dict(info.details)["labels"]
    del dataset["regions_class_order"]
    (folder / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(SegmenterError, match="regions_class_order"):
        describe_segmenter(folder)


def test_unknown_folds_and_channel_count_are_one_sentence(nnunet_model, ours, shared_data) -> None:
    with pytest.raises(SegmenterError, match=r"no trained fold 3; its folds are 0$"):
        open_segmenter(nnunet_model, device="cpu", trust=True, folds="3")
    scan = io.read(shared_data / "ct_organs" / "ct.nii.gz")
    with pytest.raises(SegmenterError, match=r"takes 1 input channel\(s\) \(CT\), got 2"):
        ours.predict([scan, scan])


def test_cli_refuses_a_four_channel_model_given_one_scan_before_loading(nnunet_model, shared_data, tmp_path):
    four = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(nnunet_model, four)
    dataset = json.loads((four / "dataset.json").read_text())
    dataset["channel_names"] = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    (four / "dataset.json").write_text(json.dumps(dataset))
    (four / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a pickle: must never be opened")
    out = subprocess.run([_cli(), "segment", "--model", str(four), "--trust", "--input",
                          str(shared_data / "ct_organs" / "ct.nii.gz"), "--output", str(tmp_path / "m.nii.gz")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "takes 4 input channel(s) (T1, T1ce, T2, FLAIR); 1 given" in lines[0], out.stderr
    assert not (tmp_path / "m.nii.gz").exists()


# ---------------------------------------------------------------- agreement with nnU-Net's own predictor
@pytest.mark.parametrize("which", ["shared", "oblique", "permuted_flipped", "dicom"])
def test_masks_equal_nnunets_own_predictor(which, scans, ours, reference, tmp_path) -> None:
    scan = io.read(scans[which])
    if which == "dicom":
        expected = _reference_on_series(reference, scans[which])
    else:
        expected = _reference_on_file(reference, scans[which], tmp_path)
    labels = ours.predict([scan])
    assert labels.same_geometry(scan) and labels.same_geometry(expected)
    agree = float((labels.array == expected.array).mean())
    assert agree >= 0.999, f"{which}: {agree:.5f} of voxels agree"
    assert len(np.unique(expected.array)) >= 2  # the model paints something: agreement is not all background
    assert labels.metadata["classes"]["1"] == "liver"


def test_progress_then_cancel_between_windows(ours, scans) -> None:
    scan = io.read(scans["oblique"])
    events = list(predict_iter(ours, [scan]))
    fractions = [e.fraction for e in events if isinstance(e, SegmentProgress)]
    assert isinstance(events[-1], SegmentResult) and events[-1].names[3] == "kidney"
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 4
    cancel = threading.Event()

    def run_until_cancelled() -> None:
        for event in predict_iter(ours, [scan], cancel=cancel):
            if isinstance(event, SegmentProgress) and event.fraction > 0.05:
                cancel.set()

    with pytest.raises(SegmentationCancelled):
        run_until_cancelled()
    assert events[-1].labels.same_geometry(ours.predict([scan]))  # still usable after a cancel


# ---------------------------------------------------------------- the command line
def test_cli_segments_with_trust_and_refuses_without(nnunet_model, scans, ours, tmp_path) -> None:
    out_path = tmp_path / "mask.nii.gz"
    base = [_cli(), "segment", "--model", str(nnunet_model), "--input", str(scans["permuted_flipped"]),
            "--output", str(out_path), "--threads", "2", "--quiet"]
    refused = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and not out_path.exists()
    assert len(refused.stderr.strip().splitlines()) == 1 and "pickle" in refused.stderr
    done = subprocess.run([*base, "--trust", "--folds", "0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("napari-ssl segment: wrote") and "liver" in done.stdout
    scan = io.read(scans["permuted_flipped"])
    mask = io.read(out_path)
    assert mask.same_geometry(scan)
    assert np.array_equal(mask.array, ours.predict([scan]).array)
