"""DICOM as scanners and PACS export it (SimpleITK's GDCM underneath; no Qt, no napari, no pydicom).

- Files are recognised by their content (the 128-byte preamble and ``DICM``, or a bare data set starting with a
  group 0002/0008 element), never by their names: UID names with dots (``CT.1.3.12.2.1107...``), ``.IMA``,
  ``.DCM`` and names without a suffix all work.
- A folder may hold several series: each becomes one volume named by its series description. Localizers,
  derived (secondary) images and screen captures beside a primary series are skipped with a :class:`ScanWarning`.
- Enhanced multi-frame files (one file, many frames, per-frame positions) and the compressed transfer syntaxes
  GDCM decodes (JPEG lossless, JPEG 2000, RLE, ...) read like any other series.
- Slices are ordered along their normal; repeated positions (cine) become a leading time axis. A missing slice or
  uneven spacing gives a warning naming the gap, and the slices stay on their true positions: the volume is
  rebuilt on a regular grid at the smallest step, the gap filled by linear interpolation between its neighbours
  (never a silently averaged spacing).
- A DICOMDIR file stands for the file set in its folder.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.io.errors import ScanReadError, ScanWarning
from napari_ssl.io.volume import Volume

__all__ = ["is_dicom_file", "is_dicomdir", "read_folder", "read_series"]

_DICOMDIR_CLASS = b"1.2.840.10008.1.3.10"
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
_TAGS = {
    "position": "0020|0032",
    "orientation": "0020|0037",
    "instance": "0020|0013",
    "trigger": "0018|1060",
    "description": "0008|103e",
    "modality": "0008|0060",
    "series": "0020|000e",
    "number": "0020|0011",
    "image_type": "0008|0008",
    "sop_class": "0008|0016",
}
#: two slices closer than this along the normal (mm) share a position (cine frames)
_SAME_POSITION_MM = 0.01


# --------------------------------------------------------------------------- recognising files
def is_dicom_file(path: str | Path) -> bool:
    """True for a file whose content is DICOM: ``DICM`` at byte 128, or a bare data set (no preamble)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:  # a folder, a missing or unreadable file
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    return _bare_data_set(head)


def _bare_data_set(head: bytes) -> bool:
    """A data set written without preamble (older scanners, some exports): a group 0002/0008 element first."""
    if len(head) < 8:
        return False
    group, element = struct.unpack("<HH", head[:4])
    if group not in (0x0002, 0x0008) or element > 0x0100:
        return False
    if head[4:6] in _VRS:  # explicit VR little endian
        return True
    (length,) = struct.unpack("<I", head[4:8])  # implicit VR: a short first element
    return 0 < length <= 256


def is_dicomdir(path: str | Path) -> bool:
    """True for a DICOMDIR (the index of a DICOM file set, as on a CD or a PACS export)."""
    p = Path(path)
    if not p.is_file():
        return False
    if p.name.upper() == "DICOMDIR":
        return True
    if not is_dicom_file(p):
        return False
    try:
        with open(p, "rb") as fh:
            head = fh.read(1024)
    except OSError:
        return False
    return any(_DICOMDIR_CLASS + end in head for end in (b"\0", b" "))


# --------------------------------------------------------------------------- slice headers
@dataclass
class _Slice:
    file: str
    series: str
    number: str
    description: str
    modality: str
    image_type: tuple[str, ...]
    sop_class: str
    position: np.ndarray | None
    orientation: np.ndarray | None
    order: tuple[float, float]
    size: tuple[int, ...]
    components: int
    depth: float = 0.0


def _floats(text: str) -> np.ndarray | None:
    try:
        values = [float(v) for v in text.replace(" ", "").split("\\") if v]
    except ValueError:
        return None
    return np.array(values, dtype=float) if values else None


def _header(path: Path) -> _Slice | None:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None

    def tag(name: str) -> str:
        key = _TAGS[name]
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    def first(name: str) -> float:
        values = _floats(tag(name))
        return float(values[0]) if values is not None else 0.0

    position, orientation = _floats(tag("position")), _floats(tag("orientation"))
    return _Slice(
        file=str(path),
        series=tag("series"),
        number=tag("number"),
        description=tag("description"),
        modality=tag("modality"),
        image_type=tuple(p.strip().upper() for p in tag("image_type").split("\\")),
        sop_class=tag("sop_class").rstrip("\0"),
        position=position if position is not None and position.size == 3 else None,
        orientation=orientation if orientation is not None and orientation.size == 6 else None,
        order=(first("trigger"), first("instance")),
        size=tuple(reader.GetSize()),
        components=reader.GetNumberOfComponents(),
    )


def _kind(group: list[_Slice]) -> str:
    """``primary``, or why a group is only secondary: localizer, derived, screen capture."""
    info = group[0]
    if "LOCALIZER" in info.image_type or "SCOUT" in info.image_type:
        return "localizer"
    if info.sop_class.startswith(_SECONDARY_CAPTURE) and info.position is None:  # a screenshot, not a slice
        return "screen capture"
    if info.image_type and info.image_type[0] == "DERIVED":
        return "derived"
    return "primary"


