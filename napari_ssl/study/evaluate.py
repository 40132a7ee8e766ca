"""The label-efficiency study: fine-tune from scratch and from each pretrained checkpoint at several numbers of
labelled cases and seeds, with the same budget and recipe, and score every model on held-out test scans (the seed
papers' comparison).

Every run of a study uses the same network size, patch, batch, budget (``steps`` and/or ``minutes``), spacing,
normalisation and fine-tuning recipe (learning rate, warm-up, what is transferred, the pretrained layers' learning-
rate factor); only the initial weights differ. The scratch baseline follows the pretrained checkpoints' spacing and
normalisation (when they agree), so it sees the same voxels. Seed ``s`` picks the labelled cases (the same ones for
every method) and the initial weights of the new layers. Test scans are segmented on their own grid
(:func:`napari_ssl.inference.segment.segment`) and scored with MONAI's Dice per class.

Outputs in ``out``: ``runs.csv`` (one row per run), ``summary.csv`` / ``summary.md`` (mean +- sd over seeds and the
paired gain over scratch, :mod:`napari_ssl.study.report`), ``gains.csv``, ``dice_vs_labelled.png`` and each
run's checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.study.report import markdown, paired_gains, plot, summarize, write_tables
from napari_ssl.training.data import Normalization

DEFAULT_FRACTIONS = (0.25, 0.5, 1.0)


def split_method(item: str) -> tuple[str | None, str]:
    """``NAME=DIR`` -> (NAME, DIR); a plain ``DIR`` -> (None, DIR)."""
    name, sep, path = str(item).partition("=")
    if sep and name and "/" not in name and not Path(item).exists():
        return name, path
    return None, str(item)


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of a study (see the module docstring).

    ``images`` / ``labels`` are the training pool; ``test_images`` / ``test_labels`` the test scans (when empty,
    ``test_fraction`` of the cases are held out, chosen by ``split_seed``). The labelled settings are
    ``n_labelled`` (numbers of labelled training cases) and ``fractions`` (fractions of the pool, at least one
    case); with neither, the fractions 0.25, 0.5, 1. ``pretrained`` lists checkpoint folders, each optionally
    ``NAME=DIR`` to name its method; ``scratch`` adds the baseline. ``backbone`` defaults to the pretrained
    checkpoints'. The budget is ``steps`` and/or ``minutes`` per run (200 steps when neither is given).
    ``transfer``, ``pretrained_lr_scale``, ``warmup`` and ``lr`` are the fine-tuning recipe
    (:class:`~napari_ssl.training.config.FinetuneConfig`), the same for every run.
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
    fractions: tuple[float, ...] = ()
    n_labelled: tuple[int, ...] = ()
    seeds: tuple[int, ...] = (0, 1)
    steps: int | None = None
    minutes: float | None = None
    batch_size: int = 2
    patch_size: Any = None
    backbone: str | None = None
    spacing: tuple[float, float, float] | None = None
    normalization: Normalization | None = None
    lr: float = 3e-3
    warmup: int = 20
    transfer: str = "auto"
    pretrained_lr_scale: float = 1.0
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
        n_train = len(self.images) if self.test_images else len(self.images) - n_test
        if n_train < 1:
            raise ValueError(f"{len(self.images)} case(s) cannot be split into training and test; give --test-images")
        if not self.pretrained and not self.scratch:
            raise ValueError("nothing to compare: give pretrained checkpoints and/or keep the scratch baseline")
        names = [split_method(p)[0] for p in self.pretrained]
        named = [n for n in names if n]
        if len(set(named)) != len(named) or "scratch" in named:
            raise ValueError(f"method names must be distinct and not 'scratch', got {', '.join(named)}")
        fractions = tuple(float(f) for f in self.fractions)
        if any(not 0 < f <= 1 for f in fractions):
            raise ValueError(f"label fractions must be in (0, 1], got {self.fractions}")
        counts = tuple(int(n) for n in self.n_labelled)
        if any(n < 1 for n in counts):
            raise ValueError(f"--n-labelled must be >= 1, got {' '.join(map(str, counts))}")
        too_many = [n for n in counts if n > n_train]
        if too_many:
            raise ValueError(f"--n-labelled {max(too_many)} is more than the {n_train} training case(s) "
                             f"({len(self.images)} given, {0 if self.test_images else n_test} held out for testing)")
        if not fractions and not counts:
            fractions = DEFAULT_FRACTIONS
        object.__setattr__(self, "fractions", fractions)
        object.__setattr__(self, "n_labelled", counts)
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"give at least one seed, each once, got {self.seeds}")
        if self.steps is None and self.minutes is None:
            object.__setattr__(self, "steps", 200)
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.minutes is not None and not float(self.minutes) > 0:
            raise ValueError(f"minutes must be a positive number, got {self.minutes}")
        if self.transfer not in ("auto", "encoder", "encoder+decoder"):
            raise ValueError(f"transfer must be 'auto', 'encoder' or 'encoder+decoder', got {self.transfer!r}")
        if not self.pretrained_lr_scale > 0:
            raise ValueError(f"pretrained_lr_scale must be a positive number, got {self.pretrained_lr_scale}")

    def split(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(training pool, test set) as (image, labels) pairs."""
        pairs = list(zip(self.images, self.labels, strict=False))
        if self.test_images:
            return pairs, list(zip(self.test_images, self.test_labels, strict=False))
        n_test = max(1, round(len(pairs) * self.test_fraction))
        order = np.random.default_rng([self.split_seed, 23]).permutation(len(pairs))
        test = {int(i) for i in order[:n_test]}
        return [p for i, p in enumerate(pairs) if i not in test], [p for i, p in enumerate(pairs) if i in test]

    def label_counts(self, n_train: int) -> list[tuple[int, float | str]]:
        """Distinct (labelled cases, fraction or '') settings, fewest first (a fraction's count is rounded)."""
        settings: dict[int, float | str] = dict.fromkeys(self.n_labelled, "")
        for f in self.fractions:
            settings.setdefault(min(n_train, max(1, round(f * n_train))), f)
        return sorted(settings.items())


