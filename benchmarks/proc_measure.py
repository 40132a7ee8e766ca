"""What the benchmarks measure alike: the shared data folder, a folder's size on disk, and the memory of a process
tree (a run and its children: DataLoader workers, preparation workers), sampled while it runs.

Unique memory (USS) is the pages only one process maps (``Private_Clean + Private_Dirty`` of
``/proc/<pid>/smaps_rollup``, psutil's ``uss``); summed over a tree it counts nothing twice (pages a fork shares
copy-on-write are shared, not private). It also counts a memory-mapped file's page-cache pages that one process
alone has touched, which the kernel can drop; ``pss_anon`` (the tree's proportional anonymous memory) is what
cannot be dropped. PSS divides every page between its users, so the tree's PSS is its footprint.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

_FIELDS = {"Private_Clean": "uss", "Private_Dirty": "uss", "Private_Hugetlb": "uss", "Pss": "pss",
           "Pss_Anon": "pss_anon", "Rss": "rss"}


def dir_size(path: str | Path) -> int:
    """Bytes of every file below ``path`` (symbolic links not followed)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink())


def process_memory(pid: int) -> dict[str, int] | None:
    """``uss``, ``pss``, ``pss_anon`` and ``rss`` of one process in bytes; ``None`` once it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:  # no smaps_rollup (an older kernel) or not readable: psutil reads smaps
        try:
            import psutil

            info = psutil.Process(pid).memory_full_info()
        except Exception:  # psutil missing, or the process ended meanwhile
            return None
        return {"uss": info.uss, "pss": getattr(info, "pss", 0), "pss_anon": 0, "rss": info.rss}
    out = dict.fromkeys(("uss", "pss", "pss_anon", "rss"), 0)
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        if name in _FIELDS:
            out[_FIELDS[name]] += int(rest.split()[0]) * 1024  # kB
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (psutil if installed, else ``/proc/<pid>/task/*/children``)."""
    try:
        import psutil

        try:
            return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
        except psutil.Error:
            return [pid]
    except ImportError:
        pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


def tree_memory(pid: int) -> dict[str, int]:
    """The sums of :func:`process_memory` over ``pid``'s tree, and ``processes``: how many were alive."""
    total = dict.fromkeys(("uss", "pss", "pss_anon", "rss", "processes"), 0)
    for p in process_tree(pid):
        mem = process_memory(p)
        if mem is not None:
            total["processes"] += 1
            for key, value in mem.items():
                total[key] += value
    return total


class TreeSampler:
    """Samples :func:`tree_memory` of ``pid`` every ``interval`` s on a thread, from ``start()`` to ``stop()``;
    :meth:`peak` is the largest sum of one field between two times (seconds since ``start``)."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = 0.0

    def start(self) -> TreeSampler:
        self.t0 = time.perf_counter()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            mem = tree_memory(self.pid)
            if mem["processes"]:
                self.samples.append((time.perf_counter() - self.t0, mem))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, key: str = "uss", start: float = 0.0, end: float = float("inf")) -> int:
        return max((m[key] for t, m in self.samples if start <= t <= end), default=0)
