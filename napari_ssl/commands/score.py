"""Score a pretraining checkpoint on held-out scans: one JSON object of pretext metrics on stdout.

Example::

    napari-ssl score --model runs/ssl --data ../shared/data/brats/Brats18_TCIA10_639_1/flair.nii.gz

Keys: ``rubik/perm_top1``, ``rubik/rot_acc``, ``context/psnr_gain`` (dB over the corrupted input),
``planes/angle_error_deg``, ``planes/position_mae``, and the other metrics of the checkpoint's pretexts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="pretraining checkpoint folder")
    parser.add_argument("--data", nargs="+", required=True, metavar="PATH", help="held-out scans or folders")
    parser.add_argument("--samples", type=int, default=32, metavar="N", help="pretext samples to average (default 32)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the samples (default 0)")
    parser.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda, mps")


def run(args: argparse.Namespace) -> int:
    from napari_ssl.study.score import score

    for path in args.data:
        if not Path(path).expanduser().exists():
            raise FileNotFoundError(f"--data {path}: no such file or directory")
    result = score(args.model, args.data, samples=args.samples, seed=args.seed, device=args.device)
    print(json.dumps({k: round(v, 6) for k, v in result.items()}))
    return 0
