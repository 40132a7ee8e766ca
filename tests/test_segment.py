"""Inference: geometry round trips, memory-bounded slabs, bad inputs, the CLI finetune / segment commands."""

from __future__ import annotations

import numpy as np
import pytest
from test_segment_shared import liver_model, phantom, random_checkpoint

from napari_ssl import io
from napari_ssl.checkpoint import CheckpointError
from napari_ssl.cli import main
from napari_ssl.inference.segment import (
    SegmentationCancelled,
    SegmentProgress,
    SegmentResult,
    canonical,
    load_model,
    predict_labels,
    segment,
    segment_iter,
)
from napari_ssl.io.volume import Volume


def _reoriented(volume: Volume) -> Volume:
    """The same voxels with axes permuted and flipped (a different array, the same world positions)."""
    array = np.transpose(volume.array, (0, 2, 1))[:, ::-1, :]
    perm = volume.direction[:, [0, 2, 1]].copy()
    perm[:, 1] *= -1
    spacing = (volume.spacing[0], volume.spacing[2], volume.spacing[1])
    origin = volume.index_to_world([0, 0, volume.spatial_shape[2] - 1])  # new (i, j, k) = old (i, k, nx-1-j)
    out = Volume(np.ascontiguousarray(array), spacing=spacing, origin=tuple(origin), direction=perm, name="copy")
    assert np.allclose(out.index_to_world([1, 2, 3]), volume.index_to_world([1, 3, volume.spatial_shape[2] - 1 - 2]))
    return out


def test_canonical_keeps_world_positions() -> None:
    image, _ = phantom()
    can = canonical(image)
    assert np.allclose(can.direction, np.eye(3))
    idx = np.array([3, 5, 7])
    world = image.index_to_world(idx)
    back = np.round(can.world_to_index(world)).astype(int)
    assert can.array[tuple(back)] == image.array[tuple(idx)]


def test_segment_random_model_lands_on_the_scan_grid(tmp_path) -> None:
    """A seeded random network is a deterministic function of the voxels: a permuted/flipped copy of the scan
    gives the same mask at the same world positions; the output has the scan's exact geometry."""
    model = load_model(random_checkpoint(tmp_path / "m", spacing=(2.0, 1.5, 1.5)))
    image, _ = phantom()
    mask = segment(image, model, overlap=0.25)
    assert mask.same_geometry(image) and mask.array.dtype == np.uint8 and mask.name == "phantom masks"
    assert set(np.unique(mask.array)) <= {0, 1} and 0 < mask.array.mean() < 1
    copy = _reoriented(image)
    mask2 = segment(copy, model, overlap=0.25)
    assert mask2.same_geometry(copy)
    np.testing.assert_array_equal(np.transpose(mask2.array, (0, 2, 1))[:, :, ::-1], mask.array)


def test_slabs_match_whole_volume(tmp_path) -> None:
    import torch

    from napari_ssl.models import BackboneSpec, build_unet

    torch.manual_seed(0)
    net = build_unet(BackboneSpec(size="tiny"), out_channels=3).eval()
    image, _ = phantom(shape=(80, 32, 32))
    x = ((image.array - 50.0) / 50.0).astype(np.float32)[None]
    whole = predict_labels(net, x, roi=(32, 32, 32), n_classes=3, overlap=0.25)
    slabs = predict_labels(net, x, roi=(32, 32, 32), n_classes=3, overlap=0.25, max_memory_mb=0.5)
    assert whole.shape == (80, 32, 32)
    assert (whole == slabs).mean() > 0.95  # slab seams only change near-ties of the Gaussian blending


def test_segment_iter_progress_and_cancel(tmp_path) -> None:
    model = load_model(random_checkpoint(tmp_path / "m"))
    image, _ = phantom(shape=(40, 40, 40))
    evs = list(segment_iter(image, model, overlap=0.5))
    assert isinstance(evs[-1], SegmentResult) and evs[-1].names == {0: "background", 1: "lesion"}
    fractions = [e.fraction for e in evs if isinstance(e, SegmentProgress)]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    gen = segment_iter(image, model, overlap=0.5)
    assert isinstance(next(gen), SegmentProgress)
    gen.close()  # the helper thread stops before its next window
    with pytest.raises(SegmentationCancelled):
        segment(image, model, should_stop=lambda: True)


