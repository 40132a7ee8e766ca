"""Data pipeline: normalisation, resampling, loading from paths / arrays / volumes, caching, reproducible samples."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from napari_ssl.io.volume import Volume
from napari_ssl.pretext import ContextRestoration, ImagingPlanes, RubikCube
from napari_ssl.training import data
from napari_ssl.training.data import (
    Normalization,
    PretextDataset,
    SampleSpec,
    load_volumes,
    resample,
    split_volumes,
)


def test_normalization_modes() -> None:
    x = np.linspace(-2000, 3000, 1000, dtype=np.float32).reshape(10, 10, 10)
    ct = Normalization(mode="ct", window=(-1000, 1000))(x)
    assert ct.dtype == np.float32 and ct.min() == -1.0 and ct.max() == 1.0
    z = Normalization()(x)
    assert abs(float(z.mean())) < 1e-4 and float(z.std()) == pytest.approx(1.0, abs=1e-3)
    mm = Normalization(mode="minmax", percentiles=(0, 100))(x)
    assert mm.min() == pytest.approx(-1) and mm.max() == pytest.approx(1)
    np.testing.assert_array_equal(Normalization(mode="none")(x), x)
    flat = Normalization()(np.full((4, 4, 4), 7, np.int16))
    assert np.isfinite(flat).all()
    n = Normalization(mode="ct", window=(-100, 200))
    assert Normalization.from_dict(n.to_dict()) == n
    for bad, match in [
        ({"mode": "hu"}, "mode must be one of"),
        ({"window": (5, 1)}, "low < high"),
        ({"percentiles": (50, 150)}, "percentiles"),
    ]:
        with pytest.raises(ValueError, match=match):
            Normalization(**bad)


def test_resample_image_and_labels() -> None:
    vol = Volume(
        np.arange(8 * 10 * 12, dtype=np.float32).reshape(8, 10, 12), spacing=(4.0, 1.0, 1.0), origin=(1, 2, 3)
    )
    out = resample(vol, (2.0, 2.0, 2.0))
    assert out.spatial_shape == (16, 5, 6) and out.spacing == (2.0, 2.0, 2.0) and out.origin == vol.origin
    labels = Volume((np.indices((8, 10, 12))[2] > 5).astype(np.uint8) * 3, spacing=(4.0, 1.0, 1.0))
    lab = resample(labels, 2.0, interpolation="nearest")
    assert set(np.unique(lab.array)) == {0, 3} and lab.array.dtype == np.uint8
    assert resample(vol, (4.0, 1.0, 1.0)) is vol
    with pytest.raises(ValueError, match="positive"):
        resample(vol, (0, 1, 1))


def test_load_from_folder_arrays_and_volumes(shared_data: Path) -> None:
    data.clear_cache()
    vols = load_volumes([shared_data / "brain_tumor"])  # a folder: image.nrrd and label.nrrd
    assert len(vols) == 2 and all(v.array.dtype == np.float32 for v in vols)
    again = load_volumes([shared_data / "brain_tumor"])
    assert again[0] is vols[0]  # decoded once, then cached
    arr = np.random.default_rng(0).normal(size=(20, 21, 22))
    mixed = load_volumes([arr, Volume(arr, spacing=(2, 2, 2))], spacing=(4.0, 4.0, 4.0))
    assert [v.spatial_shape for v in mixed] == [(5, 5, 6), (10, 10, 11)]
    series = load_volumes([np.zeros((3, 8, 8, 8))])  # a 4D series: one volume per frame
    assert len(series) == 3
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_volumes([shared_data / "missing"])
    with pytest.raises(ValueError, match="must be 3D"):
        load_volumes([np.zeros((8, 8))])
    with pytest.raises(ValueError, match="no data given"):
        load_volumes([])


def test_dicom_folder_found_recursively(shared_data: Path) -> None:
    vols = load_volumes([shared_data / "cardiac_views"])
    assert len(vols) > 3 and any(v.is_plane for v in vols)


def test_split_volumes() -> None:
    vols = [Volume(np.zeros((4, 4, 4)), name=str(i)) for i in range(5)]
    train, val = split_volumes(vols, 0.2, seed=0)
    assert len(train) == 4 and len(val) == 1 and not {v.name for v in train} & {v.name for v in val}
    assert split_volumes(vols, 0.2, seed=0) == (train, val)
    one_train, one_val = split_volumes(vols[:1], 0.5, seed=0)
    assert one_train == one_val == vols[:1]


def _dataset(volumes: list[Volume], seed: int = 0) -> PretextDataset:
    tasks = {
        "rubik": RubikCube(gap=2, n_permutations=10),
        "context": ContextRestoration(patch_size=4),
        "planes": ImagingPlanes(n_stack=2, n_oblique=1, size=16),
    }
    return PretextDataset(volumes, SampleSpec(patch=(32, 32, 32), pretexts=tasks), seed=seed, length=100)


def test_samples_are_reproducible_per_index() -> None:
    vol = Volume(np.random.default_rng(0).normal(size=(40, 44, 48)).astype(np.float32))
    ds = _dataset([vol])
    a, b, c = ds[5], ds[5], ds[6]
    assert set(a) == {
        "rubik.cubes",
        "rubik.perm",
        "rubik.rot",
        "context.input",
        "context.target",
        "planes.images",
        "planes.heatmaps",
        "planes.has_line",
        "planes.position",
        "planes.position_mask",
    }
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["context.target"], c["context.target"])
    assert a["rubik.cubes"].shape == (8, 1, 14, 14, 14)
    assert a["planes.images"].shape == (3, 1, 16, 16) and a["planes.heatmaps"].shape == (3, 3, 16, 16)
    assert not np.array_equal(a["context.input"], a["context.target"])
    assert not np.array_equal(_dataset([vol], seed=1)[5]["context.target"], a["context.target"])


def test_with_more_scans_than_a_process_maps_samples_draw_from_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of scans: consecutive samples draw from a window of at most MAPPED_SCANS scans, SCAN_VISITS samples
    per scan of it, so a loader worker maps a scan once for several samples; a pass still draws every scan equally
    often, passes shuffle differently, and at most MAPPED_SCANS scans the draw is the uniform one it always was."""
    monkeypatch.setattr(data, "MAPPED_SCANS", 3)
    visits = data.SCAN_VISITS
    volumes = [Volume(np.full((12, 12, 12), k, np.float32)) for k in range(8)]
    spec = SampleSpec(patch=(8, 8, 8), pretexts={"context": ContextRestoration(patch_size=2)})
    ds = PretextDataset(volumes, spec, seed=4, length=10**6)
    one_pass = 8 * visits
    draws = [ds.scan_of(i, np.random.default_rng([4, i])) for i in range(2 * one_pass)]
    bounds = [0, 2, 5, 8]  # three windows of 2, 3 and 3 scans (8 scans, at most 3 a window)
    partitions = []
    for p in range(2):
        seen = []
        for lo, hi in itertools.pairwise(bounds):
            window = draws[p * one_pass + lo * visits: p * one_pass + hi * visits]
            assert len(set(window)) <= 3  # a window's samples come from its scans only
            seen.append(frozenset(window))
        assert set().union(*seen) == set(range(8))  # a pass draws from every scan
        assert sum(len(w) for w in seen) == 8  # and its windows are disjoint
        partitions.append(set(seen))
    assert partitions[0] != partitions[1]  # each pass shuffles the scans again
    # over many passes every scan is drawn equally often: about SCAN_VISITS times a pass
    counts = np.bincount([ds.scan_of(i, np.random.default_rng([4, i])) for i in range(200 * one_pass)], minlength=8)
    assert counts.min() > 0.85 * 200 * visits and counts.max() < 1.15 * 200 * visits
    # the item uses the draw: each scan is a constant, so a sample's target says which scan it came from
    for i in (0, 1, visits * 2 + 3, one_pass + 7):
        assert float(ds[i]["context.target"].mean()) == pytest.approx(ds.scan_of(i, np.random.default_rng([4, i])))
    # windowed=False, and any dataset of at most MAPPED_SCANS scans: the uniform draw of every earlier run
    uniform = PretextDataset(volumes, spec, seed=4, length=100, windowed=False)
    few = PretextDataset(volumes[:3], spec, seed=4, length=100)
    for i in range(20):
        assert uniform.scan_of(i, np.random.default_rng([4, i])) == int(np.random.default_rng([4, i]).integers(0, 8))
        assert few.scan_of(i, np.random.default_rng([4, i])) == int(np.random.default_rng([4, i]).integers(0, 3))


