"""The plan from the data: spacing, patch and normalisation on CT, isotropic MR and anisotropic MR; overrides win;
a thin scan is padded; training and inference prepare a scan identically."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssl import io
from napari_ssl.io.volume import Volume
from napari_ssl.plan import Plan, check_patch_size, fingerprint, make_plan
from napari_ssl.preprocess import Normalization, pad_to, prepare_channels


def test_plan_on_ct_uses_the_labelled_foreground(shared_data) -> None:
    ct = io.read(shared_data / "ct_organs" / "ct.nii.gz")
    labels = io.read(shared_data / "ct_organs" / "labels.nii.gz")
    fp = fingerprint([[ct]], [labels])
    assert fp.modality == "CT"
    plan = make_plan(fp, "cpu")
    norm = plan.normalization
    assert norm.mode == "ct_zscore"
    fg = ct.array[labels.array > 0]
    lo, hi = np.percentile(fg, (0.5, 99.5))
    assert norm.clip == pytest.approx((lo, hi), abs=5.0)  # nnU-Net: the foreground's 0.5-99.5 percentiles
    clipped = np.clip(fg, lo, hi)
    assert norm.mean == pytest.approx(clipped.mean(), rel=0.02) and norm.std == pytest.approx(clipped.std(), rel=0.02)
    assert plan.spacing == pytest.approx((3.0, 3.0, 3.0))  # the median spacing: small enough for the CPU budget
    assert all(p % 16 == 0 for p in plan.patch_size) and np.prod(plan.patch_size) <= 64**3
    assert plan.sources["spacing"] == "data" and "CT" in plan.describe()
    liver = make_plan(fingerprint([[ct]], [labels], label_ids={5}), "cpu").normalization  # only the classes trained
    assert liver.clip == pytest.approx(tuple(np.percentile(ct.array[labels.array == 5], (0.5, 99.5))), abs=5.0)
    assert liver.clip[0] > lo + 500  # the liver's window, not the lungs' air
    out = norm(ct.array)
    assert out.dtype == np.float32 and out.max() <= (hi - norm.mean) / norm.std + 1e-4


def test_plan_on_isotropic_brain_mr_coarsens_to_the_cpu_budget(shared_data) -> None:
    cases = sorted(p for p in (shared_data / "brats").iterdir() if p.is_dir())[:3]
    fp = fingerprint([[io.read(c / "flair.nii.gz")] for c in cases])
    assert fp.modality == "MR" and fp.cases[0].spacing == pytest.approx((1.0, 1.0, 1.0))
    plan = make_plan(fp, "cpu")
    assert plan.normalization.mode == "zscore_nonzero"
    assert plan.spacing[0] == pytest.approx(plan.spacing[1]) == pytest.approx(plan.spacing[2])
    assert 1.2 < plan.spacing[0] < 2.5  # coarsened from 1 mm so a 64^3 patch covers a large part of the brain
    assert plan.patch_size == (64, 64, 64) and plan.coverage > 0.2
    cuda = make_plan(fp, "cuda")  # a GPU's budget keeps the native grid
    assert cuda.spacing == pytest.approx((1.0, 1.0, 1.0)) and np.prod(cuda.patch_size) > 64**3


def test_plan_on_anisotropic_mr_and_padding_of_a_thin_scan(shared_data) -> None:
    scan = io.read(shared_data / "brain_tumor" / "image.nrrd")  # 25 slices of 6.5 mm, 0.78 mm in plane
    plan = make_plan(fingerprint([[scan]]), "cpu")
    assert plan.spacing[0] == pytest.approx(6.5, abs=0.01)  # the coarse axis keeps its spacing
    assert plan.spacing[1] < 1.5 and plan.spacing[1] == pytest.approx(plan.spacing[2])
    assert plan.patch_size[0] < plan.patch_size[1]  # the patch follows the anisotropy
    array, _ = prepare_channels([scan], spacing=plan.spacing, normalization=plan.normalization)
    padded = pad_to(array, plan.patch_size, [0.0])
    assert all(s >= p for s, p in zip(padded.shape[1:], plan.patch_size, strict=True))  # padded, never refused
    # a 23-slice scan with a 32-slice patch: padded to the patch, with the background, not refused
    thin = Volume(np.ones((23, 40, 40), np.float32) * 5, spacing=(6.5, 0.8, 0.8))
    over = make_plan(fingerprint([[thin]]), "cpu", patch_size=(32, 32, 32))
    arr, _ = prepare_channels([thin], spacing=over.spacing, normalization=Normalization(mode="none"))
    out = pad_to(arr, over.patch_size, [-1.0])
    assert out.shape == (1, 32, 40, 40) and np.all(out[0, 23:] == -1.0) and np.all(out[0, :23] == 5)


def test_overrides_win_and_are_recorded(shared_data) -> None:
    ct = io.read(shared_data / "ct_organs" / "ct.nii.gz")
    fp = fingerprint([[ct]])
    norm = Normalization(mode="ct", window=(-200, 300))
    plan = make_plan(fp, "cpu", spacing=(3, 6, 6), patch_size=32, batch_size=4, normalization=norm, steps=7,
                     backbone="tiny")
    assert plan.spacing == (3.0, 6.0, 6.0) and plan.patch_size == (32, 32, 32) and plan.batch_size == 4
    assert plan.normalization == norm and plan.steps == 7 and plan.backbone == "tiny"
    assert set(plan.sources.values()) == {"user"}
    inherited = make_plan(fp, "cpu", inherit={"spacing": [4.0, 4.0, 4.0], "normalization": norm.to_dict()})
    assert inherited.spacing == (4.0, 4.0, 4.0) and inherited.normalization == norm
    assert inherited.sources["spacing"] == inherited.sources["normalization"] == "checkpoint"
    assert Plan.from_dict(plan.to_dict()) == plan
    # a CPU that trains in bfloat16 runs twice the steps in the same time; the user's steps still win
    assert make_plan(fp, "cpu", mixed_precision=True).steps == 2 * make_plan(fp, "cpu").steps
    assert make_plan(fp, "cpu", mixed_precision=True, steps=7).steps == 7
    assert make_plan(fp, "cuda", mixed_precision=True).steps == make_plan(fp, "cuda").steps
    with pytest.raises(ValueError, match="multiples of 16"):
        check_patch_size((32, 40, 32))


def test_normalisation_is_in_place_float32_and_masks_the_background() -> None:
    rng = np.random.default_rng(0)
    brain = np.zeros((20, 30, 30), np.int16)
    brain[5:15, 5:25, 5:25] = rng.integers(100, 400, (10, 20, 20))
    out = Normalization(mode="zscore_nonzero")(brain)
    inside = brain != 0
    assert out.dtype == np.float32 and np.all(out[~inside] == 0)
    assert abs(out[inside].mean()) < 0.05 and out[inside].std() == pytest.approx(1.0, abs=0.05)
    assert brain.dtype == np.int16 and brain[0, 0, 0] == 0  # the input is untouched


def test_training_and_inference_prepare_a_scan_identically(shared_data, tmp_path) -> None:
    """The fine-tuning case preparation and segmentation's preparation give equal arrays on the same scan."""
    from napari_ssl.classes import parse_classes
    from napari_ssl.training.finetune import prepare_case

    case = sorted(p for p in (shared_data / "brats").iterdir() if p.is_dir())[0]
    scan, seg = io.read(case / "flair.nii.gz"), io.read(case / "seg.nii.gz")
    plan = make_plan(fingerprint([[scan]], [seg]), "cpu")
    train = prepare_case([scan], seg, parse_classes("whole_tumor=1+2+4"), plan.spacing, plan.normalization)
    infer, grid = prepare_channels([scan], spacing=plan.spacing, normalization=plan.normalization)
    np.testing.assert_array_equal(train.image, infer)
    assert train.labels.shape == infer.shape[1:] and grid.spacing == pytest.approx(plan.spacing)
    assert 0 < train.labels.mean() < 0.2
