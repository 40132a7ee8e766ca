"""Labelled cases for fine-tuning: find the cases of a folder (:func:`find_cases`: one channel a modality, in one
order for every case), read file pairs and in-memory layer pairs, check each label volume against its image's grid,
and prepare the case on the model grid with :mod:`napari_ssl.preprocess` (as inference does)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.classes import IGNORE, SegClass, painted_slices, remap_labels
from napari_ssl.io.volume import Volume
from napari_ssl.preprocess import Normalization


def case_name(volume: Volume, fallback: str) -> str:
    from napari_ssl.io import scan_suffix

    if volume.name:
        return str(volume.name)
    if volume.path:
        p = Path(volume.path)
        return p.name[: -len(scan_suffix(p))] if scan_suffix(p) else p.name
    return fallback


#: modality words a scan's file or layer name may hold, longest first (``t1ce`` before ``t1``)
#: (BraTS 2023 names its four ``t1n``, ``t1c``, ``t2w``, ``t2f``)
MODALITIES = ("t1ce", "t1gd", "t1c", "t1n", "t1w", "t2w", "t2f", "flair", "t1", "t2", "pd", "dwi", "adc", "swi", "ct",
              "pet")


#: names of one modality across conventions (BraTS 2018 -> BraTS 2023, ``w`` weighted): a model's ``flair`` input takes
#: a ``t2f`` scan
MODALITY_SYNONYMS = {"flair": ("t2f",), "t1ce": ("t1c", "t1gd"), "t1": ("t1n", "t1w"), "t2": ("t2w",)}


def same_modality(word: str) -> tuple[str, ...]:
    """``word`` and the other names of its modality (``flair`` -> ``flair, t2f``; ``t2f`` -> ``t2f, flair``)."""
    word = word.lower()
    for key, others in MODALITY_SYNONYMS.items():
        if word == key or word in others:
            return (word, *[w for w in (key, *others) if w != word])
    return (word,)


def modality_of(name: str) -> str | None:
    """The modality word in a file or layer name (``Brats18_2013_11_1_flair`` -> ``flair``), None without one."""
    low = name.lower()
    for word in MODALITIES:
        if re.search(rf"(?<![a-z0-9]){word}(?![a-z0-9])", low):
            return word
    return None


def channel_names(cases: Sequence[Sequence[Volume]]) -> list[str]:
    """What each input channel of a model is called: the modality its scans name (``flair``), else the name all
    cases give it (``flair.nii.gz`` in every case folder; ``<case>_t1n.nii.gz`` in folder ``<case>``: ``t1n``), else
    ``image`` (one channel) or ``channel K``. Never one case's own name (a flat folder of ``Brats18_...nii.gz`` files
    names cases, not the channel)."""
    n = len(cases[0])
    out = []
    for k in range(n):  # a file's name without its case folder's name in front (``<case>_t1n`` -> ``t1n``)
        names = [_without(case_name(case[k], ""), Path(case[k].path).parent.name if case[k].path else "")
                 for case in cases]
        words = {modality_of(name) for name in names}
        if len(words) == 1 and None not in words:
            out.append(words.pop())
        elif len(cases) > 1 and len(set(names)) == 1 and names[0]:
            out.append(names[0])
        else:
            out.append("image" if n == 1 else f"channel {k + 1}")
    return out


def case_label(volume: Volume) -> str:
    """A case's name in logs and checkpoints: ``folder/file`` for a file (``Brats18_2013_11_1/flair``: BraTS-like
    layouts name every case's file alike), the layer's name for an in-memory volume."""
    name = case_name(volume, "scan")
    if volume.path and Path(volume.path).parent.name:
        return f"{Path(volume.path).parent.name}/{name}"
    return name


def read_pairs(images: Sequence[str], labels: Sequence[str], pairs: Sequence[Any]) -> list[tuple[list[Volume], Volume, bool]]:
    """``(channels, labels, from_layers)`` for every file pair and in-memory pair."""
    from napari_ssl import io

    out: list[tuple[list[Volume], Volume, bool]] = []
    for image, label in zip(images, labels, strict=False):
        out.append(([io.read(p.strip()) for p in str(image).split(",") if p.strip()], io.read(label), False))
    for i, pair in enumerate(pairs):
        try:
            image, label = pair
        except (TypeError, ValueError):
            raise ValueError(f"pair {i} must be (image, labels), got {type(pair).__name__}") from None
        chans = [image] if isinstance(image, Volume) else list(image)
        chans = [c if isinstance(c, Volume) else Volume(np.asarray(c)) for c in chans]
        lab = label if isinstance(label, Volume) else Volume(np.asarray(label))
        out.append((chans, lab, True))
    return out


def check_pair(channels: list[Volume], label: Volume, lenient: bool) -> Volume:
    """The label volume checked against the image grid (integer ids, same shape and geometry, not empty)."""
    from napari_ssl.preprocess import check_scan

    name = case_name(channels[0], "scan")
    for chan in channels:
        check_scan(chan)
    if label.array.ndim != 3:
        raise ValueError(f"labels of {name}: expected a 3D label volume, got shape {label.array.shape}")
    if label.array.dtype.kind == "f":
        if not np.all(np.mod(label.array[:: max(1, label.array.shape[0] // 8)], 1) == 0):
            raise ValueError(f"labels of {name}: label volumes must hold integer ids, got fractional values")
        label = label.with_array(label.array.astype(np.int32))
    if label.spatial_shape != channels[0].spatial_shape:
        raise ValueError(
            f"labels {label.name or label.path or '?'} of shape {label.spatial_shape} do not match image {name} "
            f"of shape {channels[0].spatial_shape}"
        )
    if not label.same_geometry(channels[0], atol=1e-2):
        if not lenient:
            raise ValueError(
                f"labels {label.path or label.name} are not on the grid of image {channels[0].path or name} "
                "(spacing, origin or direction differ)"
            )
        label = channels[0].with_array(label.array)  # a layer painted over the image: same voxels
    if not np.any(label.array):
        raise ValueError(f"labels {label.name or label.path or 'of ' + name} are empty (all 0): nothing to learn from")
    return label


def prepare_case(channels: Sequence[Volume], label: Volume, classes: Sequence[SegClass], spacing: Sequence[float],
                 norm: Normalization, annotated: str = "all", ignore_label: int | None = None) -> Any:
    """One labelled case on the model grid (:func:`napari_ssl.preprocess.prepare_channels`, as inference does).

    The labels become class indices on their own grid first, then are resampled (nearest neighbour, so the
    :data:`~napari_ssl.classes.IGNORE` value travels as it is). ``ignore_label``: voxels of that source value are
    unlabelled; ``annotated="slices"``: every slice along axis 0 without a painted voxel is unlabelled too.
    """
    from napari_ssl.preprocess import back_to_grid, backgrounds, prepare_channels
    from napari_ssl.training.augment import Case

    array, grid = prepare_channels(list(channels), spacing=spacing, normalization=norm)
    ignore_ids = () if ignore_label is None else (int(ignore_label),)
    source = remap_labels(label.array, classes, ignore_ids)
    if annotated == "slices":
        source[~painted_slices(label.array, ignore_ids)] = IGNORE
    mapped = back_to_grid(label.with_array(source), grid).array
    return Case(case_label(channels[0]), array, mapped, backgrounds(array, norm))


# ---------------------------------------------------------------- case folders
#: label file names: the whole name, or its end after ``_``, ``-``, ``.`` or a space (``Brats18_X_seg``)
LABEL_WORDS = ("seg", "segmentation", "label", "labels", "mask", "masks", "gt", "truth", "groundtruth", "lesion",
               "lesions")
#: how many folder levels below the given folder :func:`find_cases` looks for cases (``brats/HGG/<case>``)
CASE_DEPTH = 2
_SEPS = "_-./ "
_SEP = r"[\s_\-./]"
_LABEL_END = re.compile(rf"(?:^|{_SEP})(?:{'|'.join(LABEL_WORDS)})$", re.IGNORECASE)
_SCAN_FILES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
_ZARR = (".zgroup", ".zarray", "zarr.json")


def split_modality(name: str) -> tuple[str, str] | None:
    """``(case prefix, modality)`` of a name ending in a modality word: ``Brats18_X_flair`` -> ``("Brats18_X",
    "flair")``, ``t1ce`` -> ``("", "t1ce")``, ``A/flair`` -> ``("A", "flair")``; None when it ends in none."""
    low = name.lower()
    for word in MODALITIES:
        found = re.search(rf"(?:^|{_SEP}){word}$", low)
        if found:
            return name[: found.start()].rstrip(_SEPS), word
    return None


def is_label_name(name: str) -> bool:
    """Whether a scan's name (no suffix) names a label file: ``seg``, ``labels``, ``mask``, ``Brats18_X_seg``..."""
    return bool(_LABEL_END.search(name))


