"""Tables and plot of a label-efficiency study (:mod:`napari_ssl.study.evaluate`): mean +- sd over seeds per method and
number of labelled cases, and each method's gain over scratch as a **paired** per-seed difference (the same seed
picks the same labelled cases and the same patches for every method, so only the initial weights differ).

Rows are plain dicts with ``method``, ``n_labelled``, ``fraction``, ``seed`` and ``dice/<class>`` keys (the
``runs.csv`` of a study). Written files: ``runs.csv``, ``summary.csv``, ``summary.md``, ``gains.csv`` (one line
per method, labelled count, seed and class: the method's Dice, scratch's and their difference) and the plot.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BASELINE = "scratch"


def dice_classes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Class names of the ``dice/<class>`` columns, in order."""
    return [k.split("/", 1)[1] for k in rows[0] if k.startswith("dice/")] if rows else []


def _sd(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def paired_gains(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (method, labelled count, seed, class) that has a scratch run with the same seed and count:
    the method's Dice, scratch's, and ``diff`` = method - scratch."""
    base = {(int(r["n_labelled"]), int(r["seed"])): r for r in rows if r["method"] == BASELINE}
    out = []
    for row in rows:
        if row["method"] == BASELINE:
            continue
        ref = base.get((int(row["n_labelled"]), int(row["seed"])))
        if ref is None:
            continue
        for cls in dice_classes(rows):
            dice, scratch = float(row[f"dice/{cls}"]), float(ref[f"dice/{cls}"])
            out.append({"method": row["method"], "n_labelled": int(row["n_labelled"]), "seed": int(row["seed"]),
                        "class": cls, "dice": dice, "scratch": scratch, "diff": dice - scratch})
    return out


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sd (n - 1) of each Dice column over seeds per (method, labelled count), with the paired gain over
    scratch (``gain/<class>/mean``, ``gain/<class>/sd``, ``gain/<class>/wins``: seeds where the method beat it)."""
    classes = dice_classes(rows)
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], int(row["n_labelled"])), []).append(row)
    diffs: dict[tuple[str, int, str], list[float]] = {}
    for g in paired_gains(rows):
        diffs.setdefault((g["method"], g["n_labelled"], g["class"]), []).append(g["diff"])
    out = []
    for (method, n_lab), items in groups.items():
        fraction = items[0].get("fraction", "")
        entry: dict[str, Any] = {"method": method, "n_labelled": n_lab,
                                 "fraction": float(fraction) if fraction not in ("", None) else "",
                                 "seeds": len(items),
                                 "steps": float(np.mean([float(r.get("steps", 0) or 0) for r in items]))}
        for cls in classes:
            vals = np.array([float(r[f"dice/{cls}"]) for r in items])
            entry[f"dice/{cls}/mean"] = float(vals.mean())
            entry[f"dice/{cls}/sd"] = _sd(vals)
            d = np.array(diffs.get((method, n_lab, cls), []))
            entry[f"gain/{cls}/mean"] = float(d.mean()) if len(d) else ""
            entry[f"gain/{cls}/sd"] = _sd(d) if len(d) else ""
            entry[f"gain/{cls}/wins"] = f"{int((d > 0).sum())}/{len(d)}" if len(d) else ""
        out.append(entry)
    return sorted(out, key=lambda e: (e["n_labelled"], e["method"] != BASELINE, e["method"]))


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a markdown table: Dice mean +- sd and the paired gain over scratch, per class."""
    classes = dice_classes(rows)
    head = "| method | labelled cases | seeds | steps | " + " | ".join(
        f"{c} Dice | {c} gain over scratch (paired) | wins" for c in classes) + " |"
    lines = [head, "|---|---|---|---|" + "---|---|---|" * len(classes)]
    for e in summarize(rows):
        label = f"{e['n_labelled']}" + (f" ({e['fraction']:.2g})" if e["fraction"] != "" else "")
        cells = []
        for c in classes:
            gain = e[f"gain/{c}/mean"]
            cells += [f"{e[f'dice/{c}/mean']:.3f} +- {e[f'dice/{c}/sd']:.3f}",
                      "-" if gain == "" else f"{gain:+.3f} +- {e[f'gain/{c}/sd']:.3f}", e[f"gain/{c}/wins"] or "-"]
        lines.append(f"| {e['method']} | {label} | {e['seeds']} | {e['steps']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(rows: Sequence[dict[str, Any]], out: Path) -> None:
    """``runs.csv``, ``summary.csv``, ``summary.md`` and ``gains.csv`` in ``out`` (each written atomically)."""
    if not rows:
        return
    out = Path(out)
    _write_csv(out / "runs.csv", rows)
    _write_csv(out / "summary.csv", summarize(rows))
    gains = paired_gains(rows)
    if gains:
        _write_csv(out / "gains.csv", gains)
    tmp = out / "summary.md.tmp"
    tmp.write_text(markdown(rows), encoding="utf-8")
    os.replace(tmp, out / "summary.md")


def plot(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Per class: Dice vs labelled cases (mean +- sd over seeds, one marker per method) and the paired gain over
    scratch (bars, mean +- sd of the per-seed differences).

    The labelled counts are categories (1, 3, 10 side by side, not on a linear axis), each method keeps its colour
    and its offset within a category in both panels, and one legend sits beside the panels, off the data.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    summary = summarize(rows)
    classes = dice_classes(rows)
    methods = list(dict.fromkeys(e["method"] for e in summary))
    if BASELINE in methods:  # scratch first: the reference every gain is taken against
        methods.remove(BASELINE)
        methods.insert(0, BASELINE)
    counts = sorted({e["n_labelled"] for e in summary})
    fig = Figure(figsize=(10.5, 3.6 * len(classes)), dpi=110)
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    width = 0.8 / max(1, len(methods))
    offset = {m: (k - (len(methods) - 1) / 2) * width for k, m in enumerate(methods)}
    handles: dict[str, Any] = {}
    for row, cls in enumerate(classes):
        ax, bx = fig.add_subplot(len(classes), 2, 2 * row + 1), fig.add_subplot(len(classes), 2, 2 * row + 2)
        for method in methods:
            pts = sorted((counts.index(e["n_labelled"]), e[f"dice/{cls}/mean"], e[f"dice/{cls}/sd"])
                         for e in summary if e["method"] == method)
            xs, ys, ss = (np.array(v, dtype=float) for v in zip(*pts, strict=False))
            handles[method] = ax.errorbar(xs + offset[method], ys, yerr=ss, marker="o", ls="none", capsize=3,
                                          color=colors[method])
        for method in methods:
            if method == BASELINE:
                continue
            pts = [(counts.index(e["n_labelled"]), e[f"gain/{cls}/mean"], e[f"gain/{cls}/sd"])
                   for e in summary if e["method"] == method and e[f"gain/{cls}/mean"] != ""]
            if pts:
                xs, ys, ss = (np.array(v, dtype=float) for v in zip(*pts, strict=False))
                bx.bar(xs + offset[method], ys, width, yerr=ss, capsize=2, color=colors[method])
        bx.axhline(0, color="k", lw=0.8)
        handles["+0.02 goal"] = bx.axhline(0.02, color="grey", ls=":", lw=0.8)
        for a, ylabel in ((ax, f"test Dice ({cls})"), (bx, "gain over scratch (paired)")):
            a.set_xticks(range(len(counts)), [str(c) for c in counts])
            a.set_xlim(-0.6, len(counts) - 0.4)
            a.set_xlabel("labelled training cases", fontsize=8)
            a.set_ylabel(ylabel, fontsize=8)
            a.grid(True, axis="y", alpha=0.3)
        ax.set_ylim(0, 1)
    fig.legend(list(handles.values()), list(handles), fontsize=7, loc="center right", frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path


__all__ = ["dice_classes", "markdown", "paired_gains", "plot", "summarize", "write_tables"]
