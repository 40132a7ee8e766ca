"""The prepared dataset (issue 22): samples equal the in-RAM path's, entries keyed by file identity and plan, a killed
build resumes, unreadable files are listed and skipped, a full disk is one sentence and leaves no complete-looking
entry, and ``pretrain`` uses it by default."""

from __future__ import annotations

import errno
import gzip
import itertools
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_ssl import events
from napari_ssl.preprocess import Normalization
from napari_ssl.pretext import registry
from napari_ssl.training import prepared_entry
from napari_ssl.training.data import PretextDataset, SampleSpec, load_volumes
from napari_ssl.training.prepared import MANIFEST, SKIPPED, prepare_dataset

NORM = Normalization(mode="zscore")


@pytest.fixture(scope="module")
def scans(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two small real scans (CT, MR) copied to a folder the tests may touch."""
    folder = tmp_path_factory.mktemp("scans")
    out = []
    for rel, name in (("ct_organs/ct.nii.gz", "a_ct.nii.gz"), ("mr_organs/mr.nii.gz", "b_mr.nii.gz")):
        shutil.copy(shared_data / rel, folder / name)
        out.append(folder / name)
    return out


def _entries(folder: Path) -> set[str]:
    return {p.parent.name for p in folder.glob(f"*/{MANIFEST}")}


def test_samples_equal_the_in_ram_path(shared_data: Path, tmp_path: Path) -> None:
    """Every pretext's sample i is the same array from the memory maps as from the scans in RAM (same scan, plan,
    seed and index), with and without the body mask, resampled or not, padded or not, subsampled centres too."""
    paths = [shared_data / "ct_organs/ct.nii.gz", shared_data / "mr_organs/mr.nii.gz"]
    cases = [(paths, (4.0, 4.0, 4.0)),  # resampled; MR (15 slices) smaller than the patch: padded
             ([shared_data / "ct_unlabeled/ct_thorax_abdomen.nii.gz"], None)]  # > 20,000 centres: subsampled
    for k, (sources, spacing) in enumerate(cases):
        ds = prepare_dataset(sources, spacing, NORM, tmp_path / str(k), workers=1)
        if spacing is None:
            assert ds.scans[0].n_centres > 20000
        ram = load_volumes(sources, spacing=spacing, normalization=NORM, cache=False)
        assert [s.shape for s in ds.scans] == [v.spatial_shape for v in ram]
        for name in registry.names():
            task = registry.get(name).make(registry.get(name).default_options(32))
            for foreground in (True, False):
                spec = SampleSpec(patch=(32, 32, 32), pretexts={name: task}, foreground=foreground)
                a, b = PretextDataset(ram, spec, 7, 50), PretextDataset(list(ds.scans), spec, 7, 50)
                for i in (0, 1, 2, 3, 17):
                    x, y = a[i], b[i]
                    assert x.keys() == y.keys()
                    for key in x:
                        assert np.array_equal(np.asarray(x[key]), np.asarray(y[key])), (name, foreground, i, key)


def test_a_process_keeps_a_bounded_number_of_scans_mapped(scans: list[Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of scans must not mean thousands of open files per loader worker (1,024 is a common limit): the
    least recently used scans are unmapped, and a scan mapped again gives the same samples. With more scans than a
    process keeps mapped, samples draw from a window of scans, so a scan is mapped once for several samples."""
    from napari_ssl.training import data
    from napari_ssl.training.prepared import PreparedScan

    monkeypatch.setattr(data, "MAPPED_SCANS", 1)
    ds = prepare_dataset(scans, (4.0, 4.0, 4.0), NORM, tmp_path / "cache", workers=1)
    task = registry.get("context").make(registry.get("context").default_options(8))
    spec = SampleSpec(patch=(8, 8, 8), pretexts={"context": task}, foreground=True)  # both scans larger: mapped
    in_ram = load_volumes(scans, spacing=(4.0, 4.0, 4.0), normalization=NORM, cache=False)
    ram = PretextDataset(in_ram, spec, 3, 40)
    opened = []
    original_open = PreparedScan.open
    monkeypatch.setattr(PreparedScan, "open", lambda scan: opened.append(scan.array) or original_open(scan))
    mapped = PretextDataset(list(ds.scans), spec, 3, 40)
    uniform = PretextDataset(list(ds.scans), spec, 3, 40, windowed=False)
    fds = len(os.listdir("/proc/self/fd"))
    samples = 2 * data.SCAN_VISITS  # one pass: each scan's window in turn
    for i in range(samples):
        x, y = ram[i], mapped[i]
        assert len(mapped._opened) == 1
        assert all(np.array_equal(np.asarray(x[k]), np.asarray(y[k])) for k in x), i
    assert len(set(opened)) == 2 and len(opened) == 2  # both scans mapped, each once for its window's samples
    assert len(os.listdir("/proc/self/fd")) <= fds + 3  # one scan's array, mask and centres
    opened.clear()
    draws = [uniform.scan_of(i, np.random.default_rng([3, i])) for i in range(samples)]
    ram_uniform = PretextDataset(in_ram, spec, 3, 40, windowed=False)
    for i in range(samples):  # scans unmapped and mapped again give the same samples
        x, y = ram_uniform[i], uniform[i]
        assert all(np.array_equal(np.asarray(x[k]), np.asarray(y[k])) for k in x), i
    switches = 1 + sum(a != b for a, b in itertools.pairwise(draws))
    assert len(opened) == switches > 2  # the uniform draw maps a scan again at each switch


