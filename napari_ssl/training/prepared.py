"""The prepared dataset: every scan read, resampled and normalised once, kept on disk as ``.npy`` memory maps.

:func:`iter_prepare` (and its plain form :func:`prepare_dataset`) turns the scans of a run into one entry per
source (a scan file or a DICOM series folder) under a cache folder (``<out>.prepared`` beside the checkpoint folder by
default: a checkpoint save replaces its own folder whole; or a folder shared
between runs). An entry holds, per 3D volume of the source (a 4D series: one per frame), the float32 array on the
model grid exactly as :func:`napari_ssl.training.data.load_volumes` makes it in RAM (C order), the body mask
(:func:`napari_ssl.io.foreground.foreground_mask`) and the candidate patch centres the sampler draws from, and a
``manifest.json`` with the grid's geometry (spacing, origin, direction), the body's bounding box and the counts.

- **Keyed by identity**: an entry's folder is a hash of the source's identity (resolved path, size, ``mtime_ns``;
  a DICOM folder: every file's) and of the preprocessing (spacing, normalisation, :data:`FORMAT`). A changed file or
  plan makes a new key, so only what changed is rebuilt; an unchanged folder rebuilds nothing. After a successful
  build the plan's entries of older versions of changed files and of deleted files are removed, never another plan's
  nor one a live process uses (:mod:`napari_ssl.training.prepared_stale`); the summary says how much that freed.
- **Fingerprint**: :func:`sampled_fingerprint` (:mod:`napari_ssl.training.prepared_fingerprint`) plans a large folder
  from every file's header and a bounded sample of decoded scans.
- **Atomic, resumable**: an entry is written in a ``.tmp-<key>-<pid>`` folder (manifest last) and renamed into place;
  an entry without a manifest is never taken as complete. A killed build leaves temporary folders that the next
  build removes, and continues with the entries still missing.
- **Skips, never stops**: a source that cannot be read or is not a 3D scan (a text file, a 2D image, a corrupt or
  truncated file) is listed with a one-line reason in :attr:`PreparedDataset.skipped` and in ``skipped.txt`` beside
  the entries; the reason is cached like an entry. Nothing the user owns is written to. Each DICOM series read
  (2D ones too) is recorded by path and depth, so pretraining tells an exam of native 2D views
  (:mod:`napari_ssl.pretext.planes.native`) from 3D scans as the in-RAM path does; a 2D NIfTI/NRRD/MHA image
  beside scans is only an unsuitable file (the in-RAM path takes its folder for an exam of views and refuses it).
- **Disk full**: ``OSError(ENOSPC)`` while writing removes the partial entry and raises one sentence naming the folder.
- **Parallel**: ``min(cores, sources)`` worker processes started from a clean entry point (``python -m
  napari_ssl.training.prepared_entry``, as :mod:`napari_ssl.runner` starts its children: never ``multiprocessing``'s spawn,
  which would re-run a user's script without a main guard), one JSON line per job each way.

Why ``.npy``: ``benchmarks/bench_prepared.py`` (2 cores, three shared scans) read a random 48^3 patch in 0.12 ms from a
memory map and 0.95 ms from blosc2, built the files in 0.10 s against 0.57 s, and needs no dependency; blosc2 was 6x
smaller on disk. Training reads far more patches than it writes scans, and memory-mapped pages are shared by every
DataLoader worker through the page cache, so the entries are ``.npy`` files, mapped read-only by :func:`map_npy`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import mmap
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume
from napari_ssl.preprocess import Normalization
from napari_ssl.training.prepared_entry import FORMAT, MANIFEST, _write_json, build_entry, identity, key_of
from napari_ssl.training.prepared_fingerprint import FINGERPRINT_SAMPLE, sampled_fingerprint
from napari_ssl.training.prepared_stale import mark_in_use, remove_outdated

SKIPPED = "skipped.txt"


# ---------------------------------------------------------------- what a build gives
@dataclass(frozen=True)
class PreparedScan:
    """One prepared 3D volume: its files and its model grid. :meth:`open` maps it (nothing is read yet)."""

    array: str
    mask: str
    centres: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    name: str
    source: str
    has_body: bool
    n_centres: int

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return self.shape

    def open(self) -> Volume:
        """The volume with its array memory-mapped read-only."""
        return Volume(map_npy(self.array, self.shape, np.float32), self.spacing, self.origin,
                      np.asarray(self.direction, dtype=float).reshape(3, 3), self.source, self.name)

    def open_mask(self) -> np.ndarray:
        return map_npy(self.mask, self.shape, np.bool_)

    def open_centres(self) -> np.ndarray:
        return map_npy(self.centres, (self.n_centres, 3), np.int32)


def map_npy(path: str, shape: Sequence[int], dtype: Any) -> np.ndarray:
    """A read-only memory map of the ``.npy`` file ``path`` holding a C-ordered ``shape`` array of ``dtype`` (what
    the manifest says): one open and a 12-byte read, without parsing the header. A DataLoader worker maps a scan per
    sample when there are thousands; ``np.load(mmap_mode="r")`` costs ~3.5x as much (26 vs 90 µs). A file of another
    size is left to ``np.load``, which says what it is."""
    count = int(np.prod(shape, dtype=np.int64))
    with open(path, "rb", buffering=0) as file:  # the map outlives the file object (it holds its own handle)
        head = file.read(12)
        size = os.fstat(file.fileno()).st_size
        if len(head) == 12 and head[:6] == b"\x93NUMPY" and head[6] in (1, 2, 3):
            length = int.from_bytes(head[8:10], "little") if head[6] == 1 else int.from_bytes(head[8:12], "little")
            offset = (10 if head[6] == 1 else 12) + length
            if size == offset + count * np.dtype(dtype).itemsize and count > 0:
                buffer = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
                return np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(tuple(shape))
    array = np.load(path, mmap_mode="r")
    if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
        raise ValueError(f"{path} holds a {array.dtype} array of shape {array.shape}, not {np.dtype(dtype)} "
                         f"{tuple(shape)}: the prepared dataset is damaged; delete its folder to rebuild it")
    return array


@dataclass(frozen=True)
class Skipped:
    """A source left out of the dataset and why (one line)."""

    path: str
    reason: str


@dataclass(frozen=True)
class PreparedDataset:
    """The prepared scans of a run, in the order of its sources, and the sources skipped; ``removed`` outdated
    entries (:mod:`~napari_ssl.training.prepared_stale`: older versions of changed scans, deleted scans) freed
    ``freed`` bytes."""

    folder: str
    scans: tuple[PreparedScan, ...]
    skipped: tuple[Skipped, ...]
    built: int
    reused: int
    series: tuple[tuple[str | None, int], ...] = ()  # every DICOM series read (path, depth), 2D ones too
    removed: int = 0
    freed: int = 0

    def summary(self) -> str:
        """The outdated entries removed (a line), then one line per skipped source after a header; empty when
        nothing was removed or skipped."""
        lines = []
        if self.removed:
            lines.append(f"removed {self.removed} outdated prepared {'entry' if self.removed == 1 else 'entries'} "
                         f"(changed or deleted scans): {_size_text(self.freed)} freed")
        if self.skipped:
            lines.append(f"{len(self.skipped)} file(s) skipped (listed in {Path(self.folder) / SKIPPED}):")
            lines += [f"  {s.path}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def _size_text(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


@dataclass(frozen=True)
class PrepareProgress:
    """Where a build stands: sources done of ``total``, entries built (the rest reused or skipped), the ETA."""

    done: int
    total: int
    built: int
    skipped: int
    elapsed_s: float
    eta_s: float


# ---------------------------------------------------------------- keys
def preprocessing_key(spacing: Sequence[float] | None, normalization: Normalization) -> str:
    """A hash of what changes a prepared array: the format, the target spacing and the normalisation."""
    data = {"format": FORMAT, "spacing": None if spacing is None else [round(float(s), 6) for s in spacing],
            "normalization": normalization.to_dict()}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def entry_key(path: str | os.PathLike[str], prep_key: str) -> str:
    return key_of(identity(path), prep_key)


def find_sources(data: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[Skipped]]:
    """The scans under ``data`` (files and DICOM folders, in :func:`napari_ssl.io.read_all`'s order), and the other
    files of the folders given, as skipped (not a scan)."""
    from napari_ssl import io

    sources: list[Path] = []
    others: list[Skipped] = []
    for item in data:
        path = Path(item).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        if path.is_file() and not io.is_scan_file(path):
            sources.append(path)  # given by name: read it, and say why when it cannot be
            continue
        found = io.find_scans(path)
        sources += found
        if path.is_dir():
            covered = {f.resolve() for f in found}  # scan files and DICOM folders (their files are theirs)
            for f in sorted(path.rglob("*")):
                if not f.is_file() or f.name.startswith("."):
                    continue
                real = f.resolve()
                if real not in covered and not any(parent in covered for parent in real.parents):
                    others.append(Skipped(str(f), "not a scan (NIfTI, NRRD, MHA/MHD or DICOM)"))
    return sources, others


def source_summary(data: Sequence[str | os.PathLike[str]]) -> tuple[int, int]:
    """How many scans a run on ``data`` would prepare (files and DICOM series folders, as :func:`find_sources`
    finds them) and their total size in bytes on disk; lists and stats, decodes nothing (DICOM files are recognised
    by their header, as everywhere)."""
    from napari_ssl import io

    sources = [s for item in data for s in io.find_scans(Path(item).expanduser())]
    total = 0
    for source in sources:
        files = [source] if source.is_file() else [f for f in source.rglob("*") if f.is_file()]
        for f in files:
            with contextlib.suppress(OSError):
                total += f.stat().st_size
    return len(sources), total


def _read_manifest(entry: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if data.get("format") == FORMAT else None


def _scans_of(entry: Path, manifest: dict[str, Any]) -> list[PreparedScan]:
    return [PreparedScan(
        array=str(entry / s["array"]), mask=str(entry / s["mask"]), centres=str(entry / s["centres"]),
        shape=tuple(s["shape"]), spacing=tuple(s["spacing"]), origin=tuple(s["origin"]),  # type: ignore[arg-type]
        direction=tuple(s["direction"]), name=s["name"], source=manifest["source"], has_body=bool(s["has_body"]),
        n_centres=int(s["n_centres"]),
    ) for s in manifest["scans"]]


# ---------------------------------------------------------------- the pool
class _Workers:
    """``n`` clean child processes (``python -m napari_ssl.training.prepared_entry``), one job each at a time."""

    def __init__(self, n: int) -> None:
        import subprocess

        import napari_ssl

        env = dict(os.environ)
        root = str(Path(napari_ssl.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
        for name in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = "1"  # one core each: the pool is the parallelism
        self.procs = [subprocess.Popen([sys.executable, "-m", "napari_ssl.training.prepared_entry"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, env=env, text=True, bufsize=1) for _ in range(n)]

    def run(self, jobs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        import selectors

        sel = selectors.DefaultSelector()
        queue = list(reversed(jobs))
        busy = 0
        for proc in self.procs:
            if queue:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(json.dumps(queue.pop()) + "\n")
                sel.register(proc.stdout, selectors.EVENT_READ, proc)
                busy += 1
        while busy:
            for key, _ in sel.select(timeout=1.0):
                proc = key.data
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"a preparation worker ended unexpectedly (exit code {proc.wait()})")
                yield json.loads(line)
                if queue:
                    proc.stdin.write(json.dumps(queue.pop()) + "\n")
                else:
                    sel.unregister(proc.stdout)
                    busy -= 1
            for proc in self.procs:
                if proc.poll() is not None and proc.returncode != 0:
                    raise RuntimeError(f"a preparation worker ended unexpectedly (exit code {proc.returncode})")

    def close(self, *, kill: bool = False) -> None:
        if kill:
            for proc in self.procs:
                proc.kill()
        for proc in self.procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        deadline = time.monotonic() + 5.0
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except Exception:  # the build lists it with its reason
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------- a build
def _clean_temporaries(root: Path) -> None:
    """Remove what killed builds left (their process gone)."""
    for tmp in root.glob(".tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        alive = False
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                alive = True
            except (ProcessLookupError, PermissionError):
                alive = False
        if not alive:
            shutil.rmtree(tmp, ignore_errors=True)


def iter_prepare(data: Sequence[str | os.PathLike[str]], spacing: Sequence[float] | None,
                 normalization: Normalization, folder: str | os.PathLike[str], *,
                 workers: int | None = None) -> Iterator[PrepareProgress]:
    """Build what is missing of the prepared dataset of ``data``; yields progress, returns the
    :class:`PreparedDataset` (``dataset = yield from iter_prepare(...)``).

    Raises
    ------
    OSError
        The disk filled up (``ENOSPC``) or the folder cannot be written: one sentence; no partial entry is kept.
    """
    root = Path(folder).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    _clean_temporaries(root)
    sources, skipped = find_sources(data)
    prep = preprocessing_key(spacing, normalization)
    identities = [identity(s) for s in sources]
    keys = [key_of(i, prep) for i in identities]
    entries = [root / k for k in keys]
    mark_in_use(root, keys)  # before any is looked at: a concurrent build's clean-up keeps them
    for entry in entries:  # a folder without its manifest is a half-written entry of an older layout: redo it
        if entry.exists() and _read_manifest(entry) is None:
            shutil.rmtree(entry, ignore_errors=True)
    todo = [i for i, e in enumerate(entries) if not (e / MANIFEST).is_file()]
    jobs = [{"source": str(sources[i]), "entry": str(entries[i]), "identity": identities[i],
             "spacing": None if spacing is None else [float(s) for s in spacing],
             "normalization": normalization.to_dict()} for i in todo]
    start = time.monotonic()
    done = len(sources) - len(todo)
    built = n_skipped = 0
    yield PrepareProgress(done, len(sources), 0, 0, 0.0, 0.0)
    n = min(os.cpu_count() or 1, len(jobs)) if workers is None else min(max(1, workers), len(jobs))
    pool = _Workers(n) if n > 1 else None
    finished = False
    try:
        results = pool.run(jobs) if pool is not None else (build_entry(job) for job in jobs)
        for result in results:
            if result["status"] == "nospace":
                raise OSError(errno.ENOSPC, f"the disk is full: preparing {result['source']} in {root} stopped "
                                            "(free space or choose another folder with --cache DIR)")
            if result["status"] == "error":
                raise OSError(f"cannot write the prepared dataset in {root}: {result['reason']}")
            done += 1
            built += result["status"] == "built"
            n_skipped += result["status"] == "skipped"
            elapsed = time.monotonic() - start
            eta = elapsed / (done - (len(sources) - len(todo))) * (len(sources) - done)
            yield PrepareProgress(done, len(sources), built, n_skipped, elapsed, eta)
        finished = True
    finally:
        if pool is not None:  # a cancel or an error: the workers are killed, their temporary entries cleaned later
            pool.close(kill=not finished)
    scans: list[PreparedScan] = []
    series: list[tuple[str | None, int]] = []
    for source, entry in zip(sources, entries, strict=True):
        manifest = _read_manifest(entry)
        if manifest is None:
            raise OSError(f"the prepared entry {entry} of {source} is incomplete after the build")
        if "skipped" in manifest:
            skipped.append(Skipped(str(source), manifest["skipped"]))
        scans += _scans_of(entry, manifest)
        if manifest.get("dicom"):
            series += [(v["path"], int(v["depth"])) for v in manifest.get("volumes", ())]
    _write_json(root / "sources.json", {"format": FORMAT, "preprocessing": prep,
                                        "entries": [[str(s), e.name] for s, e in zip(sources, entries, strict=True)]})
    text = "".join(f"{s.path}\t{s.reason}\n" for s in skipped)
    tmp = root / f"{SKIPPED}.tmp-{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, root / SKIPPED)
    removed, freed = remove_outdated(root, prep, identities, data, keys)
    return PreparedDataset(str(root), tuple(scans), tuple(skipped), built, len(sources) - len(todo), tuple(series),
                           removed=removed, freed=freed)


def prepare_dataset(data: Sequence[str | os.PathLike[str]], spacing: Sequence[float] | None,
                    normalization: Normalization, folder: str | os.PathLike[str], *, workers: int | None = None,
                    progress: Callable[[PrepareProgress], None] | None = None) -> PreparedDataset:
    """:func:`iter_prepare` run to the end, ``progress`` called with each :class:`PrepareProgress`."""
    gen = iter_prepare(data, spacing, normalization, folder, workers=workers)
    while True:
        try:
            step = next(gen)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if progress is not None:
            progress(step)


__all__ = ["FINGERPRINT_SAMPLE", "FORMAT", "PrepareProgress", "PreparedDataset", "PreparedScan", "Skipped", "build_entry", "entry_key",
           "find_sources", "identity", "iter_prepare", "prepare_dataset", "preprocessing_key",
           "sampled_fingerprint", "source_summary"]

