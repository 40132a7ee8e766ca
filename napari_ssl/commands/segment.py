"""Segment a scan with a fine-tuned model and write the mask with the scan's geometry.

Example::

    napari-ssl segment --model runs/organs --input ct.nii.gz --output ct_masks.nii.gz
    napari-ssl segment --model phantom-demo --input phantom.nii.gz --output phantom_masks.nii.gz

``--model`` takes a napari-ssl checkpoint folder, another tool's model
(:mod:`napari_ssl.inference.segmenter`) or a bundled model's name (``phantom-demo``: the demonstration model for the
sample head phantom, :mod:`napari_ssl.inference.bundled`). Before segmenting, the scan is compared with the model's training
data (:mod:`napari_ssl.inference.scan_check`); a mismatch (a CT given to an MR model, voxels 3x coarser) is one warning line
on stderr, and the run goes on.

The mask (uint8 label values, classes in the model's ``meta.json``) lies on the scan's own grid, so it
opens aligned with the scan in any viewer. ``--input`` may be a DICOM folder; a multi-channel model takes
one file per channel, joined by commas. A model of several channels trained with modality dropout (the default for
several) segments as a modality ensemble: each window also with each channel blanked in turn, keeping what any of
these finds (``--no-modality-ensemble``: the channels as they are only, a fifth of the time for four).

An nnU-Net v2 results folder (``dataset.json``, ``plans.json``, ``fold_N/checkpoint_final.pth``) runs through
nnU-Net's own predictor on the scan as its file stores it (no reorientation, as in nnU-Net); its checkpoints are
pickles, so it opens only with ``--trust``. ``--folds`` picks folds, ``--mirror`` turns on test-time mirroring::

    napari-ssl segment --model Dataset501_Organs/nnUNetTrainer__nnUNetPlans__3d_fullres --trust \
        --input ct.nii.gz --output ct_masks.nii.gz
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR|NAME",
                        help="fine-tuned checkpoint folder, an nnU-Net v2 results folder (with --trust), or a bundled "
                             "model's name (phantom-demo)")
    parser.add_argument("--input", required=True, metavar="SCAN_OR_DICOM_DIR",
                        help="the scan (file or DICOM folder); channels of a multi-channel model joined by commas")
    parser.add_argument("--output", required=True, metavar="MASK.nii.gz", help="mask file (.nii.gz, .nii, .nrrd, .mha)")
    parser.add_argument("--overlap", type=float, default=0.5, metavar="F", help="sliding-window overlap (default 0.5)")
    parser.add_argument("--sw-batch-size", type=int, default=1, metavar="N", help="windows per forward pass")
    parser.add_argument("--device", default="auto", metavar="DEV", help="where windows run: auto, cpu, cuda, mps")
    parser.add_argument("--largest-component", action="store_true", help="keep each class's largest component only")
    parser.add_argument("--modality-ensemble", action=argparse.BooleanOptionalAction, default=None,
                        help="models of several channels: also segment with each channel blanked in turn and keep "
                             "what any finds, so a structure one modality hides is found from the others (default: "
                             "on for a model trained with modality dropout; costs about channels + 1 times the time)")
    parser.add_argument("--max-memory-mb", type=float, default=1024, metavar="MB",
                        help="bound on stitched logits per pass; larger scans go in slabs (default 1024)")
    parser.add_argument("--trust", action="store_true",
                        help="open a model whose loading runs code stored with it (nnU-Net pickles, MONAI bundle "
                             "config expressions); only for models from a source you trust")
    parser.add_argument("--folds", default=None, metavar="0,1,...",
                        help="nnU-Net models: the folds to average (default: every trained fold)")
    parser.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None,
                        help="nnU-Net models: test-time mirroring, as nnU-Net does by default; off on a CPU by "
                             "default, where it costs up to 8x the time of a 3D model (default: on a GPU only)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="nnU-Net models: CPU threads while segmenting (default: torch's, the CPU cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def run(args: argparse.Namespace) -> int:
    from napari_ssl import io
    from napari_ssl.inference.scan_check import check_scan, summarize_scan
    from napari_ssl.inference.segmenter import (
        SegmentProgress,
        SegmentResult,
        describe_segmenter,
        open_segmenter,
        predict_iter,
    )
    from napari_ssl.io import WRITE_SUFFIXES, scan_suffix

    if scan_suffix(args.output) not in WRITE_SUFFIXES:
        raise ValueError(f"--output must end in one of {', '.join(WRITE_SUFFIXES)}, got {args.output}")
    info = describe_segmenter(args.model)  # a folder of no known format is refused before any scan is read
    channels = [io.read(p.strip()) for p in args.input.split(",") if p.strip()]
    if not channels:
        raise ValueError("--input names no scan")
    check = check_scan(info.fingerprint(), summarize_scan(channels))
    if check.error:
        raise ValueError(check.error)
    if check.warning:
        print(f"napari-ssl segment: warning: {check.warning}", file=sys.stderr, flush=True)
    nnunet = {k: v for k, v in (("folds", args.folds), ("mirroring", args.mirror), ("threads", args.threads))
              if v is not None}
    model = open_segmenter(info, device=args.device, trust=args.trust, **nnunet)
    result = None
    shown = -1
    options = {} if args.modality_ensemble is None else {"modality_ensemble": args.modality_ensemble}
    for event in predict_iter(model, channels, overlap=args.overlap, sw_batch_size=args.sw_batch_size,
                              largest_component=args.largest_component, max_memory_mb=args.max_memory_mb, **options):
        if isinstance(event, SegmentProgress) and not args.quiet:
            pct = int(event.fraction * 100)
            if pct // 10 != shown:
                shown = pct // 10
                print(f"\rsegmenting {pct:3d}%", end="", file=sys.stderr, flush=True)
        elif isinstance(event, SegmentResult):
            result = event
    if not args.quiet:
        print(file=sys.stderr)
    assert result is not None
    path = io.write(result.labels, args.output)
    counts = {name: int((result.labels.array == value).sum()) for value, name in result.names.items() if value}
    found = ", ".join(f"{n} {c} voxels" for n, c in counts.items())
    print(f"napari-ssl segment: wrote {path} ({found})")
    return 0