def _groups(infos: Iterable[_Slice]) -> list[list[_Slice]]:
    """Split slices into volumes: one series, one orientation, one image size (multi-frame files alone)."""
    groups: dict[tuple[Any, ...], list[_Slice]] = {}
    for info in infos:
        orient = tuple(np.round(info.orientation, 3)) if info.orientation is not None else ()
        key: tuple[Any, ...] = (info.series, orient, info.size[:2])
        if len(info.size) > 2 and info.size[2] > 1:
            key = (*key, info.file)
        groups.setdefault(key, []).append(info)
    return sorted(groups.values(), key=lambda g: (g[0].number.zfill(6), g[0].description, g[0].file))


# --------------------------------------------------------------------------- reading
def read_folder(folder: str | Path, recursive: bool = False) -> list[Volume]:
    """Every image series in ``folder`` (its subfolders too with ``recursive``), one volume each.

    Localizers, derived images and screen captures beside a primary series, and files that are not images
    (a DICOMDIR, reports), are skipped with a :class:`ScanWarning` naming them.
    """
    folder = Path(folder)
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in pattern if p.is_file() and not p.name.startswith(".") and is_dicom_file(p))
    files = [p for p in files if not is_dicomdir(p)]
    infos, unreadable = [], []
    for f in files:
        info = _header(f)
        (infos if info is not None else unreadable).append(info or f)
    if unreadable:
        warnings.warn(
            f"{folder}: skipped {len(unreadable)} DICOM file(s) that hold no readable image "
            f"(e.g. {unreadable[0].name})",
            ScanWarning,
            stacklevel=2,
        )
    groups = _groups(infos)
    if not groups:
        raise ScanReadError(folder, "folder holds no readable DICOM series")
    kinds = [_kind(g) for g in groups]
    if "primary" in kinds:
        for group, kind in zip(groups, kinds, strict=True):
            if kind != "primary":
                warnings.warn(
                    f"{folder}: skipped {kind} series {group[0].description or group[0].series!r} "
                    f"({len(group)} image(s))",
                    ScanWarning,
                    stacklevel=2,
                )
        groups = [g for g, k in zip(groups, kinds, strict=True) if k == "primary"]
    volumes = [read_series(folder, group) for group in groups]
    names = [v.name for v in volumes]
    for i, v in enumerate(volumes):  # two series with one description: tell them apart by series number
        if names.count(v.name) > 1 and v.metadata.get("series_number"):
            volumes[i] = v.with_array(v.array, name=f"{v.name}_S{v.metadata['series_number']}")
    return volumes


def read_series(folder: Path, infos: list[_Slice]) -> Volume:
    """Read one series: slices ordered along their normal, repeated positions (cine) as time."""
    import SimpleITK as sitk

    info0 = infos[0]
    if info0.components != 1:
        raise ScanReadError(folder, "DICOM series is RGB; napari-ssl reads scalar (grey-level) scans only")
    metadata: dict[str, Any] = {
        k: v
        for k, v in (
            ("series_description", info0.description),
            ("modality", info0.modality),
            ("series_uid", info0.series),
            ("series_number", info0.number),
        )
        if v
    }
    name = (info0.description or folder.name).replace(" ", "_")
    if len(infos) == 1 and len(info0.size) > 2 and info0.size[2] > 1:  # enhanced multi-frame
        try:
            image = sitk.ReadImage(info0.file, imageIO="GDCMImageIO")
        except RuntimeError as exc:
            raise ScanReadError(info0.file, f"not a readable DICOM image: {_last_line(exc)}") from None
        volume = Volume.from_sitk(image, path=str(folder), name=name)
        return volume.with_array(volume.array, metadata=metadata)
    normal = np.cross(info0.orientation[:3], info0.orientation[3:]) if info0.orientation is not None else None
    if normal is None:
        normal = np.array([0.0, 0.0, 1.0])
    for info in infos:
        info.depth = float(info.position @ normal) if info.position is not None else 0.0
    infos = sorted(infos, key=lambda i: (i.depth, i.order))
    positions: list[list[_Slice]] = []
    for info in infos:
        if positions and info.depth - positions[-1][0].depth <= _SAME_POSITION_MM:
            positions[-1].append(info)
        else:
            positions.append([info])
    frames = {len(p) for p in positions}
    if len(frames) != 1:
        raise ScanReadError(
            folder, f"DICOM series has an uneven number of frames per slice position ({sorted(frames)})"
        )
    n_frames = frames.pop()
    first = _read_slice(positions[0][0].file)
    plane = Volume.from_sitk(first)
    slices = np.empty((n_frames, len(positions), *plane.spatial_shape[1:]), dtype=plane.array.dtype)
    for z, group in enumerate(positions):
        for t, info in enumerate(sorted(group, key=lambda i: i.order)):
            image = first if (z, t) == (0, 0) else _read_slice(info.file)
            array = sitk.GetArrayViewFromImage(image)
            if array.shape[-2:] != slices.shape[-2:]:
                raise ScanReadError(info.file, f"slice size {array.shape[-2:]} differs from the series")
            if array.dtype != slices.dtype:  # per-slice rescale (PET): keep every slice's values
                slices = slices.astype(np.result_type(slices.dtype, array.dtype, np.float32))
            slices[t, z] = array.reshape(slices.shape[-2:])
    spacing = list(plane.spacing)
    direction = plane.direction.copy()
    depths = np.array([p[0].depth for p in positions])
    if len(depths) > 1:
        direction[:, 0] = normal[::-1]  # slice axis along +normal (depths ascend); world order (Z, Y, X)
        slices, spacing[0], note = _on_regular_grid(slices, depths)
        if note:
            warnings.warn(f"{folder}: {note}", ScanWarning, stacklevel=3)
            metadata["slice_gaps"] = note
        shear = _in_plane_shift(positions, normal)
        if shear > 0.1 * min(spacing[1:]):
            warnings.warn(
                f"{folder}: slices shift {shear:.2f} mm sideways across the series (gantry tilt or a sheared "
                "stack); shown on an orthogonal grid from the first slice, so positions far from it are off "
                f"by up to {shear:.2f} mm",
                ScanWarning,
                stacklevel=3,
            )
            metadata["sheared_mm"] = round(shear, 3)
    if n_frames > 1:
        metadata["axes"] = "tzyx"
    return Volume(
        array=slices if n_frames > 1 else slices[0],
        spacing=tuple(spacing),
        origin=plane.origin,
        direction=direction,
        path=str(folder),
        name=name,
        metadata=metadata,
    )


