"""The plan's fingerprint of a prepared dataset (:mod:`napari_ssl.training.prepared`): every scan's grid from its
header, a bounded sample of scans decoded.

- **Sample**: at most :data:`FINGERPRINT_SAMPLE` sources are decoded, chosen by a hash of their resolved paths (so
  adding a scan to a large folder rarely changes the sample, and so the plan and every prepared entry). The body
  box, the modality and the intensities of the plan come from them.
- **Headers**: above that, the grid of *every* NIfTI, NRRD and MetaImage source is read from its header
  (:func:`napari_ssl.io.read_header`: no voxel decoded) and turned into the canonical (z, y, x) shape and spacing by
  :func:`napari_ssl.preprocess.canonical_geometry`, the function the decoded path measures with; the plan's spacing,
  median shape and padding note come from them (:attr:`napari_ssl.plan.Fingerprint.headers`). A 4D file counts once
  with its spatial grid (the sample takes its first frame); a 2D image, a single slice or a file whose header cannot
  be read is left out (the build lists it with its reason); a truncated ``.nii.gz`` whose header reads counts with
  it. DICOM series folders (and DICOM files or other files named directly) count through the decoded sample only:
  a series' slice spacing comes from its slices' positions, which no single file's header tells, and a folder may
  hold several series, so their grids are those of the sampled ones.
- **Cached** in ``<folder>/fingerprints``: the sample by its sources' identities, the headers by the identities of all
  sources, so a second run on the same files decodes and reads nothing; after a change only the changed or added
  files' headers are read (the others are taken from the newest earlier headers file, :data:`KEEP_HEADERS` kept).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_ssl.training.prepared_entry import FORMAT, IMAGE_SUFFIXES, _write_json, identity

if TYPE_CHECKING:
    from napari_ssl.plan import Fingerprint, Geometry

#: at most this many scans are decoded for the plan's fingerprint (chosen by a hash of their paths, so adding a scan
#: to a large folder rarely changes the sample, and so the plan and every prepared entry)
FINGERPRINT_SAMPLE = 16
#: headers files kept in ``fingerprints/`` (the newest; one per set of sources a run used)
KEEP_HEADERS = 8


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:24]


def _sample(sources: Sequence[Path]) -> list[Path]:
    chosen = list(sources)
    if len(chosen) > FINGERPRINT_SAMPLE:
        ranked = sorted(chosen, key=lambda s: hashlib.sha256(str(Path(s).resolve()).encode()).hexdigest())
        keep = set(ranked[:FINGERPRINT_SAMPLE])
        chosen = [s for s in chosen if s in keep]
    return chosen


def _load_sample(store: Path) -> tuple[Fingerprint, list[int] | None] | None:
    from napari_ssl.plan import CaseFingerprint, Fingerprint

    try:
        data = json.loads(store.read_text(encoding="utf-8"))
        fp = Fingerprint(cases=tuple(CaseFingerprint(tuple(c["shape"]), tuple(c["spacing"]), tuple(c["box"]),
                                                     c["modality"]) for c in data["cases"]),
                         modality=data["modality"], intensity=data["intensity"], n_channels=data["n_channels"],
                         foreground=data["foreground"])
        owners = data.get("case_sources")
        return fp, None if owners is None else [int(i) for i in owners]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _decoded_sample(chosen: Sequence[Path], identities: dict[Path, Any], store_dir: Path,
                    *, owners_needed: bool) -> tuple[Fingerprint, list[int]] | None:
    """The fingerprint of the decoded ``chosen`` sources and, per case, the index of its source in ``chosen``."""
    from dataclasses import asdict

    from napari_ssl import io
    from napari_ssl.plan import fingerprint

    store = store_dir / f"{_hash([FORMAT, [identities[s] for s in chosen]])}.json"
    cached = _load_sample(store)
    if cached is not None and (cached[1] is not None or not owners_needed):
        return cached[0], cached[1] or []
    raw: list[tuple[int, Any]] = []
    for i, source in enumerate(chosen):
        try:
            raw += [(i, v) for v in io.read_all(source)]
        except Exception:  # the build lists it with its reason
            continue
    usable = [(i, v) for i, v in raw if min(v.spatial_shape) >= 2]
    # the 3D scans, then each 4D series' first frame
    picked = [(i, v) for i, v in usable if v.array.ndim == 3] + \
             [(i, v.with_array(v.array[0])) for i, v in usable if v.array.ndim == 4]
    del raw, usable
    scans, owners = [[v] for _, v in picked], [i for i, _ in picked]
    del picked
    if not scans:
        return None
    fp = fingerprint(scans)
    del scans
    store.parent.mkdir(parents=True, exist_ok=True)
    _write_json(store, {**asdict(fp), "case_sources": owners})
    return fp, owners


def header_geometry(path: str | os.PathLike[str]) -> Geometry | None:
    """The canonical (z, y, x) shape and spacing of the scan file ``path`` from its header, or ``None`` for a file
    the decoded fingerprint leaves out too (2D, a single slice, no readable header)."""
    from napari_ssl import io
    from napari_ssl.preprocess import canonical_geometry

    try:
        header = io.read_header(path)
    except OSError:  # ScanReadError and the file system's own
        return None
    if min(header.shape) < 2:
        return None
    return canonical_geometry(header.shape, header.spacing, header.direction_matrix)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # removed meanwhile by another run
        return -1


def _load_rows(store: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(store.read_text(encoding="utf-8"))
        return data["rows"] if data.get("format") == FORMAT and isinstance(data.get("rows"), dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _header_geometries(files: Sequence[Path], identities: dict[Path, Any],
                       store_dir: Path) -> dict[Path, Geometry | None]:
    """Every file's :func:`header_geometry`, cached by the identities of all ``files`` (one header read a file)."""
    store = store_dir / f"headers-{_hash([FORMAT, 'headers', [identities[f] for f in files]])}.json"
    rows = _load_rows(store)
    if rows is not None:
        with contextlib.suppress(OSError):
            os.utime(store)  # in use: the newest are kept
    else:
        earlier = sorted(store_dir.glob("headers-*.json"), key=_mtime, reverse=True)
        reuse = (_load_rows(earlier[0]) if earlier else None) or {}
        rows = {}
        for f in files:
            row = _hash(identities[f])
            if row not in rows:
                rows[row] = reuse[row] if row in reuse else header_geometry(f)
        store_dir.mkdir(parents=True, exist_ok=True)
        _write_json(store, {"format": FORMAT, "rows": rows})
        for old in earlier[KEEP_HEADERS - 1:]:
            with contextlib.suppress(OSError):
                old.unlink()
    out: dict[Path, Geometry | None] = {}
    for f in files:
        row = rows.get(_hash(identities[f]))
        out[f] = None if row is None else ((int(row[0][0]), int(row[0][1]), int(row[0][2])),
                                           (float(row[1][0]), float(row[1][1]), float(row[1][2])))
    return out


