"""The report of ``bench_scale.py``: issue 22's targets with pass / FAIL, and the plot (peak USS, samples/s and
seconds to the first step against the number of scans)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def targets(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, pass / FAIL / n/a) for each of issue 22's targets."""
    runs = {int(n): r for n, r in res.get("runs", {}).items()}
    rows: list[tuple[str, str, str]] = []
    first = sorted(n for n, r in runs.items() if "first" in r)
    if len(first) >= 2:
        lo, hi = runs[first[0]]["first"], runs[first[-1]]["first"]
        ratio = hi["peak_uss"] / lo["peak_uss"]
        rows.append((f"peak USS N={first[-1]} <= 1.5x N={first[0]}",
                     f"{hi['peak_uss'] / 2**20:.0f} / {lo['peak_uss'] / 2**20:.0f} MiB = {ratio:.2f}x",
                     "pass" if ratio <= 1.5 else "FAIL"))
        a, b = hi["loader"]["samples_per_s"], lo["loader"]["samples_per_s"]
        rows.append((f"loader N={first[-1]} >= 0.8x N={first[0]}", f"{a:.1f} / {b:.1f} samples/s = {a / b:.2f}x",
                     "pass" if a >= 0.8 * b else "FAIL"))
    if first:
        hi = runs[first[-1]]["first"]
        a, t = hi["loader"]["samples_per_s"], hi["train_samples_per_s"]
        rows.append((f"loader N={first[-1]} >= 2x training", f"{a:.1f} / {t:.1f} samples/s = {a / t:.2f}x",
                     "pass" if a >= 2 * t else "FAIL"))
    prep = res.get("prepare")
    if prep:
        runs_p = prep["runs"]
        text = ", ".join(f"{w} worker(s) {r['s_per_scan']:.2f} s" for w, r in runs_p.items())
        last = runs_p[max(runs_p, key=int)]
        rows.append((f"preparation s/scan ({prep['scans']} scans)", f"{text}; efficiency "
                     f"{prep['parallel_efficiency']:.2f}; {prep['source_bytes_per_scan'] / 1e6:.1f} MB source, "
                     f"{last['prepared_bytes_per_scan'] / 1e6:.1f} MB prepared a scan", "report"))
    second = sorted(n for n, r in runs.items() if "second" in r)
    if second:
        s = runs[second[-1]]["second"]["first_step_s"]
        rows.append((f"second run N={second[-1]}: first step <= 10 s", f"{s:.1f} s", "pass" if s <= 10 else "FAIL"))
    return rows


def print_targets(res: dict[str, Any]) -> None:
    rows = targets(res)
    if not rows:
        return
    width = max(len(r[0]) for r in rows)
    print(f"\n{'target':{width}s}  {'result':7s} measured")
    for name, measured, verdict in rows:
        print(f"{name:{width}s}  {verdict:7s} {measured}")
    load = max((r.get("load_before", 0.0) for runs in res.get("runs", {}).values() for r in runs.values()), default=0)
    cores = os.cpu_count() or 1
    if load >= cores:  # our own runs leave some load behind; at least the cores: other work ran
        print(f"note: the 1-minute load average before a run reached {load:.1f} on {cores} cores: other work shared "
              "the CPUs, so the seconds and samples/s vary between runs")


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {int(n): r for n, r in res.get("runs", {}).items()}
    ns = sorted(n for n, r in runs.items() if "first" in r)
    if not ns:
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for run, style in (("first", "o-"), ("second", "s--")):
        have = [n for n in ns if run in runs[n]]
        if have:
            axes[0].plot(have, [runs[n][run]["peak_uss"] / 2**20 for n in have], style, label=f"{run} run")
            axes[2].plot(have, [runs[n][run]["first_step_s"] for n in have], style, label=f"{run} run")
    limit = 1.5 * runs[ns[0]]["first"]["peak_uss"] / 2**20
    axes[0].axhline(limit, color="grey", ls=":", label="1.5x smallest N")
    axes[0].set_ylim(top=1.1 * max(limit, *(runs[n][r]["peak_uss"] / 2**20 for n in ns for r in ("first", "second")
                                            if r in runs[n])))
    axes[1].plot(ns, [runs[n]["first"]["loader"]["samples_per_s"] for n in ns], "o-", label="loader alone")
    axes[1].plot(ns, [runs[n]["first"]["train_samples_per_s"] for n in ns], "s--", label="training step")
    axes[2].axhline(10, color="grey", ls=":", label="10 s")
    axes[2].set_ylim(top=1.1 * max(11.0, *(runs[n][r]["first_step_s"] for n in ns for r in ("first", "second")
                                          if r in runs[n])))
    axes[1].set_yscale("log")
    for ax, title in zip(axes, ("peak USS of the process tree (MiB)", "samples/s", "seconds to the first step"),
                         strict=True):
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("scans N")
        ax.set_title(title, fontsize=10)
        if ax is not axes[1]:
            ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    cfg = res.get("config", {})
    fig.suptitle(f"{cfg.get('kind', '')}-like scans {cfg.get('size', '')}, {cfg.get('pretext', '')}, "
                 f"{cfg.get('backbone', '')}, {cfg.get('steps', '')} steps", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")