def _in_plane_shift(positions: list[list[_Slice]], normal: np.ndarray) -> float:
    """Largest sideways (in-plane) offset, mm, of a slice's position from the first slice's normal line."""
    points = [p[0].position for p in positions if p[0].position is not None]
    if len(points) < 2:
        return 0.0
    offsets = np.asarray(points) - points[0]
    sideways = offsets - np.outer(offsets @ normal, normal)
    return float(np.linalg.norm(sideways, axis=1).max())


def _read_slice(path: str) -> Any:
    import SimpleITK as sitk

    try:
        return sitk.ReadImage(path, imageIO="GDCMImageIO")
    except RuntimeError as exc:
        raise ScanReadError(path, f"not a readable DICOM image: {_last_line(exc)}") from None


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _on_regular_grid(slices: np.ndarray, depths: np.ndarray) -> tuple[np.ndarray, float, str]:
    """Slices ``(t, n, y, x)`` at ``depths`` (ascending mm) on a regular grid, and a note on any gap.

    A regular series comes back unchanged. Otherwise the grid step is the smallest acquired step; acquired
    slices keep their positions (a missing slice leaves its neighbours where they were) and the grid
    positions between them are filled by linear interpolation.
    """
    steps = np.diff(depths)
    step = float(steps.min())
    tolerance = max(0.01, 0.02 * step)
    if float(steps.max()) - step <= tolerance:
        return slices, float(np.mean(steps)), ""
    n = round(float(depths[-1] - depths[0]) / step) + 1
    grid = depths[0] + np.arange(n) * (depths[-1] - depths[0]) / (n - 1)
    gaps = [i for i, s in enumerate(steps) if s - step > tolerance]
    missing = [round(float(steps[i]) / step) - 1 for i in gaps]
    whole = all(abs(steps[i] / step - round(steps[i] / step)) < 0.05 for i in gaps)
    where = ", ".join(f"{depths[i]:.2f} to {depths[i + 1]:.2f} mm" for i in gaps[:3]) + (
        f" and {len(gaps) - 3} more" if len(gaps) > 3 else ""
    )
    if whole:
        note = (
            f"{sum(missing)} missing slice(s) in a {step:.3g} mm series: gap(s) {where} along the slice normal; "
            "filled by linear interpolation, acquired slices kept at their true positions"
        )
    else:
        note = (
            f"uneven slice spacing ({step:.3g} to {float(steps.max()):.3g} mm, gaps {where}); resampled to a "
            f"regular {step:.3g} mm grid by linear interpolation"
        )
    out = np.empty((slices.shape[0], n, *slices.shape[2:]), dtype=slices.dtype)
    upper = np.clip(np.searchsorted(depths, grid, side="left"), 1, len(depths) - 1)
    for k, (g, hi) in enumerate(zip(grid, upper, strict=True)):
        lo = hi - 1
        w = (g - depths[lo]) / (depths[hi] - depths[lo])
        if w <= 1e-3 or w >= 1 - 1e-3:
            out[:, k] = slices[:, lo if w <= 1e-3 else hi]
            continue
        mixed = (1 - w) * slices[:, lo].astype(np.float32) + w * slices[:, hi].astype(np.float32)
        out[:, k] = np.rint(mixed) if out.dtype.kind in "iu" else mixed
    return out, float(grid[1] - grid[0]), note