def test_bad_inputs(tmp_path) -> None:
    from napari_ssl import checkpoint

    image, _ = phantom()
    pre = checkpoint.save(tmp_path / "pre", {}, {"kind": "pretrain", "pretexts": ["rubik"]})
    with pytest.raises(CheckpointError, match="no segmentation head"):
        load_model(pre)
    two = load_model(random_checkpoint(tmp_path / "two", in_channels=2))
    with pytest.raises(ValueError, match=r"expects 2 input channel\(s\) \(ch0, ch1\), got 1"):
        segment(image, two)
    one = load_model(random_checkpoint(tmp_path / "one"))
    with pytest.raises(ValueError, match="2D image"):
        segment(image.with_array(image.array[:1]), one)
    with pytest.raises(ValueError, match="overlap"):
        segment(image, one, overlap=1.0)
    bad = random_checkpoint(tmp_path / "bad")
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5:] = b"XXXXX"
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_model(bad)
    weights.write_bytes(bytes(data[:100]))
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(bad)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nothing")


def test_cli_segment_writes_aligned_mask_and_reports_errors(tmp_path, capsys) -> None:
    image, _ = phantom()
    scan = io.write(image, tmp_path / "scan.nrrd")
    model = random_checkpoint(tmp_path / "m")
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", "--model", str(model), "--input", str(scan), "--output", str(out), "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    mask = io.read(out)
    assert mask.same_geometry(io.read(scan)) and mask.array.dtype == np.uint8
    pre = tmp_path / "pre"
    from napari_ssl import checkpoint

    checkpoint.save(pre, {}, {"kind": "pretrain"})
    assert main(["segment", "--model", str(pre), "--input", str(scan), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no segmentation head" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["segment", "--model", str(model), "--input", str(scan), "--output", str(tmp_path / "m.png")]) == 2


def test_cli_finetune_then_segment(tmp_path, capsys) -> None:
    image, labels = phantom(shape=(34, 36, 36))
    img = io.write(image, tmp_path / "img.nii.gz")
    lab = io.write(labels, tmp_path / "lab.nii.gz")
    code = main(["finetune", "--pretrained", "none", "--images", str(img), "--labels", str(lab), "--classes", "lesion=1",
                 "--out", str(tmp_path / "seg"), "--steps", "2", "--backbone", "tiny", "--patch-size", "32",
                 "--device", "cpu", "--quiet", "--val-fraction", "0.2"])  # one case: its last fifth of slices held out
    assert code == 0
    assert "validation Dice: lesion" in capsys.readouterr().out
    assert main(["segment", "--model", str(tmp_path / "seg"), "--input", str(img), "--output",
                 str(tmp_path / "mask.mha"), "--quiet"]) == 0
    assert io.read(tmp_path / "mask.mha").same_geometry(image)
    assert main(["finetune", "--pretrained", "none", "--images", str(img), "--labels", str(tmp_path / "x.nii.gz"),
                 "--classes", "1", "--out", str(tmp_path / "s2")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_liver_mask_lands_on_the_same_physical_voxels(shared_data, tmp_path_factory) -> None:
    """The liver model on the CT, and on a resampled + re-oriented copy: masks agree in world space."""
    from napari_ssl.inference.segment import back_to_grid
    from napari_ssl.training.data import resample
    from napari_ssl.training.finetune import dice_per_class, parse_classes, remap_labels

    path, _ = liver_model(shared_data, tmp_path_factory.mktemp("liver"))
    model = load_model(path)
    ct = io.read(shared_data / "ct_organs" / "ct.nii.gz")
    truth = io.read(shared_data / "ct_organs" / "labels.nii.gz")
    mask = segment(ct, model, overlap=0.25)
    assert mask.same_geometry(ct)
    copy = resample(_reoriented(ct), (2.5, 2.0, 3.5))
    mask2 = segment(copy, model, overlap=0.25)
    assert mask2.same_geometry(copy)
    on_ct = back_to_grid(mask2, ct)  # the copy's mask brought back by world position
    agree = dice_per_class(on_ct.array, mask.array, parse_classes("liver=1"))["liver"]
    assert agree > 0.85
    liver = remap_labels(truth.array, parse_classes("5"))
    whole = dice_per_class(mask.array, liver, parse_classes("5"))["class_5"]
    print(f"liver Dice on the whole scan (train + held-out slices): {whole:.3f}; copy vs original {agree:.3f}")
    assert whole > 0.45
