"""Scans in, scans out, with their geometry: the ``io`` stage. The package holds :class:`~.volume.Volume` (an array
with spacing, origin and direction: what every stage passes on), DICOM series and exams (:mod:`.dicom`), the body's
foreground mask (:mod:`.foreground`), a file's grid from its header alone (:mod:`.header`) and the read/write
errors (:mod:`.errors`); this module reads and writes.
It is the ground floor: it imports nothing of napari-ssl outside itself, and no Qt, no napari, no torch.

Read and write scans with their physical geometry (SimpleITK underneath).

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``) and DICOM
(a single file, or a folder holding one or more series). Every failure to read raises :class:`ScanReadError`,
a subclass of both ``OSError`` and ``ValueError`` whose message names the path and the reason.
Writes go to a temporary file beside the target and are renamed into place, so a failed write never leaves a
half-written file, and never touches an existing file at that path.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume, array_from_sitk

__all__ = [
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
    "ScanHeader",
    "ScanReadError",
    "ScanWarning",
    "ScanWriteError",
    "find_scans",
    "holds_scans",
    "is_dicom_dir",
    "is_dicom_file",
    "is_scan_file",
    "read",
    "read_all",
    "read_header",
    "scan_suffix",
    "write",
]

READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")


from napari_ssl.io.errors import ScanReadError, ScanWarning, ScanWriteError  # noqa: E402  (re-exported)
from napari_ssl.io.header import ScanHeader, read_header  # noqa: E402  (re-exported)


# --------------------------------------------------------------------------- helpers
def scan_suffix(path: str | os.PathLike[str]) -> str:
    """The suffix of ``path`` in lower case (``.nii.gz`` counts as one), or ``''``.

    Any suffix is returned (``.png`` too), so callers can name what they refuse; whether a file is a scan is
    :func:`is_scan_file`'s question (a DICOM file named by its UID has a "suffix" that is only a UID part).
    """
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def _known_suffix(path: Path) -> str:
    suffix = scan_suffix(path)
    return suffix if suffix in READ_SUFFIXES and suffix != ".dcm" else ""


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True for a file whose content is DICOM (preamble + ``DICM``, or a bare data set), whatever its name."""
    from napari_ssl.io import dicom

    return dicom.is_dicom_file(path)


def is_dicom_dir(path: str | os.PathLike[str]) -> bool:
    """True for a folder that directly holds at least one DICOM image file (by content, whatever the names;
    a DICOMDIR alone does not count: its images lie in subfolders)."""
    p = Path(path)
    if not p.is_dir():
        return False
    try:
        return any(
            child.is_file() and not _known_suffix(child) and is_dicom_file(child) and not _is_dicomdir(child)
            for child in sorted(p.iterdir())
        )
    except OSError:
        return False


def is_scan_file(path: str | os.PathLike[str]) -> bool:
    """True for a file napari-ssl reads: a known scan suffix, a DICOMDIR, or DICOM content whatever the name."""
    p = Path(path)
    return p.is_file() and (bool(_known_suffix(p)) or is_dicom_file(p))


def _is_dicomdir(path: Path) -> bool:
    from napari_ssl.io import dicom

    return dicom.is_dicomdir(path)


_ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")


def _walk(root: Path, max_files: int | None = None) -> Iterator[Path]:
    """Scans under ``root`` in walk order: known scan files, and each folder holding DICOM images.

    Zarr stores (millions of suffix-less chunk files) are not entered. ``max_files`` bounds how many files
    are looked at (a quick "is there anything here?" must not read a whole disk).
    """
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if any(marker in filenames for marker in _ZARR_MARKERS) or dirpath.endswith(".zarr"):
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not d.endswith(".zarr"))
        folder = Path(dirpath)
        files = sorted(folder / f for f in filenames if not f.startswith("."))
        seen += len(files)
        if any(not _known_suffix(f) and is_dicom_file(f) and not _is_dicomdir(f) for f in files):
            yield folder
        yield from (f for f in files if _known_suffix(f))
        if max_files is not None and seen >= max_files:
            return


def find_scans(root: str | os.PathLike[str]) -> list[Path]:
    """Every scan under ``root``, recursively, sorted: scan files and DICOM series folders.

    DICOM files are recognised by content, whatever their names (UIDs with dots, ``.IMA``, no suffix). A folder
    of DICOM files counts once (as the folder); the files inside it are not listed on their own. ``root`` itself
    may be a scan file (a DICOMDIR stands for its folder) or a DICOM folder.
    """
    root = Path(root)
    if not root.exists():
        raise ScanReadError(root, "no such file or directory")
    if root.is_file():
        if _is_dicomdir(root):
            return find_scans(root.parent)
        return [root] if is_scan_file(root) else []
    return sorted(_walk(root))


