"""Checkpoints: a folder with ``model.safetensors``, ``meta.json`` and, for resuming, ``optimizer.pt``.

- Weights are safetensors (no code execution on load). ``meta.json`` is plain JSON: the training config,
  pretexts, backbone spec, patch size, plan, normalisation, step, loss history, package versions, and
  the size and SHA-256 of every file, so a truncated or altered file is detected before it is used.
- This is the only module that reads ``meta.json``: :func:`open_checkpoint` returns it typed
  (:class:`~napari_ssl.meta.SegmenterCheckpoint` or :class:`~napari_ssl.meta.PretrainCheckpoint`, the schema in
  :mod:`napari_ssl.meta`), without torch; :func:`load` returns the weights beside it. ``tests/test_checkpoint_readers.py``
  keeps every other module off the raw file.
- The optimizer state is ``torch.save`` of tensors and numbers only and is read with
  ``torch.load(weights_only=True)``: a pickle that would build arbitrary objects is refused.
- Writes are atomic: everything goes to a temporary sibling folder, is flushed to disk, and then replaces
  the checkpoint by renames. If the process dies mid-write, the previous checkpoint is still there (or, in
  the instant between the two renames, in ``.<name>.previous``, which :func:`load` falls back to).

Layout used by the engine: ``--out DIR`` *is* the checkpoint folder, rewritten at every save.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_ssl.meta import (
    FORMAT,
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    CheckpointKindError,
    PretrainCheckpoint,
    SegmenterCheckpoint,
    from_dict,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "FORMAT", "FORMAT_VERSION", "META_FILE", "MODEL_FILE", "OPTIMIZER_FILE", "Checkpoint", "CheckpointError",
    "CheckpointKindError", "PretrainCheckpoint", "SegmenterCheckpoint", "check_target", "check_weights",
    "is_checkpoint", "load", "load_optimizer", "load_weights", "open_checkpoint", "package_versions", "safe_torch_load", "save",
]

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
OPTIMIZER_FILE = "optimizer.pt"


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a checkpoint (recorded in ``meta.json``)."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("napari-ssl", "torch", "monai", "numpy", "safetensors", "SimpleITK"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "napari-ssl":
                from napari_ssl import __version__

                out[name] = __version__
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _previous(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.previous"


def _jsonify(value: Any) -> Any:
    """Plain JSON types for meta (tuples -> lists, numpy scalars -> numbers, Paths -> str)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonify(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonify(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"meta value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def check_target(directory: str | os.PathLike[str]) -> Path:
    """Raise unless ``directory`` may receive a checkpoint: absent, empty, or a napari-ssl checkpoint.

    :func:`save` replaces the folder, so a user's folder of other files must never be a target.
    """
    directory = Path(directory)
    if not directory.exists():
        return directory
    if not directory.is_dir():
        raise CheckpointError(f"cannot write a checkpoint to {directory}: it is a file")
    if not any(directory.iterdir()):
        return directory
    try:
        _read_meta(directory)
    except (CheckpointError, OSError):
        raise CheckpointError(
            f"refusing to overwrite {directory}: it exists and is not a napari-ssl checkpoint; choose another --out"
        ) from None
    return directory


def save(
    directory: str | os.PathLike[str],
    model_state: Mapping[str, torch.Tensor],
    meta: Checkpoint | Mapping[str, Any],
    optimizer_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically and return its path.

    Parameters
    ----------
    directory : path
        The checkpoint folder; replaced if it exists (the old one survives until the new one is complete).
        A folder that exists, is not empty and is not a napari-ssl checkpoint is refused (``CheckpointError``).
    model_state : mapping of str to Tensor
        A ``state_dict``; tensors are made contiguous and copied to CPU. Shared tensors are stored once each.
    meta : Checkpoint or mapping
        The typed checkpoint (:mod:`napari_ssl.meta`; what the trainer writes) or JSON-serialisable metadata;
        ``format``, ``format_version``, ``files`` and ``versions`` are added.
    optimizer_state : mapping, optional
        ``optimizer.state_dict()`` (tensors and numbers only), stored for resuming.
    """
    import torch
    from safetensors.torch import save_file

    directory = check_target(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model_state.items()}
        save_file(tensors, str(tmp / MODEL_FILE))
        files = [MODEL_FILE]
        if optimizer_state is not None:
            torch.save(dict(optimizer_state), tmp / OPTIMIZER_FILE)
            files.append(OPTIMIZER_FILE)
        record = dict(_jsonify(meta.to_dict() if isinstance(meta, Checkpoint) else dict(meta)))
        record["format"] = FORMAT
        record["format_version"] = FORMAT_VERSION
        record.setdefault("versions", package_versions())
        record["files"] = {
            name: {"size": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)} for name in files
        }
        (tmp / META_FILE).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
        for name in [*files, META_FILE]:
            _fsync_file(tmp / name)
        _fsync_dir(tmp)
        previous = _previous(directory)
        if previous.exists():
            shutil.rmtree(previous)
        if directory.exists():
            os.replace(directory, previous)
        os.replace(tmp, directory)
        _fsync_dir(directory.parent)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _resolve(directory: str | os.PathLike[str]) -> Path:
    directory = Path(directory)
    if directory.is_file() and directory.name in {MODEL_FILE, META_FILE}:
        directory = directory.parent
    if (directory / META_FILE).is_file():
        return directory
    previous = _previous(directory)
    if (previous / META_FILE).is_file():  # a crash between the two renames of save()
        return previous
    if not directory.exists():
        raise FileNotFoundError(f"checkpoint {directory} does not exist")
    raise CheckpointError(f"{directory} is not a napari-ssl checkpoint (no {META_FILE})")


def _read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's raw ``meta.json`` (validated as a napari-ssl checkpoint); private: read it typed with
    :func:`open_checkpoint`."""
    path = _resolve(directory) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt meta.json ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a napari-ssl checkpoint")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta['format_version']} is newer than this napari-ssl "
            f"(reads up to {FORMAT_VERSION})"
        )
    return meta


def is_checkpoint(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds a ``meta.json`` (a quick look: :func:`open_checkpoint` says whether it reads)."""
    return (Path(directory) / META_FILE).is_file()


def open_checkpoint(
    directory: str | os.PathLike[str], *, kinds: tuple[str, ...] | None = None
) -> SegmenterCheckpoint | PretrainCheckpoint:
    """The typed checkpoint of the folder ``directory`` (its ``meta.json``; no torch, the weights are not read).

    Parameters
    ----------
    directory : path
        A checkpoint folder (or its ``meta.json`` / ``model.safetensors``).
    kinds : tuple of str, optional
        The kinds the caller takes (``"segment"``, ``"pretrain"``); another kind raises
        :class:`~napari_ssl.meta.CheckpointKindError` (its ``kind`` says what the folder holds) before the
        file's completeness is checked.

    Raises
    ------
    FileNotFoundError
        No such folder.
    CheckpointError
        Not a napari-ssl checkpoint, corrupt JSON, an incomplete file or one from a newer napari-ssl (one sentence).
    """
    folder = _resolve(directory)
    return from_dict(_read_meta(folder), source=str(directory), kinds=kinds, path=str(folder))


def check_weights(ck: Checkpoint) -> Path:
    """The weights file of the checkpoint ``ck``, present and of the size its ``meta.json`` records (no checksum:
    a quick check for the GUI thread; :func:`load` verifies the SHA-256)."""
    weights = Path(ck.path) / MODEL_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: the weights file is missing")
    expected = (ck.files or {}).get(MODEL_FILE) or {}
    size = weights.stat().st_size
    if expected.get("size") is not None and size != int(expected["size"]):
        raise CheckpointError(f"{weights}: truncated or altered ({size} bytes, meta.json says {expected['size']})")
    return weights


def _verify(directory: Path, meta: Mapping[str, Any], name: str) -> Path:
    path = directory / name
    expected = meta.get("files", {}).get(name)
    if expected is None:
        raise CheckpointError(f"{directory}: meta.json does not list {name}")
    if not path.is_file():
        raise CheckpointError(f"{directory}: {name} is missing")
    size = path.stat().st_size
    if size != expected["size"]:
        raise CheckpointError(
            f"{path}: truncated or altered ({size} bytes, meta.json says {expected['size']})"
        )
    if _sha256(path) != expected["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch (corrupt or altered file)")
    return path


def load_weights(directory: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The weights of a checkpoint folder (a ``state_dict``), their size and SHA-256 verified against ``meta.json``.

    Raises :class:`CheckpointError` (a ``ValueError``) for a truncated, corrupt or foreign checkpoint and
    ``FileNotFoundError`` when the folder does not exist.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = _resolve(directory)
    path = _verify(folder, _read_meta(folder), MODEL_FILE)
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read weights ({exc})") from exc


def load(
    directory: str | os.PathLike[str], *, device: str | torch.device = "cpu", kinds: tuple[str, ...] | None = None
) -> tuple[dict[str, torch.Tensor], SegmenterCheckpoint | PretrainCheckpoint]:
    """``(state_dict, checkpoint)``: :func:`load_weights` and :func:`open_checkpoint` (``kinds`` as there)."""
    ck = open_checkpoint(directory, kinds=kinds)
    return load_weights(ck.path, device=device), ck


def load_optimizer(
    directory: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """The stored optimizer state (``None`` when the checkpoint has none), read with ``weights_only=True``."""
    folder = _resolve(directory)
    meta = _read_meta(folder)
    if OPTIMIZER_FILE not in meta.get("files", {}):
        return None
    return safe_torch_load(_verify(folder, meta, OPTIMIZER_FILE), device=device)


def safe_torch_load(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors, numbers, strings and containers only; anything else is refused."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: refused to load (not plain tensors and numbers): {first}") from exc
