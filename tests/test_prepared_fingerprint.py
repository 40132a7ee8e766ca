"""The plan's fingerprint of a large folder (issue 22): every file's grid from its header, the canonical shape and
spacing exactly as the decoded path measures them; only a bounded sample decoded; the headers cached."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssl import io
from napari_ssl.io.volume import Volume
from napari_ssl.plan import fingerprint, make_plan
from napari_ssl.preprocess import canonical, canonical_geometry, canonical_spacing
from napari_ssl.training import prepared_fingerprint as pf
from napari_ssl.training.prepared import find_sources

#: (z, y, x) directions: column j is the world direction of array axis j
DIRECTIONS = {
    "identity": np.eye(3),
    "permuted": np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]),
    "flipped": np.diag([-1.0, 1, -1]),
    "permuted and flipped": np.array([[0.0, -1, 0], [0, 0, 1], [-1, 0, 0]]),
    "improper": np.diag([1.0, -1, 1]),
    "oblique": np.array([[np.cos(0.2), -np.sin(0.2), 0], [np.sin(0.2), np.cos(0.2), 0], [0, 0, 1]]),
}


def _volume(shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int = 0,
            direction: np.ndarray | None = None) -> Volume:
    rng = np.random.default_rng(seed)
    array = rng.normal(100.0, 20.0, shape).astype(np.float32)
    array[:, :2] = 0.0  # some background
    return Volume(array, spacing, (1.0, -2.0, 3.0), np.eye(3) if direction is None else direction)


def _decoded(path: Path) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The canonical shape and spacing the decoded path measures (the plan's fingerprint of the read scan)."""
    volume = io.read(path)
    if volume.array.ndim == 4:
        volume = volume.with_array(volume.array[0])
    case = fingerprint([[volume]]).cases[0]
    return case.shape, case.spacing


def test_canonical_geometry_is_the_grid_canonical_makes() -> None:
    """Every axis permutation and flip (the 3-cycles too: canonical_spacing once gave their inverse)."""
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            direction = np.zeros((3, 3))
            for j, i in enumerate(perm):
                direction[i, j] = signs[j]
            volume = Volume(np.zeros((12, 16, 20), np.float32), (3.0, 1.0, 0.5), (0.0, 0.0, 0.0), direction)
            moved = canonical(volume)
            assert canonical_geometry(volume.spatial_shape, volume.spacing, direction) == (moved.spatial_shape,
                                                                                           moved.spacing)
            assert canonical_spacing(volume) == moved.spacing


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_the_header_gives_the_decoded_canonical_grid(tmp_path: Path, suffix: str) -> None:
    for k, (name, direction) in enumerate(DIRECTIONS.items()):
        path = io.write(_volume((12, 16, 20), (3.0, 1.0, 0.5), k, direction), tmp_path / f"{k}{suffix}")
        assert pf.header_geometry(path) == _decoded(path), name


def test_4d_files_count_their_spatial_grid_and_2d_or_unreadable_files_none(tmp_path: Path) -> None:
    frames = [_volume((10, 12, 14), (2.0, 1.0, 1.5), t, DIRECTIONS["permuted"]).to_sitk() for t in range(3)]
    series = tmp_path / "cine.nii.gz"
    sitk.WriteImage(sitk.JoinSeries(frames), str(series))
    assert io.read_header(series).frames == 3
    assert pf.header_geometry(series) == _decoded(series)
    flat = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((40, 50), np.int16)), str(flat))
    one = io.write(_volume((1, 16, 16), (1.0, 1.0, 1.0)), tmp_path / "one.nii.gz")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"this is no NIfTI header" * 40)
    assert io.read_header(flat).shape == (1, 40, 50)
    assert [pf.header_geometry(p) for p in (flat, one, corrupt, tmp_path / "missing.nii.gz")] == [None] * 4