def holds_scans(root: str | os.PathLike[str]) -> bool:
    """True when ``root`` is a scan or a folder with a scan below it (stops at the first; looks at no more than
    20,000 files, and not inside Zarr stores, so asking about a large non-scan folder stays quick)."""
    root = Path(root)
    try:
        if root.is_file():
            return is_scan_file(root)
        return root.is_dir() and next(_walk(root, max_files=20_000), None) is not None
    except OSError:
        return False


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ScanReadError(path, "no such file or directory")
    if not os.access(path, os.R_OK):
        raise ScanReadError(path, "permission denied")
    if path.is_file() and path.stat().st_size == 0:
        raise ScanReadError(path, "empty file")


def _name_of(path: Path) -> str:
    name = path.name
    suffix = _known_suffix(path) or (".dcm" if scan_suffix(path) == ".dcm" else "")
    return name[: -len(suffix)] if suffix and name.lower().endswith(suffix) else name


# --------------------------------------------------------------------------- reading
def _from_sitk_image(image: Any, path: Path) -> Volume:

    components = image.GetNumberOfComponentsPerPixel()
    if components != 1:
        raise ScanReadError(
            path,
            f"has {components} components per pixel (an RGB or vector image, or channels stored as vector "
            "components); napari-ssl reads scalar (grey-level) scans only: save each channel as its own scan",
        )
    dim = image.GetDimension()
    if dim == 4:  # (t, z, y, x): time points or channels; geometry from the spatial 3x3 block
        array = array_from_sitk(image)
        spacing = image.GetSpacing()[:3]
        origin = image.GetOrigin()[:3]
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(4, 4)[:3, :3]
        return Volume(
            array=array,
            spacing=tuple(spacing[::-1]),
            origin=tuple(origin[::-1]),
            direction=direction[::-1, ::-1].copy(),
            path=str(path),
            name=_name_of(path),
            metadata={"axes": "tzyx"},
        )
    if dim not in (2, 3):
        raise ScanReadError(path, f"{dim}D images are not supported (2D, 3D, or 3D with a time/channel axis)")
    try:
        return Volume.from_sitk(image, path=str(path), name=_name_of(path))
    except ValueError as exc:
        raise ScanReadError(path, str(exc)) from None


