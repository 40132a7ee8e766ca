"""Read and write scans with their physical geometry (SimpleITK underneath; no Qt, no napari).

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``) and DICOM
(a single file, or a folder holding one or more series). Every failure to read raises :class:`ScanReadError`,
a subclass of both ``OSError`` and ``ValueError`` whose message names the path and the reason.
Writes go to a temporary file beside the target and are renamed into place, so a failed write never leaves a
half-written file, and never touches an existing file at that path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.volume import Volume

__all__ = [
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
    "ScanReadError",
    "ScanWriteError",
    "find_scans",
    "is_dicom_dir",
    "is_dicom_file",
    "read",
    "read_all",
    "scan_suffix",
    "write",
]

READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")

_TAG_POSITION = "0020|0032"
_TAG_ORIENTATION = "0020|0037"
_TAG_INSTANCE = "0020|0013"
_TAG_TRIGGER = "0018|1060"
_TAG_SERIES_DESCRIPTION = "0008|103e"
_TAG_MODALITY = "0008|0060"
_TAG_SERIES_UID = "0020|000e"


class ScanReadError(OSError, ValueError):
    """A path that is not a readable scan: missing, unreadable, empty, corrupt, RGB or unsupported."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __str__(self) -> str:  # OSError would print "[Errno None]"; keep the message plain
        return f"{self.path}: {self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return (type(self), (self.path, self.reason))


class ScanWriteError(ScanReadError):
    """A scan could not be written (bad suffix, unwritable folder, unsupported array)."""


# --------------------------------------------------------------------------- helpers
def scan_suffix(path: str | os.PathLike[str]) -> str:
    """The scan suffix of ``path`` in lower case (``.nii.gz`` counts as one), or ``''``."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True for a file carrying the DICOM preamble (``DICM`` at byte 128) or a ``.dcm`` suffix."""
    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix.lower() == ".dcm":
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_dir(path: str | os.PathLike[str]) -> bool:
    """True for a folder that directly holds at least one DICOM file."""
    p = Path(path)
    if not p.is_dir():
        return False
    try:
        return any(is_dicom_file(child) for child in sorted(p.iterdir()) if child.is_file())
    except OSError:
        return False


def _is_scan_file(path: Path) -> bool:
    suffix = scan_suffix(path)
    if suffix in READ_SUFFIXES:
        return suffix != ".raw"
    return suffix == "" and is_dicom_file(path)


def find_scans(root: str | os.PathLike[str]) -> list[Path]:
    """Every scan under ``root``, recursively, sorted: scan files and DICOM series folders.

    A folder of DICOM files counts once (as the folder); the files inside it are not listed on their own.
    ``root`` itself may be a scan file or a DICOM folder.
    """
    root = Path(root)
    if not root.exists():
        raise ScanReadError(root, "no such file or directory")
    if root.is_file():
        return [root] if _is_scan_file(root) or scan_suffix(root) in READ_SUFFIXES else []
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        files = sorted(folder / f for f in filenames if not f.startswith("."))
        dicom = [f for f in files if scan_suffix(f) in ("", ".dcm") and is_dicom_file(f)]
        if dicom:
            found.append(folder)
        found.extend(f for f in files if scan_suffix(f) in READ_SUFFIXES and scan_suffix(f) != ".dcm")
    return sorted(found)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ScanReadError(path, "no such file or directory")
    if not os.access(path, os.R_OK):
        raise ScanReadError(path, "permission denied")
    if path.is_file() and path.stat().st_size == 0:
        raise ScanReadError(path, "empty file")


def _name_of(path: Path) -> str:
    name = path.name
    suffix = scan_suffix(path)
    return name[: -len(suffix)] if suffix and name.lower().endswith(suffix) else name


# --------------------------------------------------------------------------- reading
def _from_sitk_image(image: Any, path: Path) -> Volume:
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ScanReadError(
            path,
            f"has {image.GetNumberOfComponentsPerPixel()} components per pixel (RGB or vector image); "
            "napari-ssl reads scalar (grey-level) scans only",
        )
    dim = image.GetDimension()
    if dim == 4:  # (t, z, y, x) time series: geometry from the spatial 3x3 block
        array = sitk.GetArrayFromImage(image)
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
        )
    if dim not in (2, 3):
        raise ScanReadError(path, f"{dim}D images are not supported (2D, 3D or 3D+time)")
    try:
        return Volume.from_sitk(image, path=str(path), name=_name_of(path))
    except ValueError as exc:
        raise ScanReadError(path, str(exc)) from None


def _read_file(path: Path) -> Volume:
    import SimpleITK as sitk

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


def _dicom_series(folder: Path) -> list[tuple[str, list[str]]]:
    import SimpleITK as sitk

    try:
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError:
        ids = ()
    return [(sid, list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid))) for sid in ids]


def _tag(reader: Any, key: str) -> str | None:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else None


def _floats(text: str | None) -> np.ndarray | None:
    if not text:
        return None
    try:
        return np.array([float(v) for v in text.replace(" ", "").split("\\") if v], dtype=float)
    except ValueError:
        return None


