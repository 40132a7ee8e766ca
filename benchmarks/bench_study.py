"""The label-efficiency study end to end: pretrain each pretext on unlabelled scans, then fine-tune from scratch
and from each checkpoint at the same budget and recipe, and test on held-out cases (``napari-ssl evaluate``).

**brats** (default): pretraining data are the shared brain MR used as unlabelled: the 4 modalities of the BraTS
cases that are not test cases (their labels are never read by pretraining), the MS brains (FLAIR, T1), IXI (T1,
T2), the MNI T1 template and the anisotropic brain_tumor image. The BraTS cases sorted by name: the last three are
the test cases (as in bench_brats.py), the others the labelled pool; whole tumour (1+2+4) on FLAIR.

**liver** (option): pretraining on ct_unlabeled and the mr_organs image; the labelled CT (ct_organs) is split into
slabs of slices like bench_liver.py: the last quarter is the test slab, the rest is cut into ``--slabs`` slabs that
play the training cases, and ``--fractions`` of them are labelled.

    python benchmarks/bench_study.py --pretexts rubik context planes rubik,context,planes --pretrain-minutes 5 \\
        --minutes 3 --n-labelled 1 --seeds 0 1 2 --threads 1 --out runs/study_brats --docs docs/study_brats

Writes ``<out>/study.json`` (timings, the pretext scores of each checkpoint on the test scans, the summary) beside
evaluate's tables and plot; ``--docs PREFIX`` copies the table (``PREFIX.md``) and the plot (``PREFIX.png``).
Existing checkpoints in ``<out>`` are reused (``--fresh`` retrains them).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TITLES = {"brats": "BraTS whole tumour (FLAIR), 3 unseen test cases: fine-tuning from scratch vs from each pretext",
          "liver": "Liver (CT slab split): fine-tuning from scratch vs from each pretext"}


def brain_data() -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """(unlabelled scans, labelled pool, test cases) of the BraTS study."""
    cases = sorted(p for p in (DATA / "brats").iterdir() if p.is_dir())
    pool, test = cases[:-3], cases[-3:]
    unlabelled = [str(c / f"{m}.nii.gz") for c in pool for m in ("t1", "t1ce", "t2", "flair")]
    unlabelled += [str(p) for p in sorted((DATA / "ms_lesions").glob("patient*/*.nii.gz")) if p.stem != "lesions.nii"]
    unlabelled += [str(DATA / "brain_unlabeled" / "IXI002" / f"{m}.nii.gz") for m in ("t1", "t2")]
    unlabelled += [str(DATA / "mni152" / "t1.nii.gz"), str(DATA / "brain_tumor" / "image.nrrd")]
    pair = [(str(c / "flair.nii.gz"), str(c / "seg.nii.gz")) for c in pool]
    return unlabelled, pair, [(str(c / "flair.nii.gz"), str(c / "seg.nii.gz")) for c in test]


def liver_data(out: Path, slabs: int) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """(unlabelled scans, training slabs, test slab) of the liver study; the slabs are written to ``out``."""
    import numpy as np

    from napari_ssl import io
    from napari_ssl.classes import parse_classes, read_class_names, remap_labels

    ct, lab = io.read(DATA / "ct_organs" / "ct.nii.gz"), io.read(DATA / "ct_organs" / "labels.nii.gz")
    liver = parse_classes("liver", read_class_names(DATA / "ct_organs" / "classes.json"))
    mask = remap_labels(lab.array, liver).astype(np.uint8)
    depth = ct.array.shape[0]
    cut = round(depth * 0.75)
    out.mkdir(parents=True, exist_ok=True)

    def write(name: str, lo: int, hi: int) -> tuple[str, str]:
        # a sub-volume keeps the scan's geometry: its origin is the world position of voxel (lo, 0, 0)
        sub = ct.with_array(np.ascontiguousarray(ct.array[lo:hi]),
                            origin=tuple(float(v) for v in ct.index_to_world([lo, 0, 0])))
        sub_lab = sub.with_array(mask[lo:hi])
        return str(io.write(sub, out / f"{name}_ct.nii.gz")), str(io.write(sub_lab, out / f"{name}_labels.nii.gz"))

    edges = np.linspace(0, cut, slabs + 1).round().astype(int)
    train = [write(f"slab{i}", int(a), int(b)) for i, (a, b) in enumerate(itertools.pairwise(edges))]
    unlabelled = [str(DATA / "ct_unlabeled" / "ct_thorax_abdomen.nii.gz"), str(DATA / "mr_organs" / "mr.nii.gz")]
    return unlabelled, train, [write("test", cut, depth)]


def pretrain_all(pretexts: list[str], data: list[str], out: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Pretrain each pretext (comma-joined names: one combined run) for ``--pretrain-minutes`` (or
    ``--pretrain-steps``, which a loaded machine does not change); reuses checkpoints."""
    from napari_ssl import checkpoint
    from napari_ssl.training.pretrain import PretrainConfig, pretrain

    info = {}
    for spec in pretexts:
        name = "all" if len(spec.split(",")) > 2 else spec.replace(",", "+")
        path = out / f"pre_{name}"
        t0 = time.perf_counter()
        if not args.report_only and (args.fresh or not (path / "meta.json").exists()):
            if path.exists():
                shutil.rmtree(path)
            config = PretrainConfig(pretexts=tuple(spec.split(",")), data=tuple(data), out=str(path), steps=args.pretrain_steps or 10**6,
                                    minutes=None if args.pretrain_steps else args.pretrain_minutes, device=args.device, num_threads=args.threads,
                                    save_every=0, seed=0)
            for _ in pretrain(config):
                pass
            print(f"pretrained {name}: {time.perf_counter() - t0:.0f} s", flush=True)
        meta = checkpoint.open_checkpoint(path)
        info[name] = {"path": str(path), "step": meta.step, "seconds": round(time.perf_counter() - t0, 1),
                      "metrics": dict(meta.metrics)}
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("brats", "liver"), default="brats")
    parser.add_argument("--pretexts", nargs="+", default=["rubik", "context", "planes", "rubik,context,planes"],
                        help="pretexts to compare, each a name or comma-joined names (one combined run)")
    parser.add_argument("--pretrain-minutes", type=float, default=5.0)
    parser.add_argument("--pretrain-steps", type=int, help="pretraining steps instead of minutes")
    parser.add_argument("--minutes", type=float, default=3.0, help="fine-tuning minutes of every run (0: none, give --steps)")
    parser.add_argument("--steps", type=int, help="fine-tuning steps of every run (with or instead of --minutes)")
    parser.add_argument("--n-labelled", type=int, nargs="+", default=[1], help="labelled cases (brats)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="labelled slabs (liver)")
    parser.add_argument("--slabs", type=int, default=4, help="training slabs of the liver CT")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--patch-size", type=int, nargs="+", default=[64])
    parser.add_argument("--transfer", default="auto", choices=("auto", "encoder", "encoder+decoder"))
    parser.add_argument("--pretrained-lr-scale", type=float, default=1.0)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fresh", action="store_true", help="retrain existing pretraining checkpoints")
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    parser.add_argument("--report-only", action="store_true",
                        help="no training: read <out>/study/runs.csv and the checkpoints, write study.json and --docs")
    parser.add_argument("--docs", type=Path, help="write PREFIX.md and PREFIX.png (e.g. docs/study_brats)")
    args = parser.parse_args()

    from napari_ssl.study.evaluate import EvaluateConfig, evaluate, markdown, plot, summarize
    from napari_ssl.study.score import score

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.variant == "brats":
        unlabelled, pool, test = brain_data()
        classes, classes_file, labels_cfg = "whole_tumor=1+2+4", None, {"n_labelled": tuple(args.n_labelled)}
    else:
        unlabelled, pool, test = liver_data(args.out / "slabs", args.slabs)
        classes, classes_file, labels_cfg = "1", None, {"fractions": tuple(args.fractions)}
    pre = pretrain_all(args.pretexts, unlabelled, args.out, args)
    scores = {}
    for name, item in pre.items():
        try:
            scores[name] = score(item["path"], [p for p, _ in test], device=args.device)
        except ValueError as exc:
            scores[name] = {"error": str(exc)}
    t_study = time.perf_counter()
    config = EvaluateConfig(
        images=tuple(p for p, _ in pool), labels=tuple(lab for _, lab in pool), classes=classes,
        classes_file=classes_file, out=str(args.out / "study"),
        pretrained=tuple(f"{name}={item['path']}" for name, item in pre.items()),
        test_images=tuple(p for p, _ in test), test_labels=tuple(lab for _, lab in test), seeds=tuple(args.seeds),
        steps=args.steps, minutes=args.minutes or None, patch_size=args.patch_size, lr=args.lr, warmup=args.warmup,
        transfer=args.transfer, pretrained_lr_scale=args.pretrained_lr_scale, device=args.device,
        num_threads=args.threads, **labels_cfg,
    )
    if args.report_only:
        import csv

        rows = list(csv.DictReader((args.out / "study" / "runs.csv").read_text().splitlines()))
    else:
        rows = evaluate(config, log=lambda line: print(line, flush=True))
    plot(rows, args.out / "study" / "dice_vs_labelled.png", title=TITLES[args.variant])
    result = {"variant": args.variant, "args": {k: str(v) for k, v in vars(args).items()},
              "unlabelled_scans": len(unlabelled), "pretraining": pre, "scores_on_test": scores,
              "study_s": round(time.perf_counter() - t_study, 1), "total_s": round(time.perf_counter() - t0, 1),
              "summary": summarize(rows)}
    (args.out / "study.json").write_text(json.dumps(result, indent=1))
    print(markdown(rows))
    if args.docs:
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.out / "study" / "dice_vs_labelled.png", args.docs.with_suffix(".png"))
        args.docs.with_suffix(".md").write_text(markdown(rows), encoding="utf-8")


if __name__ == "__main__":
    main()
