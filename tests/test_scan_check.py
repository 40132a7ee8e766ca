"""A scan compared with a model's training fingerprint: one sentence for a mismatch, nothing for the same kind."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssl.inference.scan_check import (
    ScanCheck,
    ScanSummary,
    TrainedOn,
    check_scan,
    short_number,
    summarize_scan,
)
from napari_ssl.io.volume import Volume
from napari_ssl.meta import build
from napari_ssl.plan import fingerprint


def brain_mr(seed: int = 0, spacing=(1.0, 1.0, 1.0), scale: float = 2000.0) -> Volume:
    """A skull-stripped-MR-like volume: zero outside, an ellipsoid of tissue (0..``scale``) inside."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, 32)] * 3, indexing="ij")
    inside = z**2 / 0.7 + y**2 / 0.8 + x**2 / 0.6 < 1
    array = np.where(inside, rng.uniform(0.3, 1.0, inside.shape) * scale, 0).astype(np.float32)
    return Volume(array, spacing=spacing, name="t1", metadata={"modality": "MR"})


def ct(seed: int = 0, spacing=(1.0, 1.0, 1.0), offset: float = 0.0) -> Volume:
    """A CT-like volume: air at -1000 HU around a soft-tissue body (0..80 HU) holding bone (~1200 HU)."""
    rng = np.random.default_rng(seed)
    _, y, x = np.meshgrid(*[np.linspace(-1, 1, 32)] * 3, indexing="ij")
    body = y**2 / 0.8 + x**2 / 0.6 < 1
    array = np.full(body.shape, -1000.0) + rng.normal(0, 5, body.shape)
    array[body] = rng.uniform(0, 80, int(body.sum()))
    array[body & (np.abs(x) < 0.1) & (np.abs(y) < 0.1)] = 1200.0
    return Volume((array + offset).astype(np.int16), spacing=spacing, name="ct")


def trained_on(volumes, mode: str = "zscore_nonzero") -> TrainedOn:
    """What a segmenter trained on ``volumes`` records (the fingerprint fine-tuning writes into ``meta.json``)."""
    fp = fingerprint([[v] for v in volumes])
    meta = {"in_channels": 1, "channels": ["t1"], "fingerprint": fp.to_dict(), "normalization": {"mode": mode, **({"clip": [-1000.0, 1000.0]} if mode == "ct_zscore" else {})}}
    return TrainedOn.from_checkpoint(build("segment", **meta))


def test_fingerprint_measures_the_body_intensities() -> None:
    low = fingerprint([[brain_mr(scale=100.0)]]).to_dict()["foreground"]
    high = fingerprint([[brain_mr(scale=2000.0)]]).to_dict()["foreground"]
    assert high["p99_5"] == pytest.approx(20 * low["p99_5"], rel=1e-3)
    assert 0 < low["p00_5"] < low["p50"] < low["p99_5"] <= 100  # inside the body only: no zeros


def test_mr_model_warns_on_a_ct_in_one_sentence() -> None:
    model = trained_on([brain_mr(0), brain_mr(1)])
    check = check_scan(model, summarize_scan(ct()))
    assert check.error is None and check.warning is not None
    assert "trained on MR scans" in check.warning and "looks like a CT" in check.warning and "HU" in check.warning
    assert ". " not in check.warning and "\n" not in check.warning  # one sentence


def test_same_kind_of_scan_does_not_warn() -> None:
    mr_model = trained_on([brain_mr(0), brain_mr(1)])
    other_mr = summarize_scan(brain_mr(5, scale=900.0))  # MR scale differs from scanner to scanner: not warned
    assert other_mr.modality == "MR" and check_scan(mr_model, other_mr) == ScanCheck()
    ct_model = trained_on([ct(0), ct(1)], mode="ct_zscore")
    assert ct_model.modality == "CT" and ct_model.absolute
    assert check_scan(ct_model, summarize_scan(ct(7))).warning is None


def test_channel_count_mismatch_is_an_error() -> None:
    model = trained_on([brain_mr()])
    check = check_scan(model, summarize_scan([brain_mr(1), brain_mr(2)]))
    assert check.error is not None and "takes 1 input channel(s) (t1); 2 given" in check.error
    four_d = brain_mr().with_array(np.stack([brain_mr(1).array] * 3))
    assert summarize_scan(four_d).n_channels == 3


@pytest.mark.parametrize(("spacing", "warns"), [((1.0, 1.0, 1.0), False), ((2.5, 1.0, 1.0), False),
                                                ((3.5, 1.0, 1.0), True), ((1.0, 0.3, 0.3), True)])
def test_voxel_size_differing_more_than_3x_warns(spacing, warns) -> None:
    model = trained_on([brain_mr()])
    check = check_scan(model, summarize_scan(brain_mr(3, spacing=spacing)))
    assert (check.warning is not None) == warns
    if warns:
        assert "voxels 1 x 1 x 1 mm" in check.warning and "voxels " + " x ".join(map(short_number, spacing)) in \
            check.warning


def test_absolute_intensities_are_compared_only_where_the_model_reads_them() -> None:
    model = TrainedOn(modality="CT", spacing=(1.0, 1.0, 1.0), low=-100.0, high=1300.0, absolute=True)
    shifted = ScanSummary("CT", 1, (1.0, 1.0, 1.0), low=924.0, high=2324.0)  # stored without the -1024 rescale
    check = check_scan(model, shifted)
    assert check.warning is not None and "-100..1300 HU" in check.warning and "924..2324 HU" in check.warning
    per_scan = TrainedOn(modality="CT", spacing=(1.0, 1.0, 1.0), low=-100.0, high=1300.0, absolute=False)
    assert check_scan(per_scan, shifted).warning is None
    assert check_scan(model, ScanSummary("CT", 1, (1.0, 1.0, 1.0), low=-50.0, high=1200.0)).warning is None


def test_a_checkpoint_without_fingerprint_gives_no_warning() -> None:
    old = TrainedOn.from_checkpoint(build("segment", in_channels=1, normalization={"mode": "zscore"}))
    assert old.modality is None and old.spacing is None and old.low is None
    assert check_scan(old, summarize_scan(ct(spacing=(5.0, 0.5, 0.5)))).warning is None
    partial = TrainedOn.from_checkpoint(
        build("segment", in_channels=1, fingerprint={"modality": "MR", "median_spacing": [1, 1, 1]}))
    check = check_scan(partial, summarize_scan(ct()))  # no intensity range recorded: the scan's still said
    assert check.warning is not None and "looks like a CT (intensities" in check.warning


def test_short_numbers() -> None:
    assert [short_number(v) for v in (1.48595, 2.5, 3.0, 0.00031, -1000.4, 12.34, -0.001)] == \
        ["1.49", "2.5", "3", "0", "-1000", "12.3", "0"]
