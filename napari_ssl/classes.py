"""Segmentation classes: label ids, names from a classes file, merged groups, label remapping and region Dice.

Classes (:func:`parse_classes`) are label ids (``5``), names looked up in a classes file (``liver``, with
``classes.json`` mapping ids to names) or merged groups ``NAME=ID+ID`` (``whole_tumor=1+2+4``); every other
label is background. Groups may overlap (BraTS regions are nested): a voxel goes to the *last* listed class
that contains its id, and the Dice of a class is computed on its whole region (all classes whose ids it
contains), so ``whole_tumor,tumor_core,enhancing`` reports the three BraTS region Dice scores. The classes learnt
by default (:func:`class_presets`, :func:`default_classes`: whole tumour for BraTS-like labels, else every value) are
those the Fine-tune dock ticks and those ``finetune --cases`` learns without ``--classes``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: label colours (hex) given to classes in order; background is transparent in napari
PALETTE = (
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
)


# ---------------------------------------------------------------- classes
@dataclass(frozen=True)
class SegClass:
    """One output class: label value ``index`` in the masks, from the source label ``ids``."""

    index: int
    name: str
    ids: tuple[int, ...]
    color: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "ids": list(self.ids), "color": self.color}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegClass:
        return cls(int(data["index"]), str(data["name"]), tuple(int(i) for i in data["ids"]), str(data["color"]))


def read_class_names(path: str | os.PathLike[str]) -> dict[int, str]:
    """Label id -> name from a JSON file: ``{"5": "liver"}``, ``{"liver": 5}`` or ``[{"id": 5, "name": ...}]``."""
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"classes file {p} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"classes file {p}: not valid JSON ({exc})") from exc
    out: dict[int, str] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            if str(key).strip().lstrip("-").isdigit():
                out[int(key)] = str(value)
            elif isinstance(value, int):
                out[int(value)] = str(key)
            else:
                raise ValueError(f"classes file {p}: entry {key!r}: {value!r} is neither 'id': 'name' nor 'name': id")
    elif isinstance(data, list):
        for item in data:
            if not isinstance(item, Mapping) or "id" not in item or "name" not in item:
                raise ValueError(f"classes file {p}: list entries must be {{'id': ..., 'name': ...}}, got {item!r}")
            out[int(item["id"])] = str(item["name"])
    else:
        raise ValueError(f"classes file {p}: expected an object or a list")
    return out


def parse_classes(spec: str | Sequence[str], class_names: Mapping[int, str] | None = None) -> tuple[SegClass, ...]:
    """Parse ``"liver,spleen"``, ``"5,1"`` or ``"whole_tumor=1+2+4,tumor_core=1+4,enhancing=4"``.

    Parameters
    ----------
    spec : str or sequence of str
        Comma-separated items: a label id, a class name (looked up in ``class_names``), or ``NAME=A+B``
        where each of A, B is an id or a name.
    class_names : mapping of int to str, optional
        From :func:`read_class_names` (e.g. ``ct_organs/classes.json``).
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    parts = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    if not parts:
        raise ValueError("no classes given: name label ids, names from a classes file, or NAME=ID+ID groups")
    by_name = {v.lower(): k for k, v in (class_names or {}).items()}
    known = sorted(by_name)

    def resolve(token: str) -> int:
        token = token.strip()
        if token.lstrip("-").isdigit():
            value = int(token)
            if not 0 < value < 2**16:
                raise ValueError(f"class id {value} must be a positive label value (background 0 is implicit)")
            return value
        if not class_names:
            raise ValueError(f"class {token!r} is not a label id; give a classes file (--classes-file) to use names")
        if token.lower() not in by_name:
            near = difflib.get_close_matches(token.lower(), known, n=3, cutoff=0.6)
            near += [n for n in known if token.lower() in n and n not in near][: 5 - len(near)]
            hint = f"; did you mean {', '.join(near)}?" if near else f" ({len(known)} names in the classes file)"
            raise ValueError(f"class {token!r} is not in the classes file{hint}")
        return by_name[token.lower()]

    out: list[SegClass] = []
    for part in parts:
        if "=" in part:
            name, _, members = part.partition("=")
            name = name.strip()
            if not name:
                raise ValueError(f"class group {part!r} needs a name before '='")
            ids = tuple(dict.fromkeys(resolve(t) for t in members.split("+") if t.strip()))
            if not ids:
                raise ValueError(f"class group {part!r} lists no ids after '='")
        else:
            ids = (resolve(part),)
            name = (class_names or {}).get(ids[0], part if not part.isdigit() else f"class_{ids[0]}")
        out.append(SegClass(len(out) + 1, name, ids, PALETTE[len(out) % len(PALETTE)]))
    names = [c.name for c in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"class names must be distinct, got {', '.join(dupes)} twice")
    if len(out) > 254:
        raise ValueError(f"at most 254 classes, got {len(out)}")
    return tuple(out)


