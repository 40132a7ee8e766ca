"""One entry of the prepared dataset (:mod:`napari_ssl.training.prepared`): a source read, prepared exactly as
:func:`napari_ssl.training.data.load_volumes` prepares it in RAM, and written atomically (a temporary folder, the
manifest last, one rename); run as ``python -m napari_ssl.training.prepared_entry``, a pool worker that builds one
JSON job a line from stdin and answers one JSON line on stdout."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.preprocess import Normalization

#: bump when what an entry holds changes: every entry is rebuilt
FORMAT = 1
MANIFEST = "manifest.json"
#: scan files that are not DICOM: a 2D one is an unsuitable file, never a native view of an exam
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def identity(path: str | os.PathLike[str]) -> list[Any]:
    """What makes a source the same file: resolved path, size and ``mtime_ns`` (a folder: each file's)."""
    p = Path(path).resolve()
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        return [str(p), [[str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns] for f in files]]
    stat = p.stat()
    return [str(p), stat.st_size, stat.st_mtime_ns]


def key_of(source_identity: Any, prep_key: str) -> str:
    """An entry's folder name: a hash of its source's :func:`identity` and its preprocessing key."""
    return hashlib.sha256(json.dumps([source_identity, prep_key]).encode()).hexdigest()[:24]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _write_npy(path: Path, array: np.ndarray) -> None:
    """``array`` as a C-order ``.npy`` file (the writer the tests make fail with ENOSPC)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=array.shape)
    out[...] = array
    out.flush()
    del out


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _box(mask: np.ndarray) -> list[list[int]] | None:
    if not mask.any():
        return None
    lo, hi = [], []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(int(hits[0]))
        hi.append(int(hits[-1]) + 1)
    return [lo, hi]


def _check_complete(path: Path) -> None:
    """A gzip-compressed scan must be complete (:func:`napari_ssl.io.gzip_truncated`)."""
    from napari_ssl.io import gzip_truncated

    problem = gzip_truncated(path)
    if problem:
        raise ValueError(problem)


def build_entry(job: dict[str, Any]) -> dict[str, Any]:
    """Read, prepare and write one source; returns ``{"status": "built" | "skipped" | "nospace" | "error", ...}``."""
    from napari_ssl import io
    from napari_ssl.io.foreground import foreground_mask
    from napari_ssl.training.data import _prepare

    source, final = job["source"], Path(job["entry"])
    spacing = None if job["spacing"] is None else tuple(float(s) for s in job["spacing"])
    norm = Normalization.from_dict(job["normalization"])
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    manifest: dict[str, Any] = {"format": FORMAT, "source": source, "identity": job["identity"], "scans": []}
    try:
        _check_complete(Path(source))
        read = io.read_all(source)
        # each series as read (its path and depth): what tells native 2D views from 3D scans
        manifest["volumes"] = [{"path": vol.path, "depth": int(vol.spatial_shape[0])} for vol in read]
        manifest["dicom"] = Path(source).is_dir() or io.scan_suffix(source) not in IMAGE_SUFFIXES
        frames = [f for vol in read for f in _prepare(vol, spacing, norm)]
        del read
        kept = [f for f in frames if f.array.ndim == 3 and min(f.spatial_shape) >= 2]
        if not kept:
            shape = frames[0].array.shape if frames else ()
            raise ValueError(f"a 2D image (shape {tuple(int(s) for s in shape)}), not a 3D scan")
    except MemoryError:
        raise
    except Exception as exc:  # unreadable or unsuitable: listed, cached, the build goes on
        manifest["skipped"] = _one_line(exc)
        frames = kept = []
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i, frame in enumerate(kept):
            mask = foreground_mask(frame.array)
            centres = (np.argwhere(mask[::2, ::2, ::2]) * 2).astype(np.int32)
            _write_npy(tmp / f"{i}.npy", np.ascontiguousarray(frame.array, dtype=np.float32))
            _write_npy(tmp / f"{i}.mask.npy", mask)
            _write_npy(tmp / f"{i}.centres.npy", centres)
            manifest["scans"].append({
                "array": f"{i}.npy", "mask": f"{i}.mask.npy", "centres": f"{i}.centres.npy",
                "shape": list(frame.spatial_shape), "spacing": list(frame.spacing), "origin": list(frame.origin),
                "direction": [float(v) for v in np.asarray(frame.direction).reshape(-1)], "name": frame.name or "",
                "has_body": bool(mask.any()), "n_centres": len(centres), "box": _box(mask),
            })
        _write_json(tmp / MANIFEST, manifest)  # last: an entry without it is incomplete
        try:
            os.rename(tmp, final)
        except OSError:  # another build wrote the same entry first: keep that one
            if not (final / MANIFEST).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        status = "nospace" if exc.errno == errno.ENOSPC else "error"
        return {"status": status, "source": source, "reason": _one_line(exc)}
    return {"status": "skipped" if "skipped" in manifest else "built", "source": source}


def _worker_main() -> int:
    """A pool worker: one JSON job a line on stdin, one JSON result a line on stdout."""
    for line in sys.stdin:
        if line.strip():
            sys.stdout.write(json.dumps(build_entry(json.loads(line))) + "\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