def _without(name: str, case: str) -> str:
    """``name`` without the case's name in front (``Brats18_X_flair`` of case ``Brats18_X`` -> ``flair``)."""
    rest = name[len(case):]
    if case and name.lower().startswith(case.lower()) and rest[:1] in tuple(_SEPS) and rest.lstrip(_SEPS):
        return rest.lstrip(_SEPS)
    return name


def channel_key(name: str, case: str = "") -> str:
    """What a scan is among its case's channels: its modality word (``flair``), else its name without the case's
    name in front (``BraTS-GLI-00001-000-t1n`` of case ``BraTS-GLI-00001-000`` -> ``t1n``), in lower case."""
    own = _without(name, case)
    return modality_of(own) or own.lower()


def _stem(path: Path) -> str:
    from napari_ssl.io import scan_suffix

    suffix = scan_suffix(path) if path.is_file() else ""
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix) else path.name


@dataclass(frozen=True)
class CaseFiles:
    """One labelled case of a folder: its name, its channel files (in :attr:`FoundCases.channels` order), its labels."""

    name: str
    channels: tuple[str, ...]
    labels: str


@dataclass(frozen=True)
class FoundCases:
    """What :func:`find_cases` found in ``folder``: the channel names (every case has one file of each, in this
    order), the usable cases, the cases left out as ``(name, one-line reason)`` and the files of used cases that no
    channel takes (a scan only a few cases have)."""

    folder: str
    channels: tuple[str, ...]
    cases: tuple[CaseFiles, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    ignored: tuple[str, ...] = ()

    @property
    def images(self) -> tuple[str, ...]:
        """One item a case, its channel files joined by commas (``FinetuneConfig.images``)."""
        return tuple(",".join(case.channels) for case in self.cases)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(case.labels for case in self.cases)

    def describe(self) -> str:
        """``13 cases, 4 channels: flair, t1, t1ce, t2`` (``; 1 skipped`` when some are left out)."""
        n, k = len(self.cases), len(self.channels)
        text = f"{n} case{'s' * (n != 1)}, {k} channel{'s' * (k != 1)}: {', '.join(self.channels)}"
        return text + (f"; {len(self.skipped)} skipped" if self.skipped else "")


def _scans_by_folder(root: Path) -> dict[Path, list[Path]]:
    """Scan files and DICOM series folders by the folder holding them, down to :data:`CASE_DEPTH` levels below."""
    from napari_ssl.io import is_dicom_dir, scan_suffix

    out: dict[Path, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        if any(marker in filenames for marker in _ZARR):
            dirnames[:] = []
            continue
        subs = sorted(d for d in dirnames if not d.startswith(".") and not d.endswith(".zarr"))
        series = [folder / d for d in subs if is_dicom_dir(folder / d)]
        deeper = len(folder.relative_to(root).parts) < CASE_DEPTH
        dirnames[:] = [d for d in subs if folder / d not in series] if deeper else []
        files = [folder / f for f in filenames if not f.startswith(".") and scan_suffix(f) in _SCAN_FILES]
        if files or series:
            out[folder] = sorted(files + series)
    return out


def _cases_in(folder: Path, scans: list[Path], root: Path) -> list[tuple[str, str, list[Path]]]:
    """The cases of one folder as (name, what its file names may start with, scans): the folder itself, or (a flat
    folder of ``<case>_<modality>`` names) one case a prefix."""
    prefixes: list[str | None] = []
    for scan in scans:
        stem = _stem(scan)
        label = _LABEL_END.search(stem)
        split = (stem[: label.start()].rstrip(_SEPS), "labels") if label else split_modality(stem)
        prefixes.append(None if split is None else split[0])
    if len(set(prefixes)) > 1 and None not in prefixes and "" not in prefixes:
        groups: dict[str, list[Path]] = {}
        for scan, prefix in zip(scans, prefixes, strict=True):
            groups.setdefault(str(prefix), []).append(scan)
        return [(prefix, prefix, group) for prefix, group in groups.items()]
    return [(folder.relative_to(root).as_posix() if folder != root else folder.name, folder.name, scans)]


def find_cases(folder: str | os.PathLike[str]) -> FoundCases:
    """The labelled cases of ``folder``: a folder of case folders (BraTS: ``<case>/{flair,t1,t1ce,t2,seg}.nii.gz``,
    also one level deeper, ``HGG/<case>``), a single case folder, or a flat folder of ``<case>_<modality>`` files
    (``Brats18_X_flair.nii.gz`` ... ``Brats18_X_seg.nii.gz``). Only names are read, no voxels.

    In a case, the label file is the scan named ``seg``, ``label(s)``, ``mask``... (:data:`LABEL_WORDS`, alone or
    at the end of the name: ``Brats18_X_seg``); every other scan is a channel, known by its modality word
    (:func:`channel_key`). The channels are those more than half of the cases have, in alphabetical order (``flair,
    t1, t1ce, t2``): one order for every case and every run. A case without labels, with two label files, without
    one of the channels or with two files of one channel is left out with a one-line reason (``skipped``).

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist.
    ValueError
        ``folder`` is a file, holds no scan, or no case is usable (the reasons of the first few, in one sentence).
    """
    root = Path(folder).expanduser().absolute()
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise ValueError(f"{root} is a file; choose the folder of the cases")
    found = [case for where, scans in _scans_by_folder(root).items() for case in _cases_in(where, scans, root)]
    if not found:
        raise ValueError(f"{root} holds no scans (NIfTI, NRRD, MHA/MHD or DICOM series) within {CASE_DEPTH} folder "
                         "levels")
    skipped: list[tuple[str, str]] = []
    labelled: list[tuple[str, dict[str, list[Path]], Path]] = []
    for name, prefix, scans in sorted(found, key=lambda case: case[0]):
        labels = [s for s in scans if is_label_name(_without(_stem(s), prefix))]
        keys: dict[str, list[Path]] = {}
        for scan in scans:
            if scan not in labels:
                keys.setdefault(channel_key(_stem(scan), prefix), []).append(scan)
        if len(labels) != 1:
            skipped.append((name, "no label file (seg, label or mask in its name)" if not labels else
                            f"{len(labels)} label files ({', '.join(s.name for s in labels)}); keep one"))
        elif not keys:
            skipped.append((name, f"no scan besides its labels {labels[0].name}"))
        else:
            labelled.append((name, keys, labels[0]))
    counts: dict[str, int] = {}
    for _, keys, _ in labelled:
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
    channels = tuple(sorted(k for k, n in counts.items() if 2 * n > len(labelled)))
    cases: list[CaseFiles] = []
    ignored: list[str] = []
    for name, keys, label in labelled:
        missing = [k for k in channels if k not in keys]
        twice = [k for k in channels if len(keys.get(k, ())) > 1]
        files = [keys[k][0] for k in channels if k in keys]
        if not channels:
            skipped.append((name, f"its scans ({', '.join(sorted(keys))}) are not those of the other cases"))
        elif missing:
            skipped.append((name, f"no {', '.join(missing)} (the other cases have {', '.join(channels)})"))
        elif twice:
            skipped.append((name, f"{len(keys[twice[0]])} files are {twice[0]} "
                                  f"({', '.join(s.name for s in keys[twice[0]])}); keep one"))
        elif any("," in str(p) for p in [*files, label]):
            skipped.append((name, "a comma in the path of one of its files; rename it"))
        else:
            cases.append(CaseFiles(name, tuple(str(p) for p in files), str(label)))
            ignored += [str(p) for k, paths in keys.items() if k not in channels for p in paths]
    if not cases:
        skipped.sort()
        reasons = "; ".join(f"{name}: {why}" for name, why in skipped[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        raise ValueError(f"no usable case in {root}: {reasons}{more}")
    return FoundCases(str(root), channels, tuple(cases), tuple(sorted(skipped)), tuple(ignored))


def file_classes(label_file: str | os.PathLike[str]) -> tuple[str, ...]:
    """The classes learnt by default from a label file: :func:`~napari_ssl.classes.default_classes` of its values
    (whole tumour for BraTS-like labels, else every value)."""
    from napari_ssl import io
    from napari_ssl.classes import default_classes

    present = np.unique(np.asarray(io.read(label_file).array))
    chosen = default_classes([int(v) for v in present if v > 0])
    if not chosen:
        raise ValueError(f"{label_file} holds no label: nothing to learn")
    return chosen