#: the class index of voxels that are not annotated (nnU-Net's ignore label): the loss and the held-out Dice skip
#: them, and no network predicts it (at most 254 classes, so it is never a class index)
IGNORE = 255


def remap_labels(labels: np.ndarray, classes: Sequence[SegClass], ignore_ids: Sequence[int] = ()) -> np.ndarray:
    """Source label ids -> class indices (uint8); later classes win where groups overlap; the rest -> 0.

    Voxels holding one of ``ignore_ids`` (an explicit "unlabelled" value) become :data:`IGNORE`, whatever class lists it.
    """
    out = np.zeros(labels.shape, dtype=np.uint8)
    for cls in classes:
        out[np.isin(labels, cls.ids)] = cls.index
    if len(ignore_ids):
        out[np.isin(labels, list(ignore_ids))] = IGNORE
    return out


def painted_slices(labels: np.ndarray, ignore_ids: Sequence[int] = ()) -> np.ndarray:
    """Which slices along axis 0 (the axis napari slices through) hold any painted label: a bool per slice.

    A value of ``ignore_ids`` paints nothing; every other nonzero value does (a slice painted only with a class
    that is not trained is still annotated: its 0 voxels are background).
    """
    painted = np.asarray(labels) != 0
    if len(ignore_ids):
        painted &= ~np.isin(labels, list(ignore_ids))
    return painted.reshape(painted.shape[0], -1).any(axis=1)


def describe_slices(painted: np.ndarray) -> str:
    """``"31 of 155 slices (every 5th)"``: how many slices are painted, and their stride when it is regular."""
    idx = np.flatnonzero(painted)
    text = f"{len(idx)} of {len(painted)} slices"
    if len(idx) >= 3:
        steps = set(np.diff(idx).tolist())
        if len(steps) == 1 and (step := steps.pop()) > 1:
            text += f" (every {step}{'nd' if step == 2 else 'rd' if step == 3 else 'th'})"
    return text


def region_members(classes: Sequence[SegClass]) -> list[list[int]]:
    """For each class, the class indices whose voxels make up its region (see the module docstring)."""
    effective = []
    for i, cls in enumerate(classes):
        later = set().union(*[set(c.ids) for c in classes[i + 1 :]]) if i + 1 < len(classes) else set()
        effective.append(set(cls.ids) - later)
    return [[c.index for c, eff in zip(classes, effective, strict=False) if eff and eff <= set(k.ids)] for k in classes]


def dice_per_class(pred: np.ndarray, target: np.ndarray, classes: Sequence[SegClass]) -> dict[str, float]:
    """MONAI ``DiceMetric`` of each class region (class-index volumes ``pred`` and ``target``, same shape).

    A class absent from both gives 1.0 (nothing to find, nothing found); absent from the target only, 0.0.
    """
    import torch
    from monai.metrics import DiceMetric

    members = region_members(classes)
    p = np.stack([np.isin(pred, m) for m in members])[None]
    t = np.stack([np.isin(target, m) for m in members])[None]
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    scores = metric(y_pred=torch.from_numpy(p.astype(np.float32)), y=torch.from_numpy(t.astype(np.float32)))
    vals = scores[0].tolist()
    return {c.name: (1.0 if not p[0, i].any() and not t[0, i].any() else float(vals[i])) for i, c in enumerate(classes)}


#: words that make a class lateralised (mirroring would swap it with its other side)
_SIDES = ("left", "right", "_l", "_r", "lateral")