def test_scan_smaller_than_the_patch_is_padded_not_refused() -> None:
    small = Volume(np.arange(30 * 40 * 40, dtype=np.float32).reshape(30, 40, 40) + 5, name="small.nii.gz")
    ds = _dataset([small])
    padded = ds._volumes_3d[0]
    assert padded.spatial_shape == (32, 40, 40)
    np.testing.assert_array_equal(padded.array[:30], small.array)
    assert np.all(padded.array[30:] == small.array.min())  # the scan's background, not 0
    sample = ds[0]
    assert sample["context.input"].shape[-3:] == (32, 32, 32)
    with pytest.raises(ValueError, match="only 2D images"):
        _dataset([Volume(np.zeros((1, 40, 40), np.float32))])


def test_crop_keeps_image_and_labels_aligned() -> None:
    image = np.arange(10 * 11 * 12).reshape(10, 11, 12)
    labels = image * 2
    corner = data.random_corner(image.shape, (4, 5, 6), np.random.default_rng(3))
    a, b = data.crop([image, labels], corner, (4, 5, 6))
    assert a.shape == (4, 5, 6)
    np.testing.assert_array_equal(b, a * 2)


def test_foreground_guides_patches_and_swaps_onto_the_body() -> None:
    """A body in one corner of a large empty volume: with ``foreground`` every patch is centred on it and the
    context swaps sit inside it; without, most patches are air."""
    array = np.zeros((64, 96, 96), np.float32)
    rng = np.random.default_rng(0)
    array[4:40, 6:46, 50:90] = rng.normal(5.0, 1.0, (36, 40, 40))  # the body: nonzero
    vol = Volume(array, name="corner")
    tasks = {"context": ContextRestoration(patch_size=4, n_swaps=3)}
    guided = PretextDataset([vol], SampleSpec(patch=(32, 32, 32), pretexts=tasks, foreground=True), seed=0, length=50)
    plain = PretextDataset([vol], SampleSpec(patch=(32, 32, 32), pretexts=tasks), seed=0, length=50)
    body = [float((guided[i]["context.target"] != 0).mean()) for i in range(20)]
    air = [float((plain[i]["context.target"] != 0).mean()) for i in range(20)]
    assert min(body) > 0.2 and np.mean(body) > 0.5
    assert np.mean(air) < np.mean(body) - 0.2
    sample = guided[3]
    changed = sample["context.input"] != sample["context.target"]
    assert changed.any() and (sample["context.target"][changed] != 0).mean() > 0.5  # the swaps happen on the body
