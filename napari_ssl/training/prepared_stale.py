"""Outdated entries of the prepared dataset (:mod:`napari_ssl.training.prepared`), removed after a successful build.

A changed file gets a new entry (its key is a hash of the file's identity); the old one would stay on disk forever.
After a build, :func:`remove_outdated` removes the entries *of the build's preprocessing key* that no source needs
any more: the old versions of the build's own sources (same resolved path, another identity), and those of files
that no longer exist in the data folders the build was given (any depth below a folder given; beside a file given).

- **Other plans untouched**: an entry's folder name is the hash of its manifest's identity and of its preprocessing
  key (:func:`~napari_ssl.training.prepared_entry.key_of`); only an entry whose name is that hash with the build's
  key is considered, so a cache folder shared with runs of other plans (``--cache DIR``) keeps theirs, and nothing
  else in the folder (a user's file, an entry of another format) is ever removed.
- **Atomic**: an entry is renamed to ``.tmp-stale-<name>-<pid>`` (a build or a reader sees it whole or not at all),
  then deleted; a removal killed midway leaves a temporary folder the next build removes.
- **Entries in use are kept**: every build records the entries its process uses in ``in-use/<host>-<pid>.json``
  (removed when the process exits); an entry another live process lists is never removed (a process of this host:
  while its pid runs; of another host sharing the folder: while its record exists). A reader that has mapped an
  entry's arrays would keep reading them after removal (POSIX keeps an unlinked file's pages), but DataLoader
  workers map a scan on first use, by path, so the record is what keeps a concurrent run whole.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from napari_ssl.training.prepared_entry import FORMAT, MANIFEST, _write_json, key_of

IN_USE = "in-use"
_ENTRY_NAME = re.compile(r"[0-9a-f]{24}")
_registered: set[str] = set()


def alive(pid: int) -> bool:
    """True while process ``pid`` of this host runs (this process included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: running
        return True
    return True


def _drop(path: str) -> None:  # pragma: no cover - interpreter exit
    with contextlib.suppress(OSError):
        os.unlink(path)


def mark_in_use(root: Path, entries: Iterable[str]) -> None:
    """Record that this process uses ``entries`` of ``root`` (its last build's: a process runs one at a time)."""
    record = root / IN_USE / f"{socket.gethostname()}-{os.getpid()}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    _write_json(record, {"host": socket.gethostname(), "pid": os.getpid(), "entries": sorted(set(entries))})
    if str(record) not in _registered:
        _registered.add(str(record))
        atexit.register(_drop, str(record))


def in_use(root: Path) -> set[str]:
    """The entries of ``root`` live processes recorded; the records of this host's ended processes are removed."""
    used: set[str] = set()
    host = socket.gethostname()
    for record in sorted((root / IN_USE).glob("*.json")):
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
            entries, pid, their_host = data["entries"], int(data["pid"]), str(data["host"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours: keep it, count nothing
        if their_host == host and not alive(pid):
            with contextlib.suppress(OSError):
                record.unlink()
            continue
        used.update(str(e) for e in entries)
    return used


def _size(folder: Path) -> int:
    total = 0
    for f in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if f.is_file() and not f.is_symlink():
                total += f.stat().st_size
    return total


def _under(path: Path, folders: Sequence[Path], beside: Sequence[Path]) -> bool:
    return any(f in path.parents for f in folders) or path.parent in beside


def remove_outdated(root: Path, prep_key: str, identities: Sequence[Any], data: Sequence[str | os.PathLike[str]],
                    keep: Iterable[str]) -> tuple[int, int]:
    """Remove the outdated entries of ``prep_key`` in ``root`` (see the module docstring); returns how many and the
    bytes freed.

    ``identities`` are the build's sources' (:func:`~napari_ssl.training.prepared_entry.identity`), ``data`` the
    files and folders it was given, ``keep`` its own entries' names.
    """
    current = {str(i[0]) for i in identities}
    given = [Path(d).expanduser().resolve() for d in data]
    folders = [d for d in given if d.is_dir()]
    beside = [d.parent for d in given if not d.is_dir()]
    protected = set(keep) | in_use(root)
    removed = freed = 0
    for entry in sorted(root.iterdir()):
        if not _ENTRY_NAME.fullmatch(entry.name) or entry.name in protected or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
            ident = manifest["identity"]
            source = Path(str(ident[0]))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            continue
        if manifest.get("format") != FORMAT or key_of(ident, prep_key) != entry.name:
            continue  # another plan's (or format's) entry
        if str(source) not in current and not (_under(source, folders, beside) and not source.exists()):
            continue  # a scan of another run, or one that still exists: not ours to judge
        doomed = root / f".tmp-stale-{entry.name}-{os.getpid()}"
        try:
            os.rename(entry, doomed)
        except OSError:  # removed or renamed by another build meanwhile
            continue
        freed += _size(doomed)
        removed += 1
        shutil.rmtree(doomed, ignore_errors=True)
    return removed, freed


__all__ = ["IN_USE", "alive", "in_use", "mark_in_use", "remove_outdated"]