def lateralised(classes: Sequence[SegClass]) -> bool:
    """True when a class name names a side (``kidney_left``): left/right mirroring must stay off."""
    names = [c.name.lower() for c in classes]
    return any(("left" in n or "right" in n or n.endswith(("_l", "_r", " l", " r"))) for n in names)


#: words of classes whose position is arbitrary (lesions): mirroring them makes plausible new cases
_LESION_WORDS = ("tumor", "tumour", "lesion", "metasta", "nodule", "cancer", "carcinoma", "glioma", "edema", "oedema",
                 "necro", "enhanc", "core", "cyst", "mass", "hemorrhage", "haemorrhage", "infarct", "plaque")


def mirror_by_default(classes: Sequence[SegClass]) -> bool:
    """Random flips by default? On for lesions (``whole_tumor``) and unnamed classes (``class_1``: nnU-Net's
    default); off for a lateralised class (``kidney_left``) and for named anatomy (``liver``), whose side and
    orientation are fixed in the canonical orientation every scan is read in (a flipped liver looks like a spleen)."""
    if lateralised(classes):
        return False
    names = [c.name.lower() for c in classes]
    return all(any(w in n for w in _LESION_WORDS) or re.fullmatch(r"class_\d+", n) for n in names)


# ---------------------------------------------------------------- default classes (the dock's ticks, the CLI's default)
#: BraTS label ids -> names (1 necrotic / non-enhancing core, 2 oedema, 4 enhancing; 3 in older releases)
BRATS_NAMES = {1: "necrotic_core", 2: "edema", 3: "non_enhancing", 4: "enhancing"}


def brats_like(values: set[int]) -> bool:
    """Labels that look like BraTS's: only ids 1-4, oedema (2) among them, and a core id (1 or 4)."""
    return bool(values) and values <= set(BRATS_NAMES) and 2 in values and bool(values & {1, 4})


def named_values(values: Mapping[int, str]) -> dict[int, str]:
    """Label values with the names a class list shows: their own names, BraTS's for BraTS-like labels that have
    none (``label N``), else ``class_N`` (the name of an id alone in :func:`parse_classes`)."""
    brats = brats_like(set(values))
    return {v: n if n != f"label {v}" else BRATS_NAMES[v] if brats else f"class_{v}" for v, n in values.items()}


def class_presets(values: Mapping[int, str]) -> list[tuple[str, tuple[int, ...], bool]]:
    """The classes offered for label values ``values`` (value -> name), as (name, ids, ticked).

    Each value is offered alone (ticked). For BraTS-like labels the usual merged regions come first: whole tumour
    (every tumour id) ticked, tumour core unticked, and the single labels unticked, so the default learns whole tumour.
    """
    singles = [(name, (value,)) for value, name in values.items()]
    present = set(values)
    if not brats_like(present):
        return [(name, ids, True) for name, ids in singles]
    core = tuple(v for v in (1, 3, 4) if v in present)
    groups = [("whole_tumor", tuple(sorted(present)), True)]
    if len(core) > 1:
        groups.append(("tumor_core", core, False))
    return groups + [(name, ids, False) for name, ids in singles]


def default_classes(values: Sequence[int] | set[int]) -> tuple[str, ...]:
    """The classes learnt by default from label volumes holding ``values`` (0 is left out): those
    :func:`class_presets` ticks, as :func:`parse_classes` specs (``whole_tumor=1+2+4`` for BraTS-like labels, else
    ``class_N=N`` for every value); empty without any label value."""
    named = named_values({int(v): f"label {int(v)}" for v in sorted(set(values)) if int(v) > 0})
    return tuple(f"{name}={'+'.join(map(str, ids))}" for name, ids, ticked in class_presets(named) if ticked)


__all__ = [
    "BRATS_NAMES",
    "IGNORE",
    "PALETTE",
    "SegClass",
    "brats_like",
    "class_presets",
    "default_classes",
    "describe_slices",
    "dice_per_class",
    "lateralised",
    "mirror_by_default",
    "named_values",
    "painted_slices",
    "parse_classes",
    "read_class_names",
    "region_members",
    "remap_labels",
]
