"""Fine-tune a segmenter on labelled scans from a pretrained encoder (or from scratch), with a progress bar.

Examples::

    napari-ssl finetune --pretrained none --cases brats/ --out runs/brats
    napari-ssl finetune --pretrained runs/ssl --images ct.nii.gz --labels labels.nii.gz \\
        --classes liver,spleen --classes-file classes.json --out runs/organs --steps 2000
    napari-ssl finetune --pretrained none --images c1/flair.nii.gz,c1/t1ce.nii.gz ... --labels c1/seg.nii.gz ... \\
        --classes whole_tumor=1+2+4,tumor_core=1+4,enhancing=4 --out runs/brats
    napari-ssl finetune --from runs/organs --images new.nii.gz --labels new_labels.nii.gz --out runs/organs-v2 --steps 200

``--cases DIR`` takes a folder of case folders (BraTS: ``<case>/{flair,t1,t1ce,t2,seg}.nii.gz``), one case folder,
or a flat folder of ``<case>_<modality>`` files: every modality becomes an input channel, in one order (flair, t1,
t1ce, t2), each normalised on its own; the classes default to those of the first case's labels (whole tumour for
BraTS-like labels), printed at the start with the cases it leaves out. An ``--images`` item may join several files
with commas: the input channels of one case. Ctrl-C saves the checkpoint and exits with a one-line message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from napari_ssl.models.sizes import SIZES
from napari_ssl.preprocess import NORMALIZATION_MODES as NORMALIZATIONS
from napari_ssl.training.config import HOLD_OUT_MIN_CASES, VAL_FRACTION

BACKBONES = tuple(SIZES)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--pretrained", metavar="DIR|none",
                       help="pretraining checkpoint whose encoder starts the segmenter, or 'none' (from scratch)")
    start.add_argument("--from", dest="from_model", metavar="MODEL",
                       help="continue this segmenter (its weights, plan, classes and channels) as a new version in --out")
    parser.add_argument("--cases", metavar="DIR",
                        help="a folder of case folders (or one case folder, or <case>_<modality> files): every "
                             "modality an input channel, the seg / label / mask file its labels")
    parser.add_argument("--images", nargs="+", metavar="P",
                        help="scans (files or DICOM folders); 'a.nii.gz,b.nii.gz' gives one case with two channels")
    parser.add_argument("--labels", nargs="+", metavar="P", help="label volumes, one per image")
    parser.add_argument("--classes", metavar="NAMES_OR_IDS",
                        help="comma-separated ids, names (with --classes-file) or groups NAME=ID+ID "
                             "(default with --cases: those of the first case's labels; with --from: the model's)")
    parser.add_argument("--classes-file", metavar="F", help="JSON naming the label ids, e.g. {\"5\": \"liver\"}")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="checkpoint folder of the segmenter (with --from: a new folder, the previous version is kept)")
    plan = parser.add_argument_group("plan overrides (default: derived from the data, printed at the start)")
    plan.add_argument("--steps", type=int, metavar="N", help="optimisation steps (default: the plan's)")
    plan.add_argument("--minutes", type=float, metavar="M",
                      help="stop after M minutes of training, saving as at the end (--steps still applies)")
    plan.add_argument("--backbone", choices=BACKBONES, help="network size from scratch (default: the device's)")
    plan.add_argument("--patch-size", type=int, nargs="+", metavar="P",
                      help="patch edge, or 3 edges z y x (multiples of 16)")
    plan.add_argument("--batch-size", type=int, metavar="B", help="patches per step (default 2)")
    plan.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), help="train at this voxel size (mm)")
    plan.add_argument("--normalization", choices=[m for m in NORMALIZATIONS if m != "ct_zscore"],
                      help="intensity normalisation (default: ct_zscore on CT, zscore_nonzero on MR)")
    plan.add_argument("--window", type=float, nargs=2, metavar=("LOW", "HIGH"), help="CT window in HU (with ct)")
    parser.add_argument("--label-fraction", type=float, default=1.0, metavar="F", help="fraction of labelled cases used")
    parser.add_argument("--n-labelled", type=int, metavar="N", help="number of labelled cases used")
    parser.add_argument("--annotated", choices=("all", "slices"), default="all",
                        help="slices: only slices holding a painted label are labelled, the rest are ignored by the loss "
                             "(paint every 5th slice); all (default): every 0 is background")
    parser.add_argument("--partial", dest="annotated", action="store_const", const="slices",
                        help="the same as --annotated slices")
    parser.add_argument("--ignore-label", type=int, metavar="V",
                        help="label value meaning 'unlabelled' (nnU-Net's ignore label): its voxels are skipped")
    parser.add_argument("--val-fraction", type=float, default=None, metavar="F",
                        help="cases held out for the validation Dice and the best weights (one case: its last slices); "
                             f"default: {VAL_FRACTION:g} with {HOLD_OUT_MIN_CASES} or more cases, else 0 (every case "
                             "trains, the last weights kept)")
    parser.add_argument("--val-cases", metavar="DIR", help="explicit held-out cases, a folder as --cases")
    parser.add_argument("--val-images", nargs="+", default=(), metavar="P", help="explicit held-out scans")
    parser.add_argument("--val-labels", nargs="+", default=(), metavar="P", help="their label volumes")
    parser.add_argument("--val-every", type=int, default=0, metavar="N",
                        help="validate every N steps (default: eight times over the budget)")
    parser.add_argument("--keep", choices=("best", "last"), default="best",
                        help="weights saved: the best held-out Dice of the run's validations (default) or the last "
                             "(nnU-Net's final checkpoint)")
    parser.add_argument("--lr", type=float, default=3e-3, metavar="LR", help="AdamW learning rate (default 3e-3)")
    parser.add_argument("--no-augment", action="store_true", help="no spatial / intensity augmentation")
    parser.add_argument("--channel-dropout", type=float, metavar="P",
                        help="with several input channels, the share of patches with one channel blanked (modality "
                             "dropout; default 0.3 with several channels, 0 with one)")
    parser.add_argument("--mirror", choices=("auto", "on", "off"), default="auto",
                        help="random flips (auto: on for lesions and unnamed classes, off for left/right and named anatomy)")
    parser.add_argument("--transfer", choices=("auto", "encoder", "encoder+decoder"), default="auto",
                        help="pretrained parts to load (auto: the decoder too when a pretext trained one that transfers, e.g. Models Genesis)")
    parser.add_argument("--pretrained-lr-scale", type=float, default=1.0, metavar="F",
                        help="learning-rate factor of the pretrained layers (default 1)")
    parser.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--no-amp", action="store_true",
                        help="train in float32 (default: bfloat16 mixed precision on CUDA and on CPUs that compute it)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads (default: every core)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, only the final line")


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"napari-ssl finetune: {text}", flush=True)


def resolve_cases(args: argparse.Namespace) -> None:
    """``--cases`` / ``--val-cases`` -> ``images`` and ``labels`` (and the default classes), in place; a refused
    combination of flags is one sentence. Prints what it found and one line each case it leaves out."""
    from napari_ssl.training.cases import file_classes, find_cases

    if args.cases and (args.images or args.labels):
        raise ValueError("give either --cases DIR or --images and --labels, not both")
    if args.val_cases and (args.val_images or args.val_labels):
        raise ValueError("give either --val-cases DIR or --val-images and --val-labels, not both")
    if not args.cases and not args.images and not args.labels:
        raise ValueError("give the training data: --cases DIR (a folder of case folders), or --images and --labels")
    if not args.cases and not (args.images and args.labels):
        raise ValueError(f"--{'images' if args.labels else 'labels'} is missing: give one label volume per image, "
                         "or a folder of cases with --cases DIR")
    args.images, args.labels = tuple(args.images or ()), tuple(args.labels or ())
    found = {}
    for flag, where in (("cases", args.cases), ("val_cases", args.val_cases)):
        if not where:
            continue
        found[flag] = cases = find_cases(where)
        _say(args, f"{'held-out ' if flag == 'val_cases' else ''}{cases.describe()} in {cases.folder}")
        for name, why in cases.skipped:
            print(f"napari-ssl finetune: skipped case {name}: {why}", file=sys.stderr, flush=True)
        if cases.ignored:
            names = ", ".join(f"{Path(p).parent.name}/{Path(p).name}" for p in cases.ignored)
            _say(args, f"not used (only some cases have them): {names}")
    if "cases" in found:
        args.images, args.labels = found["cases"].images, found["cases"].labels
    if "val_cases" in found:
        val = found["val_cases"]
        if "cases" in found and val.channels != found["cases"].channels:
            raise ValueError(f"the held-out cases' channels ({', '.join(val.channels)}) are not those of the training "
                             f"cases ({', '.join(found['cases'].channels)})")
        args.val_images, args.val_labels = val.images, val.labels
    if "cases" in found and not args.classes and not args.from_model:
        first = found["cases"].cases[0]
        args.classes = ",".join(file_classes(first.labels))
        _say(args, f"classes {args.classes} (those of {first.name}'s labels; --classes to choose others)")


def build_config(args: argparse.Namespace) -> Any:
    from napari_ssl.preprocess import Normalization
    from napari_ssl.training.finetune import FinetuneConfig

    resolve_cases(args)
    for path in [p for item in [*args.images, *args.val_images] for p in item.split(",") if p] + [
            *args.labels, *args.val_labels]:
        if not Path(path).expanduser().exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
    if not args.classes and not args.from_model:
        raise ValueError("give the classes to train (--classes), e.g. --classes 1 or --classes liver,spleen")
    norm = None
    if args.normalization or args.window:
        norm = Normalization(mode=args.normalization or "ct", **({"window": tuple(args.window)} if args.window else {}))
    return FinetuneConfig(
        images=tuple(args.images), labels=tuple(args.labels), classes=args.classes or (), classes_file=args.classes_file,
        pretrained=args.pretrained, from_model=args.from_model, out=args.out, steps=args.steps, minutes=args.minutes, batch_size=args.batch_size,
        patch_size=args.patch_size, backbone=args.backbone, device=args.device, seed=args.seed, lr=args.lr,
        spacing=tuple(args.spacing) if args.spacing else None, normalization=norm,
        label_fraction=args.label_fraction, n_labelled=args.n_labelled, val_fraction=args.val_fraction,
        val_images=tuple(args.val_images), val_labels=tuple(args.val_labels), val_every=args.val_every,
        transfer=args.transfer, num_threads=args.threads, augment=not args.no_augment,
        mirror={"auto": None, "on": True, "off": False}[args.mirror], pretrained_lr_scale=args.pretrained_lr_scale,
        amp=not args.no_amp, annotated=args.annotated, ignore_label=args.ignore_label,
        channel_dropout=args.channel_dropout, keep=args.keep,
    )


def run(args: argparse.Namespace) -> int:
    from napari_ssl import checkpoint, events
    from napari_ssl.commands.pretrain import ProgressBar
    from napari_ssl.training.finetune import Validated, finetune

    config = build_config(args)
    bar = ProgressBar(sys.stderr)
    gen = finetune(config)
    try:
        for event in gen:
            if isinstance(event, events.Finished):
                dice = ", ".join(f"{k.split('/', 1)[1]} {v:.3f}" for k, v in event.metrics.items() if k.startswith("dice/"))
                print(f"napari-ssl finetune: finished step {event.step}; checkpoint {event.path}"
                      + (f"; validation Dice: {dice}" if dice else ""))
            elif args.quiet:
                continue
            elif isinstance(event, events.Started):
                if event.plan_text:
                    bar.message(event.plan_text)
                bar.message(f"napari-ssl finetune: {events.describe(event)}")
            elif isinstance(event, events.Progress):
                bar.update(event)
            elif isinstance(event, Validated):
                bar.message(f"step {event.step}: validation Dice "
                            + ", ".join(f"{k} {v:.3f}" for k, v in event.dice.items()))
    except KeyboardInterrupt:
        gen.close()
        try:
            where = f"checkpoint at step {checkpoint.open_checkpoint(config.out).step} saved in {config.out}"
        except (OSError, ValueError):
            where = "no checkpoint saved (interrupted before the first step)"
        print(f"napari-ssl finetune: interrupted; {where}", file=sys.stderr)
        return 130
    return 0