def labelled_cases(n_train: int, n: int, seed: int) -> list[int]:
    """Indices of the ``n`` labelled cases of seed ``seed`` (the same for every method).

    One shuffled order of the pool, and seed ``s`` takes its ``s``-th run of ``n`` cases (wrapping round), so
    seeds label different cases as long as the pool holds them: a mean over seeds is a mean over cases too.
    """
    order = np.random.default_rng(13).permutation(n_train)
    return sorted(int(order[(seed * n + j) % n_train]) for j in range(n))


def _method_name(path: str) -> str:
    from napari_ssl import checkpoint

    name, path = split_method(path)
    if name:
        return name
    ck = checkpoint.open_checkpoint(path)
    pretexts = "+".join(getattr(ck, "pretexts", ()) or [ck.kind])
    return f"{pretexts} ({Path(path).name})"


def evaluate(config: EvaluateConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every (label setting, seed, method) and write the tables and the plot; returns the per-run rows."""
    out = Path(config.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for row in _runs(config, log):
        rows.append(row)
        write_tables(rows, out)  # partial results survive an interruption
    if rows:
        plot(rows, out / "dice_vs_labelled.png")
    return rows


def _backbone_size(path: str) -> str | None:
    """The network size of a pretraining (3D, else 2D backbone) or segmentation checkpoint."""
    from napari_ssl import checkpoint

    spec = checkpoint.open_checkpoint(path).backbone  # a pretraining run's: its 3D, else its 2D backbone
    return None if spec is None else spec.size


def _shared_setting(paths: list[str], key: str) -> Any:
    """The checkpoints' ``spacing`` or ``normalization`` where they all agree, else ``None``."""
    from napari_ssl import checkpoint

    values = [getattr(checkpoint.open_checkpoint(p), key) for p in paths]
    return values[0] if all(v == values[0] for v in values) else None


def _runs(config: EvaluateConfig, log: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    from dataclasses import replace

    from napari_ssl import io
    from napari_ssl.inference.segmenter import open_segmenter
    from napari_ssl.training.finetune import (
        FinetuneConfig,
        dice_per_class,
        finetune,
        parse_classes,
        read_class_names,
        remap_labels,
    )

    names = read_class_names(config.classes_file) if config.classes_file else None
    classes = parse_classes(config.classes, names)
    train, test = config.split()
    paths = [split_method(p)[1] for p in config.pretrained]
    methods: list[tuple[str, str | None]] = [(_method_name(p), split_method(p)[1]) for p in config.pretrained]
    backbone, spacing, norm = config.backbone, config.spacing, config.normalization
    if paths:
        if backbone is None:
            sizes = {_backbone_size(p) for p in paths}
            backbone = sizes.pop() if len(sizes) == 1 else None
        if spacing is None:
            spacing = _shared_setting(paths, "spacing")
        if norm is None:
            norm = _shared_setting(paths, "normalization")
    if config.scratch:
        methods.insert(0, ("scratch", None))
    test_data = []
    for image, label in test:
        channels = [io.read(p) for p in image.split(",") if p]
        test_data.append((channels, remap_labels(io.read(label).array, classes)))
    base = FinetuneConfig(
        images=(train[0][0],), labels=(train[0][1],), classes=config.classes, classes_file=config.classes_file,
        out=str(Path(config.out) / "runs" / "x"), steps=config.steps, minutes=config.minutes,
        batch_size=config.batch_size, patch_size=config.patch_size, spacing=spacing, normalization=norm,
        lr=config.lr, warmup=config.warmup, transfer=config.transfer, pretrained_lr_scale=config.pretrained_lr_scale,
        val_fraction=0.0, overlap=config.overlap, device=config.device, num_threads=config.num_threads,
    )
    settings = config.label_counts(len(train))
    total = len(methods) * len(settings) * len(config.seeds)
    k = 0
    for n_lab, fraction in settings:
        for seed in config.seeds:
            picked = [train[i] for i in labelled_cases(len(train), n_lab, seed)]
            for method, pretrained in methods:
                k += 1
                tag = f"{'scratch' if pretrained is None else Path(pretrained).name}_n{n_lab}_s{seed}"
                run_cfg = replace(
                    base, images=tuple(p[0] for p in picked), labels=tuple(p[1] for p in picked),
                    pretrained=pretrained, backbone=backbone if pretrained is None else None, seed=seed,
                    out=str(Path(config.out) / "runs" / tag),
                )
                t0 = time.perf_counter()
                final = None
                for event in finetune(run_cfg):
                    final = event
                train_s = time.perf_counter() - t0
                model = open_segmenter(final.path, device=config.device)
                scores: dict[str, list[float]] = {}
                for channels, truth in test_data:
                    pred = model.predict(channels, overlap=config.overlap).array
                    for name, value in dice_per_class(pred, truth, classes).items():
                        scores.setdefault(name, []).append(value)
                row = {"method": method, "n_labelled": n_lab, "fraction": fraction, "seed": seed,
                       "steps": int(final.step), "minutes": config.minutes or "", "train_s": round(train_s, 1),
                       "seconds": round(time.perf_counter() - t0, 1),
                       "cases": " ".join(f"{Path(p[1]).parent.name}/{Path(p[1]).name}" for p in picked),
                       **{f"dice/{n}": float(np.mean(v)) for n, v in scores.items()}}
                log(f"[{k}/{total}] {method}, {n_lab} labelled case(s), seed {seed}: "
                    + ", ".join(f"{n} {np.mean(v):.3f}" for n, v in scores.items())
                    + f" ({row['steps']} steps, {row['seconds']:.0f} s)")
                yield row


__all__ = ["EvaluateConfig", "evaluate", "labelled_cases", "markdown", "paired_gains", "plot", "summarize",
           "write_tables"]
