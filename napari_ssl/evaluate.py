"""SSL vs scratch: fine-tune from scratch and from each pretrained checkpoint at several label fractions and seeds,
with the same budget, and score every model on held-out test scans (the seed papers' comparison).

Every run uses the same network size, patch, batch, steps, spacing, normalisation and learning rate; only the
initial weights differ. Test scans are segmented on their own grid (:func:`napari_ssl.segment.segment`) and
scored with MONAI's Dice per class (region Dice for merged / nested groups, see :mod:`napari_ssl.finetune`).

Outputs in ``out``: ``runs.csv`` (one row per run), ``summary.csv`` and ``summary.md`` (mean +- std Dice per
class over seeds, per method and label fraction), ``dice_vs_fraction.png``, and each run's checkpoint.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.data import Normalization


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of an evaluation (see the module docstring).

    ``images`` / ``labels`` are the training pool; ``test_images`` / ``test_labels`` the test scans (when empty,
    ``test_fraction`` of the cases are held out, chosen by ``split_seed``). ``fractions`` are fractions of the
    training pool that are labelled (at least one case). ``pretrained`` lists checkpoint folders; ``scratch`` adds
    the baseline. ``backbone`` defaults to the pretrained checkpoints' (so both start from the same network).
    """

    images: tuple[str, ...]
    labels: tuple[str, ...]
    classes: str
    out: str
    pretrained: tuple[str, ...] = ()
    scratch: bool = True
    test_images: tuple[str, ...] = ()
    test_labels: tuple[str, ...] = ()
    test_fraction: float = 0.25
    split_seed: int = 0
    classes_file: str | None = None
    fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    seeds: tuple[int, ...] = (0, 1)
    steps: int = 200
    batch_size: int = 2
    patch_size: Any = None
    backbone: str | None = None
    spacing: tuple[float, float, float] | None = None
    normalization: Normalization | None = None
    lr: float = 3e-3
    overlap: float = 0.25
    device: str = "auto"
    num_threads: int = 0

    def __post_init__(self) -> None:
        for name in ("images", "labels", "test_images", "test_labels", "pretrained"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(str(v) for v in ((value,) if isinstance(value, str) else value)))
        if len(self.images) != len(self.labels) or len(self.test_images) != len(self.test_labels):
            raise ValueError("give one label volume per image (training and test sets)")
        n_test = len(self.test_images) or max(1, round(len(self.images) * self.test_fraction))
        if not self.test_images and len(self.images) - n_test < 1:
            raise ValueError(f"{len(self.images)} case(s) cannot be split into training and test; give --test-images")
        if not self.pretrained and not self.scratch:
            raise ValueError("nothing to compare: give pretrained checkpoints and/or keep the scratch baseline")
        fractions = tuple(float(f) for f in self.fractions)
        if not fractions or any(not 0 < f <= 1 for f in fractions):
            raise ValueError(f"label fractions must be in (0, 1], got {self.fractions}")
        object.__setattr__(self, "fractions", fractions)
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.seeds:
            raise ValueError("give at least one seed")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    def split(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(training pool, test set) as (image, labels) pairs."""
        pairs = list(zip(self.images, self.labels, strict=False))
        if self.test_images:
            return pairs, list(zip(self.test_images, self.test_labels, strict=False))
        n_test = max(1, round(len(pairs) * self.test_fraction))
        order = np.random.default_rng([self.split_seed, 23]).permutation(len(pairs))
        test = {int(i) for i in order[:n_test]}
        return [p for i, p in enumerate(pairs) if i not in test], [p for i, p in enumerate(pairs) if i in test]


def _method_name(path: str) -> str:
    from napari_ssl import checkpoint

    meta = checkpoint.read_meta(path)
    pretexts = "+".join(meta.get("pretexts") or [meta.get("kind", "?")])
    return f"{pretexts} ({Path(path).name})"


def _n_labelled(fraction: float, n: int) -> int:
    return min(n, max(1, round(fraction * n)))


def evaluate(config: EvaluateConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every (method, fraction, seed) and write the tables and the plot; returns the per-run rows."""
    out = Path(config.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for row in _runs(config, log):
        rows.append(row)
        write_tables(rows, out)  # partial results survive an interruption
    if rows:
        plot(rows, out / "dice_vs_fraction.png")
    return rows


def _runs(config: EvaluateConfig, log: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    from napari_ssl import checkpoint, io
    from napari_ssl.finetune import (
        FinetuneConfig,
        dice_per_class,
        finetune,
        parse_classes,
        read_class_names,
        remap_labels,
    )
    from napari_ssl.segment import load_model, segment

    names = read_class_names(config.classes_file) if config.classes_file else None
    classes = parse_classes(config.classes, names)
    train, test = config.split()
    methods: list[tuple[str, str | None]] = [(_method_name(p), p) for p in config.pretrained]
    backbone = config.backbone
    if backbone is None and config.pretrained:
        sizes = {(checkpoint.read_meta(p).get("backbones") or {}).get("3d", {}).get("size") for p in config.pretrained}
        backbone = sizes.pop() if len(sizes) == 1 else None
    if config.scratch:
        methods.insert(0, ("scratch", None))
    test_data = []
    for image, label in test:
        channels = [io.read(p) for p in image.split(",") if p]
        truth = remap_labels(io.read(label).array, classes)
        test_data.append((Path(label).parent.name or Path(label).stem, channels, truth))
    base = FinetuneConfig(
        images=(train[0][0],), labels=(train[0][1],), classes=config.classes, classes_file=config.classes_file,
        out=str(Path(config.out) / "runs" / "x"), steps=config.steps, batch_size=config.batch_size,
        patch_size=config.patch_size, spacing=config.spacing, normalization=config.normalization, lr=config.lr,
        val_fraction=0.0, overlap=config.overlap, device=config.device, num_threads=config.num_threads,
    )
    total = len(methods) * len(config.fractions) * len(config.seeds)
    k = 0
    for fraction in config.fractions:
        n_lab = _n_labelled(fraction, len(train))
        for seed in config.seeds:
            for method, pretrained in methods:
                k += 1
                tag = f"{'scratch' if pretrained is None else Path(pretrained).name}_f{fraction:g}_s{seed}"
                run_cfg = replace(
                    base, images=tuple(p[0] for p in train), labels=tuple(p[1] for p in train), pretrained=pretrained,
                    backbone=backbone if pretrained is None else None, n_labelled=n_lab, seed=seed,
                    out=str(Path(config.out) / "runs" / tag),
                )
                t0 = time.perf_counter()
                final = None
                for event in finetune(run_cfg):
                    final = event
                model = load_model(final.path, device=config.device)
                scores: dict[str, list[float]] = {}
                for _, channels, truth in test_data:
                    pred = segment(channels, model, overlap=config.overlap).array
                    for name, value in dice_per_class(pred, truth, classes).items():
                        scores.setdefault(name, []).append(value)
                row = {"method": method, "fraction": fraction, "n_labelled": n_lab, "seed": seed,
                       "steps": config.steps, "seconds": round(time.perf_counter() - t0, 1),
                       **{f"dice/{n}": float(np.mean(v)) for n, v in scores.items()}}
                log(f"[{k}/{total}] {method}, {n_lab} labelled case(s) ({fraction:g}), seed {seed}: "
                    + ", ".join(f"{n} {np.mean(v):.3f}" for n, v in scores.items()) + f" ({row['seconds']:.0f} s)")
                yield row


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std of each Dice column over seeds, per (method, fraction)."""
    keys = [k for k in rows[0] if k.startswith("dice/")] if rows else []
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], float(row["fraction"])), []).append(row)
    out = []
    for (method, fraction), items in groups.items():
        entry: dict[str, Any] = {"method": method, "fraction": fraction, "n_labelled": items[0]["n_labelled"],
                                 "seeds": len(items)}
        for key in keys:
            vals = np.array([float(r[key]) for r in items])
            entry[f"{key}/mean"] = float(vals.mean())
            entry[f"{key}/std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        out.append(entry)
    return sorted(out, key=lambda e: (e["fraction"], e["method"] != "scratch", e["method"]))


def write_tables(rows: Sequence[dict[str, Any]], out: Path) -> None:
    """``runs.csv``, ``summary.csv`` and ``summary.md`` in ``out``."""
    if not rows:
        return
    with open(out / "runs.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows)
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    classes = [k.split("/", 1)[1] for k in rows[0] if k.startswith("dice/")]
    lines = [
        "| method | label fraction | labelled scans | seeds | " + " | ".join(classes) + " |",
        "|---|---|---|---|" + "---|" * len(classes),
    ]
    for e in summary:
        cells = [f"{e[f'dice/{c}/mean']:.3f} +- {e[f'dice/{c}/std']:.3f}" for c in classes]
        lines.append(f"| {e['method']} | {e['fraction']:g} | {e['n_labelled']} | {e['seeds']} | " + " | ".join(cells) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Dice vs label fraction, one panel per class, one line (mean +- std over seeds) per method."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    summary = summarize(rows)
    classes = [k.split("/", 1)[1] for k in rows[0] if k.startswith("dice/")]
    fig = Figure(figsize=(3.2 * len(classes), 3.0), dpi=110)
    axes = [fig.add_subplot(1, len(classes), i + 1) for i in range(len(classes))]
    methods = list(dict.fromkeys(e["method"] for e in summary))
    for ax, cls in zip(axes, classes, strict=False):
        for method in methods:
            pts = sorted((e["fraction"], e[f"dice/{cls}/mean"], e[f"dice/{cls}/std"]) for e in summary if e["method"] == method)
            xs, ys, ss = (np.array(v) for v in zip(*pts, strict=False))
            ax.errorbar(xs, ys, yerr=ss, marker="o", capsize=3, label=method)
        ax.set_title(cls, fontsize=9)
        ax.set_xlabel("label fraction", fontsize=8)
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("test Dice", fontsize=8)
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    return path


__all__ = ["EvaluateConfig", "evaluate", "plot", "summarize", "write_tables"]