class _Spy:
    """Counts calls of a function and passes them on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
        self.calls: list[str] = []
        real = getattr(owner, name)

        def spy(path: object, *args: object, **kwargs: object) -> object:
            self.calls.append(str(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(owner, name, spy)


def test_the_plan_follows_every_header_while_only_the_sample_is_decoded(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sampled scans at 1 mm, ten others at 2 mm: the plan's spacing is the median of all twelve headers (2 mm),
    only the two sampled scans are decoded, and a second call decodes and reads nothing."""
    monkeypatch.setattr(pf, "FINGERPRINT_SAMPLE", 2)
    data = tmp_path / "data"
    data.mkdir()
    paths = [data / f"s{i:02d}.nii.gz" for i in range(12)]
    sampled = set(pf._sample(paths))
    for i, path in enumerate(paths):
        spacing = (1.0, 1.0, 1.0) if path in sampled else (2.0, 2.0, 2.0)
        io.write(_volume((16, 16, 16), spacing, i, DIRECTIONS["flipped"]), path)
    sources, _ = find_sources([data])
    headers, decoded = _Spy(monkeypatch, io, "read_header"), _Spy(monkeypatch, io, "read_all")
    images = _Spy(monkeypatch, sitk, "ReadImage")
    cache = tmp_path / "cache"
    fp = pf.sampled_fingerprint(sources, cache)
    assert fp is not None
    assert sorted(decoded.calls) == sorted(map(str, sampled)) and len(images.calls) == 2
    assert sorted(headers.calls) == sorted(map(str, paths))  # one header read a file
    assert [c.spacing for c in fp.cases] == [(1.0, 1.0, 1.0)] * 2
    assert len(fp.headers) == 12 and fp.to_dict()["n_headers"] == 12 and fp.to_dict()["n_cases"] == 2
    assert fp.to_dict()["median_spacing"] == [2.0, 2.0, 2.0]
    plan = make_plan(fp)
    assert plan.spacing == (2.0, 2.0, 2.0) and plan.median_shape == (16, 16, 16)
    assert make_plan(replace(fp, headers=())).spacing == (1.0, 1.0, 1.0)  # the sample alone: its 1 mm

    headers.calls.clear(), decoded.calls.clear(), images.calls.clear()
    assert pf.sampled_fingerprint(sources, cache) == fp  # cached: nothing read again
    assert (headers.calls, decoded.calls, images.calls) == ([], [], [])

    changed = next(p for p in paths if p not in sampled)
    io.write(_volume((16, 16, 20), (2.0, 2.0, 2.0), 99), changed)
    again = pf.sampled_fingerprint(find_sources([data])[0], cache)
    assert headers.calls == [str(changed)] and decoded.calls == []  # only the changed file's header is read
    assert again is not None and again.headers[paths.index(changed)] == ((16, 16, 20), (2.0, 2.0, 2.0))


def test_dicom_folders_count_through_the_sample_and_small_folders_as_before(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           write_dicom_series) -> None:
    """A DICOM series folder has no header to read: it counts with its decoded grid when sampled, else not at all; a
    folder no larger than the sample is decoded whole and its fingerprint carries no headers."""
    monkeypatch.setattr(pf, "FINGERPRINT_SAMPLE", 2)
    data = tmp_path / "data"
    data.mkdir()
    k = 0
    while True:  # names for which the sample holds exactly one of the two series
        dicoms = [data / f"dcm{k}_a", data / f"dcm{k}_b"]
        files = [data / f"f{k}_{i}.nii.gz" for i in range(3)]
        if len(set(pf._sample([*dicoms, *files])) & set(dicoms)) == 1:
            break
        k += 1
    for i, folder in enumerate(dicoms):
        write_dicom_series(folder, _volume((8, 16, 16), (2.5, 1.0, 1.0), i).with_array(
            np.full((8, 16, 16), 100 + i, np.int16)))
    for i, path in enumerate(files):
        io.write(_volume((16, 16, 16), (1.5, 1.5, 1.5), i), path)
    sources, _ = find_sources([data])
    headers = _Spy(monkeypatch, io, "read_header")
    fp = pf.sampled_fingerprint(sources, tmp_path / "cache")
    assert fp is not None and sorted(headers.calls) == sorted(map(str, files))
    sampled_dicom = next(d for d in dicoms if d in set(pf._sample(sources)))
    expected = [((8, 16, 16), (2.5, 1.0, 1.0)) if s == sampled_dicom else ((16, 16, 16), (1.5, 1.5, 1.5))
                for s in sources if s in (*files, sampled_dicom)]
    assert list(fp.headers) == expected

    small = pf.sampled_fingerprint(files[:2], tmp_path / "cache2")
    assert small is not None and small.headers == () and "n_headers" not in small.to_dict()
    assert small == fingerprint([[io.read(p)] for p in files[:2]])
