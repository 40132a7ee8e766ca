"""Does the default recipe learn? BraTS whole tumour (FLAIR), trained from scratch with the defaults, on unseen cases.

The shared BraTS cases are sorted by name; the last three are the test cases and are never seen in training. The
first ``--cases`` (10, 3 or 1) are the labelled training cases (the run itself holds some of them out for its
validation, as the defaults do). Training runs in this process exactly as ``napari-ssl finetune --pretrained none
--images ... --labels ... --classes whole_tumor=1+2+4 --minutes M`` would (all cores). Then every test case is
segmented through the CLI's code path (:func:`napari_ssl.inference.segment.segment`, timed) and scored with MONAI's Dice,
beside the trivial masks (all foreground, all background) on the same case.

    python benchmarks/bench_brats.py --cases 10 --minutes 15 --out runs/brats10
    python benchmarks/bench_brats.py --plot runs/brats10 runs/brats3 runs/brats1   # docs/brats_dice_vs_time.png
    python benchmarks/bench_brats.py --device cuda --minutes 5 --out runs/brats10_cuda    # AMP on a GPU, with MFU
    # a CPU run's plan and step count replayed on a GPU (a recipe change tried over many seeds in minutes):
    python benchmarks/bench_brats.py --device cuda --minutes 0 --seed 1 --out runs/replay \
        --set steps=1383 "spacing=[1.486,1.486,1.486]" "patch_size=[64,64,64]" batch_size=2 'backbone="small"'

On CUDA the result also holds the model FLOP utilisation: FLOPs of one training step (forward and backward of the
plan's batch, counted by ``torch.utils.flop_counter``) times the steps done, over the training time, against the
GPU's dense bfloat16 peak (``--peak-tflops``, 989 for an H100 or H200 SXM).

Writes ``<out>/result.json``: the plan, steps done, held-out validation Dice over time, test Dice per case and
mean, the trivial masks' Dice, segmentation seconds per scan.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(os.environ.get("NAPARI_SSL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "brats"
CLASSES = "whole_tumor=1+2+4"


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    inter = np.logical_and(pred, truth).sum()
    total = pred.sum() + truth.sum()
    return float(2 * inter / total) if total else 1.0


def step_flops(model, batch_size: int) -> float:
    """FLOPs of one training step of ``model``'s network on a batch of the plan's patches (forward + backward)."""
    import torch
    from bench_train import count_flops

    net, device = model.net, model.device
    x = torch.randn(batch_size, model.checkpoint.in_channels, *model.checkpoint.patch_size, device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = net(x)
        out.float().mean().backward()

    net.train()
    flops = count_flops(step)
    net.zero_grad(set_to_none=True)
    net.eval()
    return flops


def sparse_labels(cases: list[Path], every: int, folder: Path) -> list[str]:
    """Each case's labels with only every ``every``-th axial slice (array axis 0) kept, written under ``folder``;
    a kept slice without tumour gets one voxel of the unused BraTS id 3 in a corner, so it counts as looked at."""
    from napari_ssl import io

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for case in cases:
        seg = io.read(case / "seg.nii.gz")
        sparse = np.zeros_like(seg.array)
        sparse[::every] = seg.array[::every]
        empty = ~sparse[::every].reshape(len(sparse[::every]), -1).any(axis=1)
        sparse[::every][empty, 0, 0] = 3
        path = folder / f"{case.name}_every{every}.nii.gz"
        io.write(seg.with_array(sparse), path)
        out.append(str(path))
    return out


def run(n_cases: int, minutes: float | None, out: Path, seed: int, modality: str, data: Path = DATA,
        device: str = "auto", peak_tflops: float = 989.0, overrides: dict | None = None,
        classes: str = CLASSES, every_nth: int = 0, model_dir: Path | None = None) -> dict:
    from napari_ssl import events, io
    from napari_ssl.classes import region_members
    from napari_ssl.inference.segment import load_model, segment, uses_modality_ensemble
    from napari_ssl.training.finetune import FinetuneConfig, finetune

    cases = sorted(p for p in data.iterdir() if p.is_dir())
    test, train = cases[-3:], cases[: min(n_cases, len(cases) - 3)]
    channels = modality.split(",")  # "flair" or e.g. "flair,t1ce,t1,t2": the input channels of each case
    labels = [str(c / "seg.nii.gz") for c in train]
    if every_nth:  # a user who painted every Nth axial slice: the others unlabelled (annotated="slices")
        labels = sparse_labels(train, every_nth, out / "labels")
        overrides = {**(overrides or {}), "annotated": "slices"}
    config = FinetuneConfig(
        images=[",".join(str(c / f"{m}.nii.gz") for m in channels) for c in train],
        labels=labels,
        classes=classes, out=str(out / "model"), minutes=minutes, seed=seed, device=device, **(overrides or {}),
    )
    t0 = time.perf_counter()
    finished = None
    for event in () if model_dir else finetune(config):  # --model: a model trained before, segmenting only
        if isinstance(event, events.Started):
            print(event.plan_text, flush=True)
            print(events.describe(event), flush=True)
        elif isinstance(event, events.Validated):
            print(f"  [{time.perf_counter() - t0:6.0f} s] {events.describe(event)}", flush=True)
        elif isinstance(event, events.Finished):
            finished = event
    train_s = time.perf_counter() - t0
    model = load_model(model_dir or out / "model", device="cpu" if device == "auto" else device)
    trained = model.checkpoint.classes  # each class's region (BraTS: core, enhancing) scored too
    members = region_members(trained)
    ensemble = uses_modality_ensemble(model.checkpoint)  # the default segments so: each case also without it

    def region_dice(pred: np.ndarray, seg: np.ndarray) -> dict[str, float]:
        return {c.name: _dice(np.isin(pred, m), np.isin(seg, c.ids))
                for c, m in zip(trained, members, strict=True)} if len(trained) > 1 else {}

    rows = []
    for case in test:
        scan = [io.read(case / f"{m}.nii.gz") for m in channels]
        seg = io.read(case / "seg.nii.gz").array
        truth = np.isin(seg, (1, 2, 4))
        t = time.perf_counter()
        pred = segment(scan if len(scan) > 1 else scan[0], model).array
        seconds = time.perf_counter() - t
        mask = pred > 0
        regions = region_dice(pred, seg)
        plain = {}
        if ensemble:
            alone = segment(scan, model, modality_ensemble=False).array
            plain = {"dice_without_ensemble": _dice(alone > 0, truth)}
            if regions:
                plain["regions_without_ensemble"] = region_dice(alone, seg)
        rows.append({"case": case.name, "dice": _dice(mask, truth), **plain,
                     "all_foreground": _dice(np.ones_like(truth), truth),
                     "all_background": _dice(np.zeros_like(truth), truth), "predicted_fraction": float(mask.mean()),
                     "true_fraction": float(truth.mean()), "segment_s": round(seconds, 2), "regions": regions})
        print(f"  {case.name}: Dice {rows[-1]['dice']:.3f} (all-foreground {rows[-1]['all_foreground']:.3f}"
              + (f", without the modality ensemble {plain['dice_without_ensemble']:.3f}" if plain else "") + "), "
              + "".join(f"{k} {v:.3f}, " for k, v in regions.items()) + f"{seconds:.1f} s", flush=True)
    meta = model.checkpoint
    gpu = {}
    if model.device.type == "cuda" and finished is not None:
        import torch

        flops = step_flops(model, meta.plan.batch_size)
        achieved = flops * finished.step / train_s
        gpu = {"gpu": torch.cuda.get_device_name(model.device), "tflop_per_step": round(flops / 1e12, 3),
               "steps_per_s": round(finished.step / train_s, 2), "achieved_tflops": round(achieved / 1e12, 2),
               "mfu": round(achieved / (peak_tflops * 1e12), 4),
               "max_memory_gib": round(torch.cuda.max_memory_allocated(model.device) / 2**30, 2)}
        print(f"  GPU {gpu}", flush=True)
    result = {
        "cases": n_cases, "minutes": minutes, "every_nth_slice": every_nth, "classes": classes, "seed": seed, "modality": modality, "train_s": round(train_s, 1),
        "threads": meta.config.get("num_threads") or len(os.sched_getaffinity(0)),
        "steps": finished.step if finished else meta.step, "model": str(model.path),
        "plan": meta.plan.to_dict() if meta.plan else None,
        "val_time": meta.history.get("val_time", []), "val_dice": meta.history.get("val/score", []),
        "best_step": meta.training.get("best_step"),
        "test": rows, "test_dice_mean": float(np.mean([r["dice"] for r in rows])),
        "modality_ensemble": ensemble,
        **({"test_dice_without_ensemble_mean": float(np.mean([r["dice_without_ensemble"] for r in rows]))}
           if ensemble else {}),
        "all_foreground_mean": float(np.mean([r["all_foreground"] for r in rows])),
        "segment_s_mean": float(np.mean([r["segment_s"] for r in rows])),
        "device": str(model.device), **gpu,
        "overrides": {k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in (overrides or {}).items()},
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("test", "plan")}), flush=True)
    return result


def plot(runs: list[Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for run_dir in runs:
        res = json.loads((run_dir / "result.json").read_text())
        if res.get("threads"):
            res["cases"] = f"{res['cases']} ({res['threads']} thread{'s' if res['threads'] > 1 else ''})"
        if res.get("modality", "flair") != "flair":
            res["cases"] = f"{res['cases']} ({res['modality'].upper().replace(',', '+')})"
        if res["val_dice"] and len(res["val_dice"]) == len(res["val_time"]):
            line = ax.plot(np.asarray(res["val_time"]) / 60, res["val_dice"], marker="o", ms=3,
                           label=f"{res['cases']} labelled case(s): held-out validation")[0]
        else:  # nothing to validate on (one case: its held-out slab holds no tumour)
            line = ax.plot([], [], label=f"{res['cases']} labelled case: no validation")[0]
        ax.scatter([res["train_s"] / 60], [res["test_dice_mean"]], marker="*", s=140, color=line.get_color(),
                   zorder=3, label=f"{res['cases']}: unseen test cases {res['test_dice_mean']:.2f}")
    ax.axhline(np.mean([json.loads((r / "result.json").read_text())["all_foreground_mean"] for r in runs]),
               color="grey", ls=":", label="all-foreground mask")
    ax.set_xlabel("training time on a 2-core AMD EPYC CPU, bfloat16 (minutes)")
    ax.set_ylabel("whole-tumour Dice (FLAIR)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("BraTS from scratch with the default plan")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget; 0: none (give steps=N by --set)")
    parser.add_argument("--set", nargs="+", default=(), metavar="KEY=JSON",
                        help="FinetuneConfig overrides (values in JSON), e.g. steps=1383 'spacing=[1.5,1.5,1.5]' foreground_ratio=0.5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modality", default="flair")
    parser.add_argument("--every-nth-slice", type=int, default=0, metavar="N",
                        help="label only every Nth axial slice of the training cases (partial annotation)")
    parser.add_argument("--classes", default=CLASSES,
                        help="classes trained (the whole tumour scored is every class together), e.g. "
                             "whole_tumor=1+2+4,tumor_core=1+4,enhancing=4")
    parser.add_argument("--data", type=Path, default=DATA, help="folder of BraTS case folders")
    parser.add_argument("--device", default="auto", help="training and segmentation device (auto, cpu, cuda)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak (H100/H200 SXM: 989)")
    parser.add_argument("--out", type=Path, default=Path("runs/brats"))
    parser.add_argument("--plot", type=Path, nargs="+", help="result folders to plot instead of training")
    parser.add_argument("--model", type=Path, default=None, metavar="DIR",
                        help="segment the unseen cases with this model (a run's out/model) instead of training one")
    parser.add_argument("--figure", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "brats_dice_vs_time.png")
    args = parser.parse_args()
    if args.plot:
        plot(args.plot, args.figure)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    from dataclasses import fields

    from napari_ssl.training.finetune import FinetuneConfig

    overrides = {}
    allowed = {f.name for f in fields(FinetuneConfig)} - {"images", "labels", "classes", "out", "minutes", "seed",
                                                          "device", "pairs", "val_pairs"}  # set by this benchmark
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            parser.error(f"--set {item}: expected KEY=JSON with KEY one of {', '.join(sorted(allowed))}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            parser.error(f"--set {item}: {value!r} is not JSON (strings need quotes: 'backbone=\"small\"')")
    if "normalization" in overrides:  # e.g. 'normalization={"mode": "zscore_nonzero"}'
        from napari_ssl.preprocess import Normalization

        overrides["normalization"] = Normalization.from_dict(overrides["normalization"])
    if "spacing" in overrides:
        sp = overrides["spacing"]
        overrides["spacing"] = tuple(sp) if isinstance(sp, list) else (float(sp),) * 3
    minutes = None if args.model else args.minutes or None  # --model trains nothing
    run(args.cases, minutes, args.out, args.seed, args.modality, args.data, args.device, args.peak_tflops,
        overrides, args.classes, args.every_nth_slice, args.model)


if __name__ == "__main__":
    main()
