"""Label-efficiency study: fine-tune from scratch and from pretrained checkpoints at several numbers of labelled
cases and seeds (same budget and recipe), and score on held-out test cases.

Example (BraTS whole tumour on FLAIR, three test cases, 1 and 3 labelled cases, 3 seeds, 3 minutes a run)::

    napari-ssl evaluate --pretrained context=runs/ctx rubik=runs/rubik --images c1/flair.nii.gz ... \\
        --labels c1/seg.nii.gz ... --test-images t1/flair.nii.gz ... --test-labels t1/seg.nii.gz ... \\
        --classes whole_tumor=1+2+4 --n-labelled 1 3 --seeds 0 1 2 --minutes 3 --out study/

Writes ``runs.csv``, ``summary.csv``, ``summary.md`` (mean +- sd Dice per class and the paired gain over
scratch), ``gains.csv`` and ``dice_vs_labelled.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pretrained", nargs="*", default=[], metavar="[NAME=]DIR",
                        help="pretrained checkpoints to compare (NAME= names the method in the tables)")
    parser.add_argument("--no-scratch", action="store_true", help="leave out the from-scratch baseline")
    parser.add_argument("--images", nargs="+", required=True, metavar="P", help="training scans ('a,b': channels)")
    parser.add_argument("--labels", nargs="+", required=True, metavar="P", help="label volumes, one per image")
    parser.add_argument("--test-images", nargs="*", default=[], metavar="P", help="test scans (default: hold out some)")
    parser.add_argument("--test-labels", nargs="*", default=[], metavar="P", help="their label volumes")
    parser.add_argument("--test-fraction", type=float, default=0.25, metavar="F", help="cases held out for testing")
    parser.add_argument("--classes", required=True, metavar="NAMES_OR_IDS", help="ids, names or NAME=ID+ID groups")
    parser.add_argument("--classes-file", metavar="F", help="JSON naming the label ids")
    parser.add_argument("--fractions", type=float, nargs="+", default=[], metavar="F",
                        help="labelled fractions of the training cases (default 0.25 0.5 1 without --n-labelled)")
    parser.add_argument("--n-labelled", type=int, nargs="+", default=[], metavar="N",
                        help="numbers of labelled training cases (e.g. 1 3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], metavar="S", help="seeds (default 0 1)")
    parser.add_argument("--steps", type=int, metavar="N", help="fine-tuning steps of every run (default 200)")
    parser.add_argument("--minutes", type=float, metavar="M", help="fine-tuning minutes of every run")
    parser.add_argument("--batch-size", type=int, default=2, metavar="B")
    parser.add_argument("--patch-size", type=int, nargs="+", metavar="P", help="patch edge(s), multiples of 16")
    parser.add_argument("--backbone", choices=("tiny", "small", "medium", "large"),
                        help="network size (default: the pretrained checkpoints')")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), help="voxel size to train at (mm)")
    parser.add_argument("--normalization", choices=("zscore", "ct", "minmax", "none"), help="intensity normalisation")
    parser.add_argument("--lr", type=float, default=3e-3, metavar="LR")
    parser.add_argument("--warmup", type=int, default=20, metavar="N", help="steps of linear lr warm-up (default 20)")
    parser.add_argument("--transfer", choices=("auto", "encoder", "encoder+decoder"), default="auto",
                        help="pretrained parts loaded (auto: the decoder too when a pretext trained one that transfers, e.g. Models Genesis)")
    parser.add_argument("--pretrained-lr-scale", type=float, default=1.0, metavar="F",
                        help="learning-rate factor of the pretrained layers (default 1)")
    parser.add_argument("--device", default="auto", metavar="DEV")
    parser.add_argument("--threads", type=int, default=0, metavar="N")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the tables, plot and runs")


def run(args: argparse.Namespace) -> int:
    from napari_ssl.study.evaluate import EvaluateConfig, evaluate, split_method
    from napari_ssl.training.data import Normalization

    for path in [p for item in [*args.images, *args.test_images] for p in item.split(",") if p] + [
        *args.labels, *args.test_labels, *[split_method(p)[1] for p in args.pretrained]
    ]:
        if not Path(path).expanduser().exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
    config = EvaluateConfig(
        images=tuple(args.images), labels=tuple(args.labels), classes=args.classes, out=args.out,
        pretrained=tuple(args.pretrained), scratch=not args.no_scratch, test_images=tuple(args.test_images),
        test_labels=tuple(args.test_labels), test_fraction=args.test_fraction, classes_file=args.classes_file,
        fractions=tuple(args.fractions), n_labelled=tuple(args.n_labelled), seeds=tuple(args.seeds),
        steps=args.steps, minutes=args.minutes, batch_size=args.batch_size, patch_size=args.patch_size,
        backbone=args.backbone, spacing=tuple(args.spacing) if args.spacing else None,
        normalization=Normalization(mode=args.normalization) if args.normalization else None, lr=args.lr,
        warmup=args.warmup, transfer=args.transfer, pretrained_lr_scale=args.pretrained_lr_scale,
        device=args.device, num_threads=args.threads,
    )
    evaluate(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    out = Path(args.out)
    print((out / "summary.md").read_text(encoding="utf-8"), end="")
    print(f"napari-ssl evaluate: tables and plot in {out}")
    return 0
