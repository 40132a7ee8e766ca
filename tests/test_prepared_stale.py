"""Outdated prepared entries (issue 22): after a build, the plan's entries of changed and deleted scans are removed,
another plan's and the user's files never, an entry a live process uses neither; the space freed is reported."""

from __future__ import annotations

import io as text_io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_ssl import events, io
from napari_ssl.io.volume import Volume
from napari_ssl.preprocess import Normalization
from napari_ssl.training.prepared import MANIFEST, prepare_dataset
from napari_ssl.training.prepared_stale import IN_USE

NORM = Normalization(mode="zscore")


def _write(path: Path, shape: tuple[int, int, int], seed: int) -> None:
    array = np.random.default_rng(seed).normal(100.0, 20.0, shape).astype(np.float32)
    io.write(Volume(array, (1.0, 1.0, 1.0)), path, compress=False)  # .nii: the size changes with the shape


def _entries(folder: Path) -> set[str]:
    return {p.parent.name for p in folder.glob(f"*/{MANIFEST}")}


def _size(entry: Path) -> int:
    return sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(3):
        _write(folder / f"s{i}.nii", (16, 16, 16), i)
    return folder


def test_a_changed_file_replaces_its_entry_and_other_plans_keep_theirs(data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = prepare_dataset([data], None, NORM, cache, workers=1)
    other = prepare_dataset([data], (2.0, 2.0, 2.0), NORM, cache, workers=1)  # another plan, same cache folder
    assert (first.built, other.built, other.removed) == (3, 3, 0)
    (cache / "notes").mkdir()  # a user's folder in the cache folder
    (cache / "notes" / "mine.txt").write_text("keep\n")
    user_files = {p: p.read_bytes() for p in data.iterdir()}
    old = Path(first.scans[0].array).parent
    reading = np.load(first.scans[0].array, mmap_mode="r")  # a reader with the old entry mapped
    expected = reading.copy()
    freed = _size(old)

    _write(data / "s0.nii", (18, 16, 16), 7)  # rewritten with other content
    again = prepare_dataset([data], None, NORM, cache, workers=1)
    assert (again.built, again.reused, again.removed, again.freed) == (1, 2, 1, freed)
    assert not old.exists() and all(Path(s.array).exists() for s in again.scans)
    assert [s.array for s in again.scans[1:]] == [s.array for s in first.scans[1:]]
    assert all(Path(s.array).exists() for s in other.scans)  # the other plan's entries (s0's old one too)
    assert _entries(cache) == {Path(s.array).parent.name for s in (*again.scans, *other.scans)}
    assert np.array_equal(reading, expected)  # an unlinked memory map stays readable
    assert (cache / "notes" / "mine.txt").read_text() == "keep\n"
    assert {p: p.read_bytes() for p in data.iterdir() if p.name != "s0.nii"} == {
        p: b for p, b in user_files.items() if p.name != "s0.nii"}
    assert again.summary().startswith("removed 1 outdated prepared entry (changed or deleted scans): ")
    assert not list(cache.glob(".tmp-*"))

    (data / "s2.nii").unlink()  # deleted: this plan's entry goes, the other plan's stays
    gone = Path(again.scans[2].array).parent
    after = prepare_dataset([data], None, NORM, cache, workers=1)
    assert (after.built, after.reused, after.removed) == (0, 2, 1)
    assert not gone.exists() and Path(other.scans[2].array).exists()


def test_an_entry_a_live_process_uses_is_kept(data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = prepare_dataset([data], None, NORM, cache, workers=1)
    old = Path(first.scans[0].array).parent.name
    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        for proc in (live, dead):
            (cache / IN_USE / f"{host}-{proc.pid}.json").write_text(
                json.dumps({"host": host, "pid": proc.pid, "entries": [old]}))
        (cache / IN_USE / "elsewhere-1.json").write_text(json.dumps({"host": "elsewhere", "pid": 1, "entries": []}))
        _write(data / "s0.nii", (18, 16, 16), 7)
        kept = prepare_dataset([data], None, NORM, cache, workers=1)
        assert (kept.built, kept.removed) == (1, 0) and (cache / old).is_dir()  # a live run still reads it
        assert not (cache / IN_USE / f"{host}-{dead.pid}.json").exists()  # an ended process's record: dropped
        assert (cache / IN_USE / "elsewhere-1.json").exists()  # another host's: kept
    finally:
        live.kill()
        live.wait()
    assert prepare_dataset([data], None, NORM, cache, workers=1).removed == 1  # that run ended
    assert not (cache / old).exists()


def test_the_cli_prints_the_space_freed(data: Path, tmp_path: Path) -> None:
    from napari_ssl.commands.pretrain import ProgressBar, _preparing

    cache = tmp_path / "cache"
    prepare_dataset([data], None, NORM, cache, workers=1)
    os.utime(data / "s1.nii", ns=(0, 10**18))
    ds = prepare_dataset([data], None, NORM, cache, workers=1)
    out = text_io.StringIO()
    _preparing(ProgressBar(out), events.Preparing(3, 3, ds.built, 0, 0.0, str(cache), ds.summary(), final=True))
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("3/3 (1 built, 0 skipped)")
    assert lines[1].startswith("removed 1 outdated prepared entry") and lines[1].endswith(" kB freed")