def _read_dicom_series(folder: Path, files: list[str]) -> Volume:
    """Read one DICOM series: slices ordered along their normal; repeated positions (cine) become time."""
    import SimpleITK as sitk

    infos = []
    for f in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(f)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise ScanReadError(f, "not a readable DICOM file") from None
        infos.append(
            {
                "file": f,
                "position": _floats(_tag(reader, _TAG_POSITION)),
                "orientation": _floats(_tag(reader, _TAG_ORIENTATION)),
                "instance": _floats(_tag(reader, _TAG_INSTANCE)),
                "trigger": _floats(_tag(reader, _TAG_TRIGGER)),
                "description": _tag(reader, _TAG_SERIES_DESCRIPTION),
                "modality": _tag(reader, _TAG_MODALITY),
                "components": reader.GetNumberOfComponents(),
            }
        )
    if infos[0]["components"] != 1:
        raise ScanReadError(folder, "DICOM series is RGB; napari-ssl reads scalar (grey-level) scans only")
    orient = infos[0]["orientation"]
    if orient is not None and orient.size == 6:
        normal = np.cross(orient[:3], orient[3:])
    else:
        normal = np.array([0.0, 0.0, 1.0])
    for info in infos:
        pos = info["position"]
        info["depth"] = float(pos @ normal) if pos is not None and pos.size == 3 else 0.0
        info["order"] = (
            info["trigger"][0] if info["trigger"] is not None and info["trigger"].size else 0.0,
            info["instance"][0] if info["instance"] is not None and info["instance"].size else 0.0,
        )
    # group slices by position along the normal (0.01 mm tolerance)
    groups: dict[float, list[dict[str, Any]]] = {}
    for info in infos:
        key = round(info["depth"], 2)
        groups.setdefault(key, []).append(info)
    depths = sorted(groups)
    frames = {len(g) for g in groups.values()}
    if len(frames) != 1:
        raise ScanReadError(
            folder, f"DICOM series has an uneven number of frames per slice position ({sorted(frames)})"
        )
    n_frames = frames.pop()
    for g in groups.values():
        g.sort(key=lambda i: i["order"])

    first = sitk.ReadImage(groups[depths[0]][0]["file"])
    volume0 = _from_sitk_image(first, Path(groups[depths[0]][0]["file"]))
    slices = np.empty((n_frames, len(depths), *volume0.spatial_shape[1:]), dtype=volume0.array.dtype)
    for z, depth in enumerate(depths):
        for t, info in enumerate(groups[depth]):
            image = first if (z, t) == (0, 0) else sitk.ReadImage(info["file"])
            array = sitk.GetArrayFromImage(image)
            if array.shape[-2:] != slices.shape[-2:]:
                raise ScanReadError(info["file"], f"slice size {array.shape[-2:]} differs from the series")
            slices[t, z] = array.reshape(slices.shape[-2:])
    spacing = list(volume0.spacing)
    direction = volume0.direction.copy()
    if len(depths) > 1:
        steps = np.diff(depths)
        spacing[0] = float(np.mean(steps))
        # slice axis points along +normal (depths sorted ascending); world order is (Z, Y, X)
        direction[:, 0] = normal[::-1]
    array = slices if n_frames > 1 else slices[0]
    metadata: dict[str, Any] = {}
    if infos[0]["description"]:
        metadata["series_description"] = infos[0]["description"]
    if infos[0]["modality"]:
        metadata["modality"] = infos[0]["modality"]
    if n_frames > 1:
        metadata["axes"] = "tzyx"
    name = infos[0]["description"] or folder.name
    return Volume(
        array=array,
        spacing=tuple(spacing),
        origin=volume0.origin,
        direction=direction,
        path=str(folder),
        name=name.replace(" ", "_") if name else folder.name,
        metadata=metadata,
    )


def _read_dicom_folder(folder: Path) -> list[Volume]:
    series = _dicom_series(folder)
    if not series:
        raise ScanReadError(folder, "folder holds no readable DICOM series")
    return [_read_dicom_series(folder, files) for _, files in series]


def read(path: str | os.PathLike[str]) -> Volume:
    """Read one scan: a NIfTI/NRRD/MetaImage/DICOM file, or a folder holding one DICOM series.

    Parameters
    ----------
    path : str or Path
        The file, or the DICOM series folder.

    Returns
    -------
    Volume
        The voxels in (z, y, x) order (a cine series as (t, z, y, x)) with spacing, origin and direction.

    Raises
    ------
    ScanReadError
        Missing or unreadable path, empty or corrupt file, RGB image, or a folder with no (or several) series.
    """
    p = Path(path).expanduser()
    _check_readable(p)
    if p.is_dir():
        if is_dicom_dir(p):
            volumes = _read_dicom_folder(p)
        else:
            inner = [s for s in find_scans(p) if s.is_dir()]
            if len(inner) != 1:
                raise ScanReadError(
                    p,
                    "folder holds no DICOM series" if not inner
                    else f"folder holds {len(inner)} scans; open them with read_all()",
                )
            volumes = _read_dicom_folder(inner[0])
        if len(volumes) != 1:
            raise ScanReadError(p, f"folder holds {len(volumes)} DICOM series; open them with read_all()")
        return volumes[0]
    if scan_suffix(p) == ".mhd" or scan_suffix(p) in READ_SUFFIXES or is_dicom_file(p):
        return _read_file(p)
    # unknown suffix: let SimpleITK try, but report it as unsupported when it cannot
    try:
        return _read_file(p)
    except ScanReadError:
        raise ScanReadError(p, f"unsupported file type {p.suffix or '(no suffix)'!r}") from None


def read_all(path: str | os.PathLike[str]) -> list[Volume]:
    """Read every scan at ``path``: one file, or all scans and DICOM series in a folder, recursively.

    A multi-modal case folder (BraTS: t1, t1ce, t2, flair, seg) gives one aligned volume per file; an exam
    folder of DICOM series (several views, cine series) gives one volume per series.
    """
    p = Path(path).expanduser()
    _check_readable(p)
    if p.is_file():
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