def sampled_fingerprint(sources: Sequence[Path], folder: str | os.PathLike[str]) -> Fingerprint | None:
    """The plan's :class:`~napari_ssl.plan.Fingerprint` of ``sources``: at most :data:`FINGERPRINT_SAMPLE` of them
    decoded (all of them below that: then it equals :func:`~napari_ssl.plan.fingerprint` of every scan), above that
    every file's grid from its header in :attr:`~napari_ssl.plan.Fingerprint.headers` (see the module docstring);
    kept in ``folder/fingerprints``. ``None`` when no sampled source is a readable 3D scan."""
    from dataclasses import replace

    sources = [Path(s) for s in sources]
    chosen = _sample(sources)
    every = len(chosen) == len(sources)
    identities = {s: identity(s) for s in (chosen if every else sources)}
    store_dir = Path(folder) / "fingerprints"
    sample = _decoded_sample(chosen, identities, store_dir, owners_needed=not every)
    if sample is None:
        return None
    fp, owners = sample
    if every:
        return fp
    from napari_ssl import io

    files = [s for s in sources if s.is_file() and io.scan_suffix(s) in IMAGE_SUFFIXES]
    grids = _header_geometries(files, identities, store_dir)
    decoded: dict[Path, list[Geometry]] = {}  # the sampled sources that are no image file: their decoded grids
    for case, i in zip(fp.cases, owners, strict=True):
        decoded.setdefault(chosen[i], []).append((case.shape, case.spacing))
    headers: list[Geometry] = []
    for source in sources:
        if source in grids:
            grid = grids[source]
            headers += [grid] if grid is not None else []
        else:
            headers += decoded.get(source, [])
    return replace(fp, headers=tuple(headers)) if headers else fp


__all__ = ["FINGERPRINT_SAMPLE", "KEEP_HEADERS", "header_geometry", "sampled_fingerprint"]