def test_entries_are_mapped_as_np_load_reads_them(tmp_path: Path) -> None:
    """The header-free map equals ``np.load``; a file of the wrong size is one sentence, not garbage."""
    from napari_ssl.training.prepared import map_npy

    for array in (np.arange(60, dtype=np.float32).reshape(3, 4, 5), np.zeros((2, 3, 4), bool) | (np.arange(4) > 1),
                  np.arange(12, dtype=np.int32).reshape(4, 3)):
        np.save(tmp_path / "a.npy", array)
        mapped = map_npy(str(tmp_path / "a.npy"), array.shape, array.dtype)
        assert mapped.dtype == array.dtype and np.array_equal(mapped, array) and not mapped.flags.writeable
    np.save(tmp_path / "b.npy", np.zeros((3, 4, 4), np.float32))  # the manifest says 5 columns, the file has 4
    with pytest.raises(ValueError, match="damaged; delete its folder"):
        map_npy(str(tmp_path / "b.npy"), (3, 4, 5), np.float32)


def test_identity_rebuilds_only_what_changed(scans: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    first = prepare_dataset(scans, None, NORM, folder, workers=2)  # the process pool
    assert (first.built, first.reused, len(first.scans)) == (2, 0, 2)
    again = prepare_dataset(scans, None, NORM, folder, workers=2)
    assert (again.built, again.reused) == (0, 2)
    assert [s.array for s in again.scans] == [s.array for s in first.scans]
    one = np.load(first.scans[0].array)
    stat = scans[0].stat()
    os.utime(scans[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: a new identity
    touched = prepare_dataset(scans, None, NORM, folder, workers=1)
    assert (touched.built, touched.reused, touched.removed) == (1, 1, 1)  # the old version of a: removed
    assert touched.scans[0].array != first.scans[0].array and touched.scans[1].array == first.scans[1].array
    assert np.array_equal(np.load(touched.scans[0].array), one)
    assert not Path(first.scans[0].array).exists()
    other_plan = prepare_dataset(scans, (4.0, 4.0, 4.0), NORM, folder, workers=1)
    assert (other_plan.built, other_plan.removed) == (2, 0)
    assert len(_entries(folder)) == 4  # two plans of a and b: nothing overwritten, no other plan's entry removed


def test_a_killed_build_resumes(scans: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    done = prepare_dataset(scans, None, NORM, folder, workers=1)
    killed = Path(done.scans[1].array).parent
    (killed / MANIFEST).unlink()  # killed before its manifest: never taken as complete
    stale = folder / f".tmp-{Path(done.scans[0].array).parent.name}-99999999"  # a dead build's temporary folder
    stale.mkdir()
    (stale / "0.npy").write_bytes(b"half")
    resumed = prepare_dataset(scans, None, NORM, folder, workers=1)
    assert (resumed.built, resumed.reused) == (1, 1)
    assert not stale.exists() and (killed / MANIFEST).is_file()
    assert np.load(resumed.scans[1].array).shape == done.scans[1].shape


def _junk_folder(scans: list[Path], folder: Path) -> Path:
    import SimpleITK as sitk

    folder.mkdir()
    for scan in scans:
        shutil.copy(scan, folder / scan.name)
    (folder / "notes.txt").write_text("not a scan\n")
    data = scans[0].read_bytes()
    (folder / "truncated.nii.gz").write_bytes(data[: len(data) // 3])
    (folder / "corrupt.nii.gz").write_bytes(gzip.compress(b"this is no NIfTI header" * 40))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((40, 50), np.int16)), str(folder / "slice.nii.gz"))
    return folder


def test_unreadable_files_are_listed_and_training_goes_on(scans: list[Path], tmp_path: Path) -> None:
    from napari_ssl.training.pretrain import PretrainConfig, pretrain

    data = _junk_folder(scans, tmp_path / "data")
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    folder = tmp_path / "cache"
    ds = prepare_dataset([data], None, NORM, folder, workers=1)
    assert [Path(s.source).name for s in ds.scans] == ["a_ct.nii.gz", "b_mr.nii.gz"]
    reasons = {Path(s.path).name: s.reason for s in ds.skipped}
    assert set(reasons) == {"notes.txt", "truncated.nii.gz", "corrupt.nii.gz", "slice.nii.gz"}
    assert "not a scan" in reasons["notes.txt"] and "2D image" in reasons["slice.nii.gz"]
    listed = (folder / SKIPPED).read_text().splitlines()
    assert sorted(Path(line.split("\t")[0]).name for line in listed) == sorted(reasons)
    assert all("\n" not in r and r for r in reasons.values())
    cfg = PretrainConfig(pretexts=("context",), data=(str(data),), out=str(tmp_path / "run"), steps=2, batch_size=1,
                         patch_size=32, backbone="tiny", num_threads=1, num_workers=0, val_samples=1,
                         cache=str(folder))
    seen = list(pretrain(cfg))
    final = [e for e in seen if isinstance(e, events.Preparing) and e.final]
    assert len(final) == 1 and final[0].skipped == 4 and "corrupt.nii.gz" in final[0].summary
    assert isinstance(seen[-1], events.Finished) and seen[-1].step == 2
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before  # nothing the user owns was written


def test_disk_full_is_one_sentence_and_no_entry_is_complete(scans: list[Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = prepared_entry._write_npy

    def full(path: Path, array: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] == 5:  # the second scan's array: the first entry is complete, the second half-written
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, array)

    monkeypatch.setattr(prepared_entry, "_write_npy", full)
    folder = tmp_path / "cache"
    with pytest.raises(OSError, match=r"^\[Errno 28\] the disk is full: preparing .*b_mr\.nii\.gz in .* stopped") as info:
        prepare_dataset(scans, None, NORM, folder, workers=1)
    assert "\n" not in str(info.value)
    assert len(_entries(folder)) == 1  # the first scan's entry only
    assert not list(folder.glob(".tmp-*"))  # the partial entry was removed
    monkeypatch.setattr(prepared_entry, "_write_npy", real)
    assert prepare_dataset(scans, None, NORM, folder, workers=1).built == 1  # the next build completes it


def test_pretrain_from_the_cache_equals_the_in_ram_run(scans: list[Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The same losses step by step with and without the prepared dataset; the CLI prepares by default (a progress
    line), reuses the folder on the next run, and ``--no-cache`` writes none."""
    from napari_ssl import cli
    from napari_ssl.training.pretrain import PretrainConfig, pretrain

    def losses(**kw: object) -> list[float]:
        cfg = PretrainConfig(pretexts=("rubik", "context"), data=tuple(str(s) for s in scans), steps=3,
                             batch_size=1, patch_size=32, backbone="tiny", num_threads=1, num_workers=0,
                             val_samples=1, amp=False, **kw)  # type: ignore[arg-type]
        return [e.loss for e in pretrain(cfg) if isinstance(e, events.Progress)]

    cached = losses(out=str(tmp_path / "a"))
    assert len(cached) == 3
    assert (tmp_path / "a.prepared").is_dir()
    assert cached == losses(out=str(tmp_path / "b"), use_cache=False)
    assert not (tmp_path / "b.prepared").exists()
    tiny = ["--pretext", "context", "--steps", "1", "--batch-size", "1", "--patch-size", "32", "--backbone", "tiny",
            "--threads", "1", "--val-samples", "1", "--workers", "0", "--data", *map(str, scans)]
    assert cli.main(["pretrain", *tiny, "--out", str(tmp_path / "c"), "--cache", str(tmp_path / "shared")]) == 0
    err = capsys.readouterr().err
    assert "preparing scans in" in err and "2/2 (2 built, 0 skipped)" in err
    assert cli.main(["pretrain", *tiny, "--out", str(tmp_path / "d"), "--cache", str(tmp_path / "shared")]) == 0
    assert "2/2 (0 built, 0 skipped)" in capsys.readouterr().err
    assert cli.main(["pretrain", *tiny, "--out", str(tmp_path / "e"), "--no-cache"]) == 0
    assert "preparing" not in capsys.readouterr().err and not (tmp_path / "e.prepared").exists()