def gzip_truncated(path: Path) -> str | None:
    """Why the gzip-compressed NIfTI ``path`` is incomplete or damaged past a readable header, or ``None``:
    SimpleITK reads such a ``.nii.gz`` without an error (the missing voxels are garbage). A quick look first: the gzip
    trailer's size (the last 4 bytes) against the size the NIfTI header announces; only a file where they differ is
    decompressed to its end (checksum verified) to confirm. A file that is no gzip or no NIfTI from its first bytes
    is left to the reader, which says it is no readable scan."""
    import gzip
    import struct
    import zlib

    if not path.name.lower().endswith(".nii.gz") or not path.is_file():
        return None
    try:
        with path.open("rb") as raw:
            if raw.read(2) != b"\x1f\x8b":
                return None
            raw.seek(-4, os.SEEK_END)
            isize = struct.unpack("<I", raw.read(4))[0]
        with gzip.open(path, "rb") as f:
            header = f.read(352)
    except (EOFError, OSError, zlib.error, struct.error):
        return None
    order = next((o for o in ("<", ">") if len(header) >= 352 and struct.unpack(o + "i", header[:4])[0] == 348), None)
    if order is None:  # not a NIfTI-1 header
        return None
    dims = struct.unpack(order + "8h", header[40:56])
    bitpix = struct.unpack(order + "h", header[72:74])[0]
    offset = int(struct.unpack(order + "f", header[108:112])[0])
    n = 1
    for d in dims[1:1 + max(0, min(7, dims[0]))]:
        n *= max(1, d)
    if isize == (max(offset, 352) + n * bitpix // 8) % 2**32:
        return None
    try:  # not what the header announces: read it to its end to be sure
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except EOFError:
        return "truncated gzip data: the file is incomplete (copied or downloaded only in part?)"
    except (OSError, zlib.error) as exc:
        return f"corrupt gzip data ({str(exc).strip() or type(exc).__name__})"
    return None


def _read_file(path: Path) -> Volume:
    import SimpleITK as sitk

    problem = gzip_truncated(path)
    if problem:
        raise ScanReadError(path, problem)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()
        detail = next((line for line in reason if "ERROR" in line or "Unable" in line), "")
        raise ScanReadError(
            path, "not a readable scan (corrupt or unsupported format)" + (f": {detail.strip()}" if detail else "")
        ) from None
    volume = _from_sitk_image(image, path)
    if volume.array.size == 0:
        raise ScanReadError(path, "image has no voxels")
    return volume


def _read_dicom_folder(folder: Path, recursive: bool = False) -> list[Volume]:
    from napari_ssl.io import dicom

    return dicom.read_folder(folder, recursive=recursive)


def _one(path: Path, volumes: list[Volume]) -> Volume:
    if len(volumes) != 1:
        raise ScanReadError(path, f"holds {len(volumes)} DICOM series; open them with read_all()")
    return volumes[0]


def _frame(path: Path, volume: Volume, frame: int | None) -> Volume:
    if frame is None:
        return volume
    count = volume.array.shape[0] if volume.array.ndim == 4 else 1
    if not 0 <= frame < count:
        raise ScanReadError(path, f"frame {frame} out of range: the scan holds {count} volume(s) (0-{count - 1})")
    if volume.array.ndim == 3:
        return volume
    meta = {k: v for k, v in volume.metadata.items() if k != "axes"}
    return volume.with_array(volume.array[frame].copy(), metadata={**meta, "frame": frame})


def read(path: str | os.PathLike[str], *, frame: int | None = None) -> Volume:
    """Read one scan: a NIfTI/NRRD/MetaImage/DICOM file, a DICOMDIR, or a folder holding one DICOM series.

    Parameters
    ----------
    path : str or Path
        The file, the DICOMDIR, or the DICOM series folder. DICOM files are recognised by content.
    frame : int, optional
        For a scan with a time or channel axis (4D NIfTI, cine DICOM): read only this 3D volume.
        Without it such a scan comes back as ``(t, z, y, x)``.

    Returns
    -------
    Volume
        The voxels in (z, y, x) order (``(t, z, y, x)`` with a time/channel axis) with spacing, origin and
        direction. Integer, float and scaled (``scl_slope``, rescale slope) values are kept as stored.

    Raises
    ------
    ScanReadError
        Missing or unreadable path, empty or corrupt file, RGB or vector image, a folder with no (or several)
        series, or a frame out of range.
    """
    p = Path(path).expanduser()
    _check_readable(p)
    if p.is_dir():
        if is_dicom_dir(p):
            return _frame(p, _one(p, _read_dicom_folder(p)), frame)
        inner = [s for s in find_scans(p) if s.is_dir()]
        if len(inner) != 1:
            raise ScanReadError(
                p,
                "folder holds no DICOM series" if not inner
                else f"folder holds {len(inner)} scans; open them with read_all()",
            )
        return _frame(p, _one(p, _read_dicom_folder(inner[0])), frame)
    if _is_dicomdir(p):
        return _frame(p, _one(p, _read_dicom_folder(p.parent, recursive=True)), frame)
    if _known_suffix(p) or scan_suffix(p) == ".dcm" or is_dicom_file(p):
        return _frame(p, _read_file(p), frame)
    try:  # unknown suffix: let SimpleITK try, but report it as unsupported when it cannot
        return _frame(p, _read_file(p), frame)
    except ScanReadError:
        raise ScanReadError(p, f"unsupported file type {p.suffix or '(no suffix)'!r}") from None


def read_all(path: str | os.PathLike[str]) -> list[Volume]:
    """Read every scan at ``path``: one file, or all scans and DICOM series in a folder, recursively.

    A multi-modal case folder (BraTS: t1, t1ce, t2, flair, seg) gives one aligned volume per file; an exam
    folder of DICOM series (several views, cine series) gives one volume per series, named by its series
    description; a DICOMDIR gives every series of its file set. Skipped localizers, derived images and filled
    slice gaps are reported as :class:`ScanWarning`.
    """
    p = Path(path).expanduser()
    _check_readable(p)
    if p.is_file():
        if _is_dicomdir(p):
            return read_all(p.parent)
        return [read(p)]
    volumes: list[Volume] = []
    for scan in find_scans(p):
        if scan.is_dir():
            volumes.extend(_read_dicom_folder(scan))
        else:
            volumes.append(read(scan))
    if not volumes:
        raise ScanReadError(p, "folder holds no readable scans (NIfTI, NRRD, MHA/MHD or DICOM)")
    return volumes


# --------------------------------------------------------------------------- writing
def write(volume: Volume, path: str | os.PathLike[str], *, compress: bool = True) -> Path:
    """Write a 3D volume with its geometry to NIfTI, NRRD or MHA, atomically.

    The file is written beside ``path`` under a temporary name and renamed into place, so readers never see
    a partial file and a failure leaves any existing file untouched.

    Returns
    -------
    Path
        The written path.
    """
    import SimpleITK as sitk

    p = Path(path).expanduser()
    suffix = scan_suffix(p)
    if suffix not in WRITE_SUFFIXES:
        raise ScanWriteError(p, f"cannot write {suffix or 'files without a suffix'}; use one of {', '.join(WRITE_SUFFIXES)}")
    if not p.parent.is_dir():
        raise ScanWriteError(p, f"folder {p.parent} does not exist")
    if volume.array.ndim != 3:
        raise ScanWriteError(p, f"only 3D volumes can be written, got shape {volume.array.shape}")
    if volume.array.dtype.kind not in "biuf":
        raise ScanWriteError(p, f"unsupported voxel type {volume.array.dtype}")
    image = volume.to_sitk()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=f".tmp{suffix}", dir=p.parent)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, useCompression=compress)
        os.replace(tmp, p)
    except (RuntimeError, OSError) as exc:
        raise ScanWriteError(p, f"write failed: {str(exc).strip().splitlines()[-1] if str(exc) else exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p
